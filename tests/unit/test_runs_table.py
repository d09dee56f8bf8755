"""launch-runs: the table of runs, from hand-made run dirs only."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from launcher.runs import find_runs, read_run, run_status, table

HOST = socket.gethostname()


def make_run(root, *, name="demo", stage="sft", adapter="lora", summary=None, interrupted=False, lock=None,
             events=(), rows=()):
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(f"name: {name}\nstage:\n  name: {stage}\nadapter:\n  name: {adapter}\n")
    (root / "attempts" / "0").mkdir(parents=True)
    (root / "attempts" / "0" / "config.yaml").write_text("name: copy\n")  # attempts/N/ is not a run
    if summary is not None:
        (root / "summary.json").write_text(json.dumps(summary))
    if interrupted:
        (root / "interrupted.json").write_text("{}")
    if lock is not None:
        (root / "launch.lock").write_text(json.dumps(lock))
    (root / "attempts.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


LAUNCH = {"event": "launch", "time": 1000.0}
ROWS = [{"step": 10, "time": 1010.0, "loss": 2.0}, {"step": 20, "time": 1100.0, "loss": 1.5}]


def test_status_rules():
    assert run_status("held", None, False, [LAUNCH]) == "running"
    assert run_status("free", {"steps": 3}, False, [LAUNCH, {"event": "exit", "exit_code": 0}]) == "finished"
    assert run_status("free", None, True, [LAUNCH]) == "interrupted"
    assert run_status("free", None, False, [LAUNCH, {"event": "exit", "exit_code": 75}]) == "interrupted"
    assert run_status("free", None, False, [LAUNCH, {"event": "exit", "exit_code": 1}]) == "failed"
    # restarting after a failure, then killed: nobody knows
    assert run_status("stale", None, False, [LAUNCH, {"event": "exit", "exit_code": 1, "restarting": True}]) \
        == "unknown"
    # a new launch after a failure, killed before its own exit
    assert run_status("stale", None, False, [{"event": "exit", "exit_code": 1}, LAUNCH]) == "unknown"


def test_rows_from_run_dirs(tmp_path):
    out = tmp_path / "outputs"
    make_run(out / "demo" / "2026-01-01_10-00-00", summary={"steps": 20, "final_loss": 1.25, "wall_time_s": 5},
             events=[LAUNCH, {"event": "exit", "time": 1130.0, "exit_code": 0}], rows=ROWS)
    make_run(out / "dpo" / "2026-01-02_10-00-00", stage="dpo", adapter="full", rows=ROWS,
             events=[LAUNCH, {"event": "exit", "time": 1200.0, "exit_code": 1}])
    make_run(out / "live" / "x", lock={"pid": os.getpid(), "host": HOST, "time": time.time()}, events=[LAUNCH])
    make_run(out / "stale" / "x", lock={"pid": 2 ** 22 + 12345, "host": HOST, "time": 1.0}, interrupted=True)
    runs = [read_run(p, HOST) for p in find_runs(out)]
    assert [(r.name, r.stage, r.adapter, r.status, r.steps, r.final_loss) for r in runs] == [
        ("demo", "sft", "lora", "finished", 20, 1.25),
        ("demo", "dpo", "full", "failed", 20, 1.5),
        ("demo", "sft", "lora", "running", None, None),
        ("demo", "sft", "lora", "interrupted", None, None)]
    assert runs[0].wall_s == 130.0 and runs[1].wall_s == 200.0 and runs[3].wall_s is None
    text = table(runs)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["name", "stage", "adapter", "status"]
    assert "02:10" in lines[1] and "1.2500" in lines[1] and lines[1].endswith("2026-01-01_10-00-00")
    assert len(lines) == 5


def test_launch_runs_cli(tmp_path):
    make_run(tmp_path / "out" / "demo" / "t", summary={"steps": 2, "final_loss": 0.5}, events=[LAUNCH])
    r = subprocess.run([sys.executable, "-m", "launcher.runs", str(tmp_path / "out")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "finished" in r.stdout and "0.5000" in r.stdout
    r = subprocess.run([sys.executable, "-m", "launcher.runs", str(tmp_path / "none")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "no such directory" in r.stderr
