"""`launch-predict RUN_DIR [--checkpoint N] [overrides...]`: predict with generation with an earlier run's trained
model, through the normal launch (compose -> validate -> plan -> launch): the run's own overrides, then
train.do_train=false train.do_predict=true and its weights (adapter.adapter_name_or_path=RUN_DIR/final, or the
whole model for full/freeze), then yours, which win (e.g. data.eval_dataset=..., generation.*, gpus=2).

The predictions go to RUN_DIR/predict/ (RUN_DIR/predict-checkpoint-N/ with --checkpoint), a run dir of their
own (config.yaml, logs/, generated_predictions.jsonl, predict_results.json, summary.json), replaced by the next
launch-predict of the same weights.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

import yaml

from launcher.exitcodes import EXIT_USAGE
from launcher.inference import RunError, TrainedRun, open_run
from launcher.schema import split_list

#: keys of the earlier launch that belong to that run dir, not to the prediction
DROPPED = ("output_dir", "output_root", "overwrite_output_dir", "resume", "dry_run", "prepare_only", "name",
           "zero", "zero.config", "backend", "train.do_train", "train.do_predict", "adapter.adapter_name_or_path",
           "adapter.create_new_adapter")


def weights_overrides(trained: TrainedRun) -> list[str]:
    """How the prediction loads the run's trained model: its adapter on the base (after the adapters the run
    merged first), or the whole model for full and freeze."""
    a = trained.cfg.adapter
    if a.name.value in ("full", "freeze"):
        return [f"model.model_name_or_path={trained.weights}", "adapter=full"]
    earlier = split_list(a.adapter_name_or_path)
    merged = earlier if a.create_new_adapter else earlier[:-1]  # the last one was trained on: it is in final/
    if a.name.value == "prefix":
        merged = []
    return [f"adapter.adapter_name_or_path='{','.join([*merged, str(trained.weights)])}'"]


def predict_args(trained: TrainedRun, typed: list[str], overrides: list[str], output_dir: str) -> list[str]:
    """`launch` arguments: the run's typed overrides (less the ones above and those set again below), the
    prediction's (less those the user types), then the user's."""
    key = lambda o: o.partition("=")[0].lstrip("+~")  # noqa: E731
    again = {key(o) for o in overrides}
    ours = [o for o in ["train.do_train=false", "train.do_predict=true", "zero=none", f"output_dir={output_dir}",
                        "overwrite_output_dir=true", *weights_overrides(trained)] if key(o) not in again]
    kept = [o for o in typed if key(o) not in {*DROPPED, *again, *map(key, ours)}]
    return kept + ours + overrides


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="launch-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished run dir (written by `launch`)")
    parser.add_argument("--checkpoint", help="predict with checkpoint N (or a checkpoint dir) instead of final/")
    parser.add_argument("overrides", nargs="*", help="launch overrides, e.g. data.eval_dataset=adgen_demo_dev")
    args = parser.parse_intermixed_args(argv)  # overrides before or after --checkpoint
    try:
        trained = open_run(args.run_dir, args.checkpoint)
    except RunError as e:
        print(f"launch-predict: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    typed = yaml.safe_load(trained.run.overrides.read_text()) if trained.run.overrides.is_file() else []
    output = trained.run.root / ("predict" if args.checkpoint is None else f"predict-{trained.weights.name}")
    argv = predict_args(trained, [str(o) for o in typed or []], args.overrides, str(output))
    print("launch " + " ".join(argv), file=sys.stderr)
    from launcher import cli

    sys.argv = ["launch", *argv]
    cli.main()


if __name__ == "__main__":
    main()
