"""`launch-eval RUN_DIR|MODEL task=NAME[,NAME] [overrides]`: few-shot benchmarks through lm-evaluation-harness.

A shorthand for `launch stage=eval ...`: the same compose -> validate -> plan -> launch, so `gpus=N` evaluates
data-parallel on N ranks (launcher/worker/benchmark.py) and the results land in a run dir of their own
(eval_results.json, summary.json). RUN_DIR: the run's model with its trained adapter (final/, or --checkpoint);
MODEL: a model directory or hub id, optionally with adapter.adapter_name_or_path=DIR. `task`, `task_dir`,
`n_shot`, `limit`, `batch_size`, `log_samples` stand for eval.*; anything else is a `launch` override.

Also the pure helpers of the eval stage (results, table, task data files). No torch import.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

#: bare keys launch-eval reads as eval.<key>
EVAL_SHORTHANDS = ("task", "task_dir", "n_shot", "limit", "batch_size", "log_samples")
#: lm-eval's metrics reported per task and averaged (each with its _stderr)
METRICS = ("acc", "acc_norm")
#: the base-model keys a run's config carries over to its evaluation (what loading the model reads)
MODEL_KEYS = ("model_name_or_path", "template", "trust_remote_code", "attn", "rope_scaling", "rope_factor")
#: adapter_config.json peft_type -> our adapter
PEFT_ADAPTERS = {"LORA": "lora", "PREFIX_TUNING": "prefix"}


def data_files(task_cfg: Mapping[str, Any], yaml_dir: Path) -> dict[str, str]:
    """A local task's data files (dataset_kwargs.data_files: a path, a list or split -> path(s)), relative ones
    resolved against its yaml's directory (lm-eval itself would read them against the working directory)."""
    files = (task_cfg.get("dataset_kwargs") or {}).get("data_files")
    if files is None:
        return {}
    if isinstance(files, (str, list)):
        files = {"train": files}
    out = {}
    for split, paths in files.items():
        for i, p in enumerate(paths if isinstance(paths, list) else [paths]):
            out[f"{split}[{i}]" if isinstance(paths, list) else split] = str(yaml_dir / Path(p).expanduser())
    return out


def with_data_files(task_cfg: dict[str, Any], yaml_dir: Path) -> dict[str, Any]:
    """The task config with its data_files absolute (same shape as written)."""
    files = (task_cfg.get("dataset_kwargs") or {}).get("data_files")
    if files is None:
        return task_cfg
    fix = lambda p: str(yaml_dir / Path(p).expanduser())  # noqa: E731  (an absolute p stays as is)
    fix_any = lambda v: [fix(p) for p in v] if isinstance(v, list) else fix(v)  # noqa: E731
    files = {k: fix_any(v) for k, v in files.items()} if isinstance(files, dict) else fix_any(files)
    return {**task_cfg, "dataset_kwargs": {**task_cfg["dataset_kwargs"], "data_files": files}}


def summarize(results: Mapping[str, Any], leaf_tasks: Sequence[str]) -> dict[str, Any]:
    """lm-eval's simple_evaluate() output -> per task {metric, metric_stderr, n_shot, samples} and the average
    over the tasks weighted by their rows (as MMLU's average is reported), with its pooled stderr."""
    tasks: dict[str, dict[str, Any]] = {}
    for name in leaf_tasks:
        r = results["results"][name]
        row: dict[str, Any] = {"n_shot": results["n-shot"].get(name), "samples": _samples(results, name)}
        for m in METRICS:
            if f"{m},none" in r:
                se = r.get(f"{m}_stderr,none")
                row |= {m: r[f"{m},none"], f"{m}_stderr": se if isinstance(se, (int, float)) else None}
        tasks[name] = row
    average: dict[str, Any] = {"samples": sum(t["samples"] for t in tasks.values())}
    for m in METRICS:
        have = [t for t in tasks.values() if m in t]
        n = sum(t["samples"] for t in have)
        if have and n:
            average[m] = sum(t[m] * t["samples"] for t in have) / n
            ses = [t[f"{m}_stderr"] for t in have]
            average[f"{m}_stderr"] = None if None in ses else \
                math.sqrt(sum((se * t["samples"]) ** 2 for se, t in zip(ses, have))) / n
    return {"tasks": tasks, "average": average}


def _samples(results: Mapping[str, Any], name: str) -> int:
    n = results.get("n-samples", {}).get(name, {})
    return int(n.get("effective", n.get("original", 0))) if isinstance(n, Mapping) else int(n or 0)


def table(summary: Mapping[str, Any]) -> str:
    """The results as a markdown table: one row per task and the average."""
    def cell(row: Mapping[str, Any], m: str) -> str:
        if m not in row:
            return "-"
        se = row.get(f"{m}_stderr")
        return f"{100 * row[m]:.2f}" + (f" ± {100 * se:.2f}" if se is not None else "")

    lines = ["| task | n_shot | samples | acc (%) | acc_norm (%) |", "|---|---|---|---|---|"]
    rows = [(name, row) for name, row in summary["tasks"].items()]
    if len(rows) > 1:
        rows.append(("average", {**summary["average"], "n_shot": ""}))
    for name, row in rows:
        lines.append(f"| {name} | {row.get('n_shot', '')} | {row['samples']} | {cell(row, 'acc')} | "
                     f"{cell(row, 'acc_norm')} |")
    return "\n".join(lines) + "\n"


def run_overrides(cfg: Any, weights: Path) -> list[str]:
    """The `launch` overrides that evaluate a finished run's trained model: its base and adapter, as its own
    loading (launch-chat, launch-export) finds them. LoRA: the adapters it merged first, then final/ (or the
    checkpoint); prefix: final/; full, freeze: final/ is the whole model."""
    from launcher.schema import split_list

    m, a = cfg.model, cfg.adapter
    model = {k: getattr(m, k) for k in MODEL_KEYS if getattr(m, k) is not None}
    name = a.name.value
    out: list[str] = []
    if name in ("full", "freeze"):
        model["model_name_or_path"], name = str(weights), "full"
    else:
        earlier = split_list(a.adapter_name_or_path) if name in ("lora", "qlora") else []
        merged = earlier if a.create_new_adapter else earlier[:-1]
        out.append(f"adapter.adapter_name_or_path='{','.join([*merged, str(weights)])}'")
        if a.quantization_bit is not None:
            out += [f"adapter.quantization_bit={a.quantization_bit}",
                    f"adapter.quantization_type={a.quantization_type.value}"]
    return [f"adapter={name}", *out, *(f"model.{k}={_value(v)}" for k, v in model.items()),
            f"precision={cfg.precision.name.value}"]


def _value(v: Any) -> str:
    v = getattr(v, "value", v)
    return str(v).lower() if isinstance(v, bool) else f"'{v}'" if isinstance(v, str) else str(v)


def launch_args(target: str, rest: Sequence[str], run: Optional[tuple[Any, Path]], adapter_type: Optional[str]
                ) -> list[str]:
    """launch-eval's arguments -> `launch`'s. run: (config, weights) when target is a run dir; adapter_type: the
    peft_type of a given adapter.adapter_name_or_path (MODEL only)."""
    keys = {arg.partition("=")[0].lstrip("+~") for arg in rest}
    rest = [f"eval.{arg}" if arg.partition("=")[0] in EVAL_SHORTHANDS else arg for arg in rest]
    if run is not None:
        cfg, weights = run
        base = [*run_overrides(cfg, weights), f"name={cfg.name}_eval"]
    else:
        adapter = PEFT_ADAPTERS.get(adapter_type or "", "lora") if "adapter.adapter_name_or_path" in keys else "full"
        base = [f"adapter={adapter}", f"model.model_name_or_path='{target}'", f"name={Path(target).name}_eval"]
    # what the user typed wins: a group typed twice is refused by Hydra, so ours is dropped
    base = [b for b in base if b.partition("=")[0] not in keys]
    return ["stage=eval", *base, *rest]


def main(argv: Optional[list[str]] = None) -> None:
    import argparse

    from launcher.exitcodes import EXIT_USAGE
    from launcher.facts import read_adapter_type
    from launcher.inference import RunError, open_run
    from launcher.rundir import RunDir
    from launcher.schema import load_run_config

    parser = argparse.ArgumentParser(prog="launch-eval", description=__doc__.split("\n\n")[0],
                                     epilog="e.g. launch-eval outputs/tiny_sft_lora/2026... task=tiny_mmlu gpus=2 "
                                            "device=cpu")
    parser.add_argument("target", help="a finished run dir, or a model directory / hub id")
    parser.add_argument("--checkpoint", help="RUN_DIR: evaluate checkpoint N (or a checkpoint dir), not final/")
    parser.add_argument("overrides", nargs="*", help="task=NAME[,NAME], n_shot=N, limit=N, and `launch` overrides")
    args = parser.parse_intermixed_args(argv)
    run = None
    try:
        config = RunDir(Path(args.target).expanduser()).config
        if config.is_file():
            if load_run_config(str(config)).stage.name.value == "eval":
                raise RunError(f"{args.target} is a stage=eval run (benchmark results, no model); give the run it "
                               "evaluated, or its model")
            trained = open_run(args.target, args.checkpoint)
            if trained.cfg.stage.name.value == "rm":
                raise RunError(f"{args.target} is a reward model (stage=rm): it scores answers, it does not "
                               "write them; benchmarks need a causal LM run")
            run = (trained.cfg, trained.weights)
        elif args.checkpoint:
            raise RunError(f"--checkpoint needs a run dir; {args.target} is not one (no config.yaml)")
    except RunError as e:
        print(f"launch-eval: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    given = [a.partition("=")[2].strip("'\"").split(",")[-1] for a in args.overrides
             if a.startswith("adapter.adapter_name_or_path=")]
    adapter_type = read_adapter_type(given[-1]) if given and run is None else None
    from launcher import cli

    sys.argv = ["launch", *launch_args(args.target, args.overrides, run, adapter_type)]
    cli.main()


if __name__ == "__main__":
    main()
