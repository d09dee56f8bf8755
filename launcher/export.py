"""`launch-export RUN_DIR`: a run's trained model as a standard Hugging Face model directory.

LoRA/QLoRA: the adapter is merged into its base (loaded unquantized, in export_dtype), after any adapters
the run merged first; full/freeze: the trained model itself, re-saved; prefix (P-Tuning v2): the prefix
cannot be merged, so the peft adapter is saved (PeftModel.from_pretrained(base, EXPORT_DIR) loads it).
The tokenizer goes along. Shards of at most export_size GB (LLaMA-Factory's names).

    launch-export RUN_DIR [--export_dir DIR] [--export_size GB] [--export_dtype auto|fp32|bf16|fp16]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from launcher.exitcodes import EXIT_USAGE
from launcher.inference import RunError, TrainedRun, open_run
from launcher.precision import DTYPE_NAMES, dtype_of_name

EXPORT_DTYPES = ("auto", *DTYPE_NAMES)


def saved_dtype(path: Path) -> str:
    """The dtype a model directory's config.json records, as one of fp32/bf16/fp16 (fp32 when unknown)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return "fp32"
    name = config.get("dtype") or config.get("torch_dtype")
    return dtype_of_name(name)


def export(trained: TrainedRun, export_dir: Path, export_size: float = 5.0, export_dtype: str = "auto") -> Path:
    cfg = trained.cfg
    adapter = cfg.adapter.name.value
    if export_dtype == "auto":
        source = trained.weights if adapter in ("full", "freeze") else Path(cfg.model.model_name_or_path)
        export_dtype = saved_dtype(source)
    from launcher.worker.model import load_for_inference  # torch: only once the run is known good

    tokenizer, model = load_for_inference(trained, export_dtype)
    if adapter in ("lora", "qlora"):
        model = model.merge_and_unload()
    export_dir.mkdir(parents=True, exist_ok=True)
    # prefix: the PeftModel saves the adapter only, pointing at its base
    model.save_pretrained(str(export_dir), max_shard_size=max(1, int(export_size * 1e9)))
    tokenizer.save_pretrained(str(export_dir))
    what = {"prefix": f"peft prefix adapter on {cfg.model.model_name_or_path}", "lora": "merged model",
            "qlora": "merged model"}.get(adapter, "model")
    print(f"launch-export: {adapter} run {trained.run.root} -> {export_dir} ({what}, {export_dtype})")
    return export_dir


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="launch-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished run dir (written by `launch`)")
    parser.add_argument("--export_dir", help="where to write the model (default: RUN_DIR/export)")
    parser.add_argument("--export_size", type=float, default=5.0, help="largest shard, in GB (default 5)")
    parser.add_argument("--export_dtype", choices=EXPORT_DTYPES, default="auto",
                        help="weights' dtype (default auto: the dtype the base model is saved in)")
    parser.add_argument("--checkpoint", help="export checkpoint N (or a checkpoint dir) instead of final/")
    args = parser.parse_args(argv)
    try:
        trained = open_run(args.run_dir, args.checkpoint)
        export_dir = Path(args.export_dir).expanduser() if args.export_dir else trained.run.root / "export"
        if export_dir.exists() and any(export_dir.iterdir()):
            raise RunError(f"--export_dir {export_dir} is not empty; give a new directory")
        if args.export_size <= 0:
            raise RunError(f"--export_size {args.export_size}: must be > 0 (GB per shard)")
    except RunError as e:
        print(f"launch-export: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    export(trained, export_dir, args.export_size, args.export_dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
