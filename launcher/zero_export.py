"""`launch-zero-to-fp32 RUN_DIR|CHECKPOINT [OUT_DIR]`: a ZeRO checkpoint as a model that loads without DeepSpeed.

A ZeRO checkpoint (checkpoints/checkpoint-N/global_stepN/) holds each rank's shard of the fp32 master weights
and optimizer states. DeepSpeed's zero_to_fp32 merges the shards; this adds the model config and tokenizer
from the checkpoint, so OUT_DIR loads with AutoModelForCausalLM.from_pretrained. final/ needs none of this:
it is saved with the 16-bit weights gathered (ZeRO-3) or whole (ZeRO-0/2).
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

#: files of a Trainer checkpoint that are not part of a loadable model directory
NOT_MODEL_FILES = re.compile(r"(model.*\.safetensors.*|pytorch_model.*|.*\.pth?|training_args\.bin|trainer_state\.json|"
                             r"latest|zero_to_.*\.py|launcher_complete\.json)")


def find_checkpoint(path: Path) -> Path:
    """A ZeRO checkpoint dir (it holds `latest`), or a run dir's last complete one."""
    from launcher.checkpoints import complete_checkpoints

    if (path / "latest").is_file():
        return path
    found = [p for p in complete_checkpoints(path / "checkpoints") if (p / "latest").is_file()]
    if not found:
        raise SystemExit(f"launch-zero-to-fp32: no complete ZeRO checkpoint (a checkpoint-N/ with `latest` and "
                         f"launcher_complete.json) in {path}")
    return found[-1]


def export(checkpoint: Path, out: Path) -> Path:
    if (checkpoint / "adapter_config.json").is_file():
        raise SystemExit(f"launch-zero-to-fp32: {checkpoint} holds a LoRA adapter, saved whole "
                         "(adapter_model.safetensors): load it with peft's PeftModel.from_pretrained")
    from deepspeed.utils.zero_to_fp32 import convert_zero_checkpoint_to_fp32_state_dict

    out.mkdir(parents=True, exist_ok=True)
    convert_zero_checkpoint_to_fp32_state_dict(str(checkpoint), str(out), safe_serialization=True)
    for f in checkpoint.iterdir():
        if f.is_file() and not NOT_MODEL_FILES.fullmatch(f.name):
            shutil.copy2(f, out / f.name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launch-zero-to-fp32", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a run dir (its last checkpoint) or a checkpoint-N dir")
    parser.add_argument("out", type=Path, nargs="?", help="default: <checkpoint>-fp32 next to it")
    args = parser.parse_args(argv)
    ckpt = find_checkpoint(args.path)
    out = export(ckpt, args.out or ckpt.with_name(f"{ckpt.name}-fp32"))
    print(f"fp32 weights of {ckpt} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
