"""`launch-plot RUN_DIR`: training_loss.png (raw and smoothed, as LLaMA-Factory's plot_loss), eval_loss.png when
the run evaluated, and one PNG per metric of the stage's (rewards/margins, reward, objective/kl, ...) present in
metrics.jsonl. The worker's rank 0 writes them at the end of a run too.

Reads only the run dir. matplotlib is imported when drawing, through its Agg canvas (headless, no pyplot state):
nothing before planning imports this module.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Iterable, Optional

from launcher.exitcodes import EXIT_USAGE
from launcher.rundir import RunDir
from launcher.worker.history import metrics_rows


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of every row that logged `key` as a finite number, in step order. A step logged twice
    (a resumed attempt redoes the steps after its checkpoint) counts once, with the later attempt's value."""
    points = {r.get("step", i): r[key] for i, r in enumerate(rows)
              if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])}
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def smooth(values: list[float]) -> list[float]:
    """LLaMA-Factory's smoothing: an exponential moving average whose weight grows with the number of points
    (a short curve is barely smoothed)."""
    if not values:
        return []
    weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    out, last = [], values[0]
    for v in values:
        last = last * weight + (1 - weight) * v
        out.append(last)
    return out


def file_name(key: str) -> str:
    """The PNG of a metric: loss -> training_loss.png, rewards/margins -> rewards_margins.png."""
    return {"loss": "training_loss"}.get(key, key.replace("/", "_")) + ".png"


def plotted_keys(rows: list[dict], stage_metrics: Iterable[str]) -> list[str]:
    """loss, eval_loss and the stage's metrics, each only when some row logged it."""
    keys = ["loss", "eval_loss", *stage_metrics]
    return [k for k in dict.fromkeys(keys) if series(rows, k)[0]]


def draw(path: Path, key: str, steps: list[int], values: list[float], title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
    ax.plot(steps, smooth(values), color="#1f77b4", label="smoothed")
    ax.set_title(f"{key} of {title}")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.legend()
    fig.savefig(path, format="png", dpi=100)


def plot_run(root: Path, stage_metrics: Optional[Iterable[str]] = None) -> list[Path]:
    """Write the run's PNGs into its run dir; returns them. stage_metrics default: those summary.json kept,
    else every logged metric naming a reward."""
    run = RunDir(root)
    rows = metrics_rows(run.metrics.read_text()) if run.metrics.is_file() else []
    if stage_metrics is None:
        summary = json.loads(run.summary.read_text()) if run.summary.is_file() else {}
        stage_metrics = list(summary.get("metrics") or {}) or \
            sorted({k for r in rows for k in r if "reward" in k and not k.startswith("eval_")})
    written = []
    for key in plotted_keys(rows, stage_metrics):
        steps, values = series(rows, key)
        path = run.root / file_name(key)
        draw(path, key, steps, values, f"{run.root.parent.name}/{run.root.name}")
        written.append(path)
    return written


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="launch-plot", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a run dir (holding metrics.jsonl)")
    args = p.parse_args(argv)
    root = Path(args.run_dir)
    if not RunDir(root).metrics.is_file():
        print(f"error: {root}: no metrics.jsonl; give a run dir of a run that logged at least one step "
              "(launch-runs lists them)", file=sys.stderr)
        return EXIT_USAGE
    try:
        written = plot_run(root)
    except ImportError as e:
        print(f"error: {e}; install it with `pip install matplotlib`", file=sys.stderr)
        return EXIT_USAGE
    for path in written:
        print(path)
    if not written:
        print(f"launch-plot: {root}/metrics.jsonl has no loss to plot yet", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
