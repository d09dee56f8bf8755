"""The run-dir lock: atomic take and takeover, the liveness decision (pure), and a live holder refused by the CLI."""
from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from launcher import runlock
from launcher.cli import same_launch
from launcher.facts import LockFacts, RunDirFacts, read_lock
from launcher.validate.lock import lock_status, slurm_job_holds
from tests.support import problems, run_launch

HOST = "node7"


def lock(**holder) -> LockFacts:
    h = {"pid": 123, "host": HOST, "time": 0, "slurm_job": None, **holder}
    return LockFacts(raw=json.dumps(h), holder=h)


@pytest.mark.parametrize("state, holds", [
    ("PENDING", True), ("RUNNING", True), ("COMPLETING", True), ("REQUEUED", True), ("SUSPENDED", True),
    ("SPECIAL_EXIT", True), ("REQUEUE_HOLD", True), ("CONFIGURING", True),
    ("COMPLETED", False), ("FAILED", False), ("CANCELLED", False), ("TIMEOUT", False), ("NODE_FAIL", False),
    ("PREEMPTED", False), ("OUT_OF_MEMORY", False), ("", False), (None, None),
])
def test_which_slurm_states_hold_the_run_dir(state, holds):
    assert slurm_job_holds(state) is holds


def test_a_live_pid_on_this_host_holds_a_dead_one_is_stale():
    assert lock_status(LockFacts(), HOST).kind == "free"
    held = lock_status(LockFacts(**{**lock().__dict__, "pid_alive": True}), HOST)
    assert held.kind == "held" and "pid 123 on host node7" in held.holder
    stale = lock_status(LockFacts(**{**lock().__dict__, "pid_alive": False}), HOST)
    assert stale.kind == "stale" and "not running" in stale.why


def test_a_pid_on_another_host_cannot_be_checked_so_it_holds():
    s = lock_status(lock(host="node9"), HOST)
    assert s.kind == "held" and "node9" in s.holder and "cannot be checked" in s.why


def test_a_slurm_lock_is_judged_by_its_job_state():
    job = lock(slurm_job="4242")
    assert lock_status(LockFacts(**{**job.__dict__, "slurm_state": "PENDING"}), HOST).holder == \
        "Slurm job 4242 (PENDING)"
    assert lock_status(LockFacts(**{**job.__dict__, "slurm_state": "COMPLETED"}), HOST).kind == "stale"
    assert lock_status(LockFacts(**{**job.__dict__, "slurm_state": ""}), HOST).kind == "stale"
    unknown = lock_status(LockFacts(**{**job.__dict__, "slurm_error": "connection refused"}), HOST)
    assert unknown.kind == "held" and "connection refused" in unknown.why
    assert lock_status(LockFacts(raw="garbage"), HOST).kind == "held"


def lock_problems(*overrides, lock_facts):
    return [p for p in problems("recipe=tiny_sft_lora", "device=cpu", "output_dir=/runs/r", *overrides, hostname=HOST,
                                output_dir=RunDirFacts(exists=True, lock=lock_facts))
            if p.key == "output_dir"]


def test_validate_refuses_a_held_run_dir_and_warns_of_a_takeover():
    [held] = lock_problems(lock_facts=LockFacts(**{**lock().__dict__, "pid_alive": True}))
    assert held.error and "held by launch pid 123 on host node7" in held.fix and "/runs/r/launch.lock" in held.fix
    [stale] = lock_problems(lock_facts=LockFacts(**{**lock().__dict__, "pid_alive": False}))
    assert not stale.error and "taking the run dir over" in stale.fix
    [dry] = lock_problems("dry_run=true", lock_facts=LockFacts(**{**lock().__dict__, "pid_alive": True}))
    assert not dry.error  # a dry run writes nothing: it only says so


def test_only_node_0_of_a_multinode_run_without_slurm_holds_the_run_dir():
    live = LockFacts(**{**lock().__dict__, "pid_alive": True})
    assert lock_problems("nodes=2", "master_addr=n0", "node_rank=1", lock_facts=live) == []
    assert len(lock_problems("nodes=2", "master_addr=n0", "node_rank=0", lock_facts=live)) == 1


def test_same_launch_ignores_only_the_node_rank():
    mine = {"node_rank": 1, "train": {"learning_rate": 0.1}}
    assert same_launch({"node_rank": 0, "train": {"learning_rate": 0.1}}, mine)
    assert not same_launch({"node_rank": 0, "train": {"learning_rate": 0.2}}, mine)
    assert not same_launch(None, mine)


def test_take_is_exclusive_and_a_takeover_replaces_only_the_stale_lock(tmp_path):
    path = tmp_path / "run" / "launch.lock"
    first, second = ({"pid": n, "host": "h", "time": n, "slurm_job": None} for n in (1, 2))
    assert runlock.take(path, first) is None
    assert json.loads(runlock.take(path, second)) == first  # held: the holder comes back
    stale = path.read_text()
    third = {"pid": 3, "host": "h", "time": 3, "slurm_job": None}
    assert runlock.take(path, second, stale=stale) is None
    assert json.loads(runlock.take(path, third, stale=stale)) == second  # judged stale, but taken meanwhile
    runlock.release(path, first)  # not its lock any more: nothing happens
    assert json.loads(path.read_text()) == second
    runlock.record_job(path, second, "77")
    assert json.loads(path.read_text())["slurm_job"] == "77"
    runlock.release(path, second)
    assert not path.exists() and list(path.parent.iterdir()) == []  # no temporary file left


def test_read_lock_checks_the_holders_pid_on_this_host(tmp_path):
    path = tmp_path / "launch.lock"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        holder = {"pid": sleeper.pid, "host": socket.gethostname(), "pid_start": runlock.process_start(sleeper.pid),
                  "time": time.time(), "slurm_job": None}
        path.write_text(json.dumps(holder))
        assert read_lock(path, socket.gethostname()).pid_alive is True
        # the same pid with another start time is another process: the holder is gone
        path.write_text(json.dumps({**holder, "pid_start": holder["pid_start"] - 1}))
        assert read_lock(path, socket.gethostname()).pid_alive is False
    finally:
        sleeper.kill()
        sleeper.wait()
    path.write_text(json.dumps(holder))
    assert read_lock(path, socket.gethostname()).pid_alive is False
    assert read_lock(path, "elsewhere").pid_alive is None
    assert read_lock(tmp_path / "none", "h") == LockFacts()


def test_cli_refuses_a_run_dir_held_by_a_live_launch_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        holder = {"pid": sleeper.pid, "host": socket.gethostname(), "pid_start": runlock.process_start(sleeper.pid),
                  "time": time.time(), "slurm_job": None}
        (run / "launch.lock").write_text(json.dumps(holder))
        r = run_launch("recipe=tiny_sft_lora", "device=cpu", f"output_dir={run}", "overwrite_output_dir=true",
                       cwd=tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"held by launch pid {sleeper.pid} on host {socket.gethostname()}" in r.stderr
    assert [p.name for p in run.iterdir()] == ["launch.lock"]
    assert json.loads((run / "launch.lock").read_text()) == holder
