"""`launch-runs [OUTPUT_ROOT]`: a table of the runs under OUTPUT_ROOT (default outputs/): name, stage, adapter,
status, steps, final loss, wall time, run dir.

Reads only run dirs (config.yaml, summary.json, interrupted.json, launch.lock, attempts.jsonl, metrics.jsonl);
a run dir is a directory holding config.yaml (its attempts/N/ copies are not runs).
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from launcher.exitcodes import EXIT_INTERRUPTED, EXIT_USAGE
from launcher.facts import read_config, read_lock
from launcher.rundir import RunDir, read_events
from launcher.validate.lock import lock_status
from launcher.worker.history import clock, metrics_rows

COLUMNS = ("name", "stage", "adapter", "status", "steps", "final loss", "wall time", "run dir")
#: how deep under OUTPUT_ROOT run dirs are looked for (outputs/<name>/<timestamp>/ is 2; multirun adds levels)
MAX_DEPTH = 5


@dataclass(frozen=True)
class RunRow:
    name: str
    stage: str
    adapter: str
    status: str
    steps: Optional[int]
    final_loss: Optional[float]
    wall_s: Optional[float]
    root: str

    def cells(self) -> tuple[str, ...]:
        return (self.name, self.stage, self.adapter, self.status, "-" if self.steps is None else str(self.steps),
                "-" if self.final_loss is None else f"{self.final_loss:.4f}",
                "-" if self.wall_s is None else clock(self.wall_s), self.root)


def run_status(lock_kind: str, summary: Optional[dict], interrupted: bool, events: list[dict]) -> str:
    """running (a live launch or job holds launch.lock), interrupted (stopped at a checkpoint by a signal, or its
    last exit was EXIT_INTERRUPTED), finished (summary.json), failed (its last exit was non-zero), else unknown
    (killed without an exit event, or never trained)."""
    if lock_kind == "held":
        return "running"
    last_exit = next((e for e in reversed(events) if e.get("event") == "exit"), None)
    last_launch = max((i for i, e in enumerate(events) if e.get("event") == "launch"), default=-1)
    exited_since_launch = last_exit is not None and events.index(last_exit) > last_launch
    if interrupted or (exited_since_launch and last_exit.get("exit_code") == EXIT_INTERRUPTED):
        return "interrupted"
    if summary is not None:
        return "finished"
    if exited_since_launch and last_exit.get("exit_code") not in (0, None) and not last_exit.get("restarting"):
        return "failed"
    return "unknown"


def wall_time(events: list[dict], rows: list[dict], summary: Optional[dict]) -> Optional[float]:
    """From the first launch to the last thing recorded (an event or a metrics row), across every attempt."""
    starts = [e["time"] for e in events if e.get("event") == "launch" and isinstance(e.get("time"), (int, float))]
    times = [x["time"] for x in [*events, *rows] if isinstance(x.get("time"), (int, float))]
    if starts and times:
        return max(times) - min(starts)
    return (summary or {}).get("wall_time_s")


def run_row(root: Path, config: dict, summary: Optional[dict], interrupted: bool, lock_kind: str,
            events: list[dict], rows: list[dict]) -> RunRow:
    losses = [r for r in rows if isinstance(r.get("loss"), (int, float))]
    steps = (summary or {}).get("steps")
    if steps is None and rows:
        steps = max((r.get("step") for r in rows if isinstance(r.get("step"), int)), default=None)
    final_loss = (summary or {}).get("final_loss")
    if final_loss is None and losses:
        final_loss = losses[-1]["loss"]
    return RunRow(name=str(config.get("name", "?")), stage=str(_group(config, "stage")),
                  adapter=str(_group(config, "adapter")), status=run_status(lock_kind, summary, interrupted, events),
                  steps=steps, final_loss=final_loss, wall_s=wall_time(events, rows, summary), root=str(root))


def _group(config: dict, group: str) -> Any:
    node = config.get(group)
    return node.get("name", "?") if isinstance(node, dict) else "?"


def read_run(root: Path, hostname: str) -> RunRow:
    run = RunDir(root)
    summary = _json(run.summary)
    rows = metrics_rows(run.metrics.read_text()) if run.metrics.is_file() else []
    lock_kind = lock_status(read_lock(run.lock, hostname), hostname).kind
    return run_row(root, dict(read_config(run.config) or {}), summary, run.interrupted.is_file(), lock_kind,
                   read_events(run), rows)


def _json(path: Path) -> Optional[dict]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def find_runs(root: Path, depth: int = MAX_DEPTH) -> Iterator[Path]:
    """Run dirs at or under root, in path order (timestamps sort)."""
    if RunDir(root).config.is_file():
        yield root
        return
    if depth == 0 or not root.is_dir():
        return
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        yield from find_runs(child, depth - 1)


def table(rows: list[RunRow]) -> str:
    cells = [COLUMNS, *(r.cells() for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="launch-runs", description=__doc__.split("\n\n")[0])
    p.add_argument("output_root", nargs="?", default="outputs", help="where the runs are (default: outputs)")
    args = p.parse_args(argv)
    root = Path(args.output_root).expanduser()
    if not root.is_dir():
        print(f"error: {root}: no such directory; give the output_root the runs were launched with "
              "(default outputs/ in the launch's directory)", file=sys.stderr)
        return EXIT_USAGE
    hostname = socket.gethostname()
    rows = [read_run(r, hostname) for r in find_runs(root)]
    if not rows:
        print(f"launch-runs: no run dirs (with config.yaml) under {root}", file=sys.stderr)
        return 0
    print(table(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
