"""The run-dir lock and honest resume with real launches: a second launch into a training run dir is refused
while the first finishes; a resume with another learning rate is warned and recorded per attempt; a stale lock
is taken over and resume=auto trains fresh where there is nothing to resume."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import yaml

from launcher.checkpoints import all_checkpoints, is_complete
from launcher.rundir import RunDir, read_events
from tests.support import run_launch, wait_until_training

pytestmark = pytest.mark.integration

COMMON = ("recipe=tiny_sft_lora", "device=cpu", "gpus=1", "train.logging_steps=1")
STEPS = 40


@pytest.fixture(scope="module")
def contested(tmp_path_factory, tiny_model):
    """A run that trains while a second launch (with overwrite_output_dir=true, the dangerous one) targets it."""
    tmp = tmp_path_factory.mktemp("lock")
    run = tmp / "run"
    first = subprocess.Popen([sys.executable, "-m", "launcher.cli", *COMMON, f"output_dir={run}",
                              f"train.max_steps={STEPS}", "train.save_steps=20"],
                             cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait_until_training(run, ranks=1, timeout=180):
        first.kill()
        pytest.fail("the first launch did not start training within 180 s: " + first.communicate()[1][-3000:])
    second = run_launch(*COMMON, f"output_dir={run}", "overwrite_output_dir=true", cwd=tmp)
    _, first_err = first.communicate(timeout=600)
    return first, first_err, second, run


def test_a_second_launch_into_a_training_run_dir_is_refused_naming_the_holder(contested):
    first, _, second, _ = contested
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"is held by launch pid {first.pid} on host {socket.gethostname()}" in second.stderr


def test_the_first_launch_finishes_and_releases_the_run_dir(contested):
    first, first_err, _, run = contested
    assert first.returncode == 0, first_err[-3000:]
    assert json.loads((run / "summary.json").read_text())["steps"] == STEPS
    assert not (run / "launch.lock").exists()
    assert [e["attempt_dir"] for e in read_events(RunDir(run)) if e["event"] == "launch"] == ["attempts/0"]


def test_a_resume_with_another_learning_rate_is_warned_and_recorded(contested):
    run = contested[3]
    assert all(is_complete(ckpt) for ckpt in all_checkpoints(run / "checkpoints"))  # the worker marked them
    r = run_launch(*COMMON, f"output_dir={run}", f"train.max_steps={STEPS + 4}", "train.save_steps=20",
                   "resume=true", "train.learning_rate=1e-3", cwd=run.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warning: train.learning_rate=0.001: was 0.01 in this run" in r.stderr
    assert f"resume=true: resuming from {run}/checkpoints/checkpoint-{STEPS}" in r.stderr
    lrs = [yaml.safe_load((run / f"attempts/{n}/config.yaml").read_text())["train"]["learning_rate"] for n in (0, 1)]
    assert lrs == [0.01, 0.001]
    for n in (0, 1):
        for name in ("overrides.yaml", "plan.json", "launch.sh"):
            assert (run / f"attempts/{n}/{name}").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["learning_rate"] == 0.001
    changes = json.loads((run / "attempts/1/config_changes.json").read_text())
    assert {"key": "train.learning_rate", "old": 0.01, "new": 0.001} in changes
    assert not (run / "attempts/0/config_changes.json").exists()
    launches = [e for e in read_events(RunDir(run)) if e["event"] == "launch"]
    assert [e["attempt_dir"] for e in launches] == ["attempts/0", "attempts/1"]
    assert launches[1]["config_changes"] == changes and launches[1]["resume"] is True
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"].endswith(f"checkpoint-{STEPS}") and summary["steps"] == STEPS + 4


def test_a_stale_lock_is_taken_over_and_resume_auto_trains_fresh(tmp_path, tiny_model):
    run = tmp_path / "run"
    run.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (run / "launch.lock").write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "time": 0,
                                                 "slurm_job": None}))
    r = run_launch(*COMMON, f"output_dir={run}", "resume=auto", "train.max_steps=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"names launch pid {gone.pid} on host {socket.gethostname()}" in r.stderr
    assert "taking the run dir over" in r.stderr
    assert "resume=auto: no complete checkpoint" in r.stderr and "training from the start" in r.stderr
    assert json.loads((run / "summary.json").read_text())["resumed_from"] is None
    assert not (run / "launch.lock").exists()
