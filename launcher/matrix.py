"""The combination matrix: which stage x adapter x zero x precision x data.packing x backend cells are refused,
and why. One table, read by validate (one problem per refused cell), by the tests (every cell composed and
validated; a sample trained for real) and rendered into the README (`python -m launcher.matrix`). Every cell
no refusal covers plans and trains. Pure: no torch.

Checks of a single key (a range, a file) and of keys outside these dimensions (device, gpus, streaming,
gradient checkpointing) live with their keys in launcher/validate/.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

#: the dimensions and their values (zero: the conf/zero options; zero=custom counts as the option its
#: ds config amounts to, see launcher/validate/matrix.py)
DIMENSIONS: dict[str, tuple[Any, ...]] = {
    "stage": ("pt", "sft", "rm", "dpo", "kto", "ppo", "grpo", "rloo"),
    "adapter": ("full", "freeze", "lora", "qlora", "prefix"),
    "zero": ("none", "0", "2", "2_offload", "3", "3_offload"),
    "precision": ("fp32", "fp16", "bf16", "pure_bf16", "auto"),
    "data.packing": (False, True),
    "backend": ("auto", "single", "torchrun", "deepspeed"),
}
ANY_ZERO = ("0", "2", "2_offload", "3", "3_offload")
#: ZeRO stages whose optimizer keeps fp32 master weights (1 and 2 partition them, 3 the weights too)
ZERO_OPTIMIZER = ("2", "2_offload", "3", "3_offload")
ZERO3 = ("3", "3_offload")
NOT_PT_SFT = ("rm", "dpo", "kto", "ppo", "grpo", "rloo")


@dataclass(frozen=True)
class Refusal:
    #: the key the problem names (one of `when`'s)
    key: str
    #: dimension -> the values refused together (a dimension not named: any value)
    when: Mapping[str, tuple[Any, ...]]
    #: why, and the fix; {dimension} placeholders take the cell's values
    reason: str

    def matches(self, cell: Mapping[str, Any]) -> bool:
        return all(cell.get(dim) in values for dim, values in self.when.items())

    def message(self, cell: Mapping[str, Any]) -> str:
        return self.reason.format(**{dim.replace(".", "_"): show(v) for dim, v in cell.items()})


def show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(getattr(value, "value", value))


REFUSALS: tuple[Refusal, ...] = (
    Refusal("backend", {"backend": ("deepspeed",), "zero": ("none",)},
            "the deepspeed launcher runs a ZeRO config: pick zero=0|2|2_offload|3|3_offload (or zero=custom "
            "zero.config=PATH), or backend=torchrun for plain DDP"),
    Refusal("backend", {"backend": ("single",), "zero": ANY_ZERO},
            "zero={zero} needs torch.distributed set up by a launcher; use backend=torchrun or backend=deepspeed "
            "(either runs gpus=1 too), or zero=none"),
    Refusal("adapter", {"adapter": ("prefix",), "stage": ("rm",)},
            "prefix tuning (P-Tuning v2) trains with stage=pt or sft only; stage={stage} (a sequence-classification "
            "head) needs a weight adapter: use adapter=lora (or qlora, freeze, full)"),
    Refusal("adapter", {"adapter": ("prefix",), "stage": ("dpo", "kto", "ppo", "grpo", "rloo")},
            "prefix tuning (P-Tuning v2) trains with stage=pt or sft only; stage={stage} (TRL's reference and "
            "sampling paths) needs a weight adapter: use adapter=lora (or qlora, freeze, full)"),
    Refusal("data.packing", {"data.packing": (True,), "stage": NOT_PT_SFT},
            "packing applies to stage=pt and sft; stage={stage} keeps each row whole: set data.packing=false"),
    Refusal("data.packing", {"data.packing": (True,), "adapter": ("prefix",)},
            "with adapter=prefix the model gets a key/value cache (the prefix), and transformers reads packed rows' "
            "position_ids restarts as example boundaries only without one: packed examples would attend to each "
            "other; set data.packing=false (or use adapter=lora)"),
    Refusal("adapter", {"adapter": ("qlora",), "zero": ZERO3},
            "a bitsandbytes-quantized base cannot train under zero={zero}: each rank loads it onto its GPU with a "
            "device_map, which transformers refuses under ZeRO-3, and 8-bit weights cannot be partitioned (4-bit "
            "with bnb_4bit_quant_storage and no device_map is not supported here); use zero=2 (or 2_offload, 0), "
            "or adapter=lora under zero={zero}"),
    Refusal("precision", {"precision": ("pure_bf16",), "zero": ZERO_OPTIMIZER},
            "DeepSpeed's ZeRO optimizer keeps an fp32 master copy of the weights and fp32 Adam states (and under "
            "ZeRO-3 with the ds config's bf16 off, as pure_bf16 sets it, the weights are partitioned in fp32): "
            "zero={zero} would not train in pure bf16; use precision=bf16 (ZeRO's mixed precision), or zero=0 or "
            "none for pure bf16"),
)


def refusals(cell: Mapping[str, Any]) -> list[Refusal]:
    """The refusals covering a cell (dimension -> value); none: the cell trains."""
    return [r for r in REFUSALS if r.matches(cell)]


def cells() -> Iterator[dict[str, Any]]:
    """Every cell of the matrix."""
    for values in itertools.product(*DIMENSIONS.values()):
        yield dict(zip(DIMENSIONS, values))


def _values(dim: str, values: tuple[Any, ...]) -> str:
    return " ".join(f"`{dim}={show(v)}`" for v in values)


def render_markdown() -> str:
    """The README's table: one row per refusal; every other cell trains."""
    total = sum(1 for _ in cells())
    refused = sum(1 for c in cells() if refusals(c))
    lines = [f"{total} cells ({' x '.join(f'{len(v)} {d}' for d, v in DIMENSIONS.items())}); {refused} are refused "
             f"by validate, the other {total - refused} train. Generated by `python -m launcher.matrix` from "
             "launcher/matrix.py.", "",
             "| refused | because (and the fix) |", "|---|---|"]
    for r in REFUSALS:
        when = "<br>".join(_values(dim, values) for dim, values in r.when.items())
        shown = {d.replace(".", "_"): "/".join(show(v) for v in r.when.get(d, ("…",))) for d in DIMENSIONS}
        lines.append(f"| {when} | {r.reason.format(**shown).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"


def readme_table(text: str) -> str:
    """The part of a README between the matrix markers."""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the combination matrix as markdown, or write it into a "
                                     "README between its matrix markers.")
    parser.add_argument("--readme", type=Path, help="rewrite the table in this file (e.g. README.md)")
    args = parser.parse_args(argv)
    table = render_markdown()
    if args.readme is None:
        sys.stdout.write(table)
        return 0
    text = args.readme.read_text()
    head, rest = text.split(BEGIN, 1)
    args.readme.write_text(f"{head}{BEGIN}\n{table}{END}{rest.split(END, 1)[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
