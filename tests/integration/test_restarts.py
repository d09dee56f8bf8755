"""Elastic restart and stopping for real: 2 gloo ranks (torchrun, DeepSpeed) train the tiny model; a rank is
SIGKILLed mid-run, or launch itself is."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.rundir import RunDir, read_events
from tests.support import processes_mentioning, rank_pid, run_launch, shm_buffers_left, start_training

pytestmark = pytest.mark.integration

#: 2 CPU ranks; a checkpoint every step, so that the restart resumes from the step the kill interrupted
TWO_RANKS = ("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "train.max_steps=40", "train.save_steps=1",
             "train.logging_steps=1")


def start_launch(tmp_path: Path, run: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "launcher.cli", *overrides, f"output_dir={run}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_rank_after(run: Path, rank: int, steps: int, timeout: float = 180) -> None:
    """SIGKILL `rank` once metrics.jsonl shows `steps` steps."""
    metrics, deadline = run / "metrics.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= steps and (pid := rank_pid(run, rank)):
            Path(f"/proc/{pid}/status").read_text()  # still there
            subprocess.run(["kill", "-9", str(pid)], check=True)
            return
        time.sleep(0.05)
    pytest.fail(f"rank {rank} did not reach step {steps} within {timeout} s")


def adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "final" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model) -> Path:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    r = run_launch(*TWO_RANKS, f"output_dir={tmp / 'run'}", cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "run"


def test_a_killed_rank_restarts_and_the_run_ends_like_an_uninterrupted_one(tmp_path, uninterrupted):
    run = tmp_path / "run"
    proc = start_launch(tmp_path, run, *TWO_RANKS, "max_restarts=1")
    kill_rank_after(run, rank=1, steps=8)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-4000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 40
    exits = [e for e in read_events(RunDir(run)) if e["event"] == "exit"]
    assert [(e["restart"], e["reason"], e["restarting"]) for e in exits] == \
        [(0, "rank failed", True), (1, "finished", False)]
    assert exits[0]["failed_rank"] == 1 and exits[0]["failed_host"] and exits[0]["exit_code"] != 0
    assert "rank 1 on" in err and "restart 1 of at most 1" in err
    # metrics had step 8, so checkpoint-7 was complete (its marker comes before step 8 runs); checkpoint-8 only
    # if its save finished before the kill
    assert summary["resumed_from"] and 7 <= int(summary["resumed_from"].rsplit("-", 1)[1]) < 40
    assert exits[0]["resume_step"] == int(summary["resumed_from"].rsplit("-", 1)[1])
    # the same seed and data order, resumed from a checkpoint of the step it had reached: the same weights
    ours, theirs = adapter(run), adapter(uninterrupted)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert (ours[name] == theirs[name]).all(), name


def test_without_restarts_a_killed_rank_ends_the_launch(tmp_path, tiny_model):
    run = tmp_path / "run"
    proc = start_launch(tmp_path, run, *TWO_RANKS, "max_restarts=0")
    kill_rank_after(run, rank=0, steps=3)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode not in (0, 75), err[-3000:]
    (exit_event,) = [e for e in read_events(RunDir(run)) if e["event"] == "exit"]
    assert exit_event["failed_rank"] == 0 and exit_event["restarting"] is False
    assert "max_restarts=0 used up" in err
    assert not (run / "summary.json").exists()


def test_kill_9_of_launch_leaves_no_rank_training(tmp_path, tiny_model):
    run = tmp_path / "run"
    proc = start_training(run, cwd=tmp_path)
    assert rank_pid(run, 0) and rank_pid(run, 1)
    proc.kill()  # SIGKILL: launch cannot forward anything
    proc.wait()
    deadline = time.monotonic() + 30
    while processes_mentioning(str(run)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(str(run)) == []
    assert not (run / "summary.json").exists()


ZERO2 = (*TWO_RANKS, "zero=2", "backend=deepspeed")


def test_a_killed_deepspeed_rank_restarts_with_zero2(tmp_path, tiny_model, deepspeed_ops):
    reference = tmp_path / "uninterrupted"
    r = run_launch(*ZERO2, f"output_dir={reference}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    proc = start_launch(tmp_path, run, *ZERO2, "max_restarts=1")
    kill_rank_after(run, rank=1, steps=5, timeout=300)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-4000:]
    assert json.loads((run / "summary.json").read_text())["steps"] == 40
    exits = [e for e in read_events(RunDir(run)) if e["event"] == "exit"]
    assert [(e["restart"], e["reason"], e["restarting"]) for e in exits] == \
        [(0, "rank failed", True), (1, "finished", False)]
    assert '"--master_port=$PORT"' in (run / "launch.sh").read_text()  # BASE_PORT + restart: a fresh store
    assert shm_buffers_left(run) == []  # neither the killed rank's nor the others' (launcher.shm_buffers)
    ours, theirs = adapter(run), adapter(reference)
    for name in ours:
        assert (ours[name] == theirs[name]).all(), name
