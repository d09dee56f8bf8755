"""launcher.restarts: what launch.sh's loop does after an attempt, and the exit event it records."""
from __future__ import annotations

import json
import time

import pytest

from launcher.checkpoints import MARKER
from launcher.exitcodes import EXIT_INTERRUPTED
from launcher.restarts import after_attempt, decide, root_cause
from launcher.rundir import RunDir, append_event, read_events

TORCHRUN_FAILURE = """
[W1204 18:30:01.000000000 api.py:1000] Sending process 4242 closing signal SIGTERM
E1204 18:30:02.000000000 api.py:900] failed (exitcode: -9) local_rank: 1 (pid: 4243) of binary: /usr/bin/python3
Traceback (most recent call last):
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
launcher.worker FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-04_18:30:02
  host      : node7.cluster
  rank      : 3 (local_rank: 1)
  exitcode  : -9 (pid: 4243)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4243
============================================================
"""


def test_root_cause_names_the_failed_rank_and_host():
    f = root_cause("noise\n" + TORCHRUN_FAILURE)
    assert (f.rank, f.host, f.exitcode) == (3, "node7.cluster", -9)
    assert root_cause("Traceback: something else\n") is None


@pytest.mark.parametrize("kw, expected", [
    (dict(exit_code=0), ("finished", 0)),
    (dict(exit_code=1), ("rank failed", None)),  # None: restart
    (dict(exit_code=1, restart=2), ("rank failed", 1)),  # restarts used up
    (dict(exit_code=1, signal=15), ("signal", 143)),
    (dict(exit_code=1, signal=2, interrupted=True), ("signal", EXIT_INTERRUPTED)),
    (dict(exit_code=0, interrupted=True), ("interrupted", EXIT_INTERRUPTED)),
    (dict(exit_code=1, fatal={"check": "data", "exit_code": 2}), ("fatal: data", 2)),
    # rank 0 had written every output when a rank failed at its exit: nothing to train again
    (dict(exit_code=250, done=True), ("finished; a rank failed at its exit", 0)),
    (dict(exit_code=1, signal=15, done=True), ("signal", 143)),
])
def test_decide(kw, expected):
    args = dict(exit_code=0, signal=0, interrupted=False, fatal=None, restart=0, max_restarts=2) | kw
    d = decide(**args)
    assert (d.reason, d.exit_code) == expected


def test_after_a_failed_rank_the_exit_event_names_it_and_the_resume_step(tmp_path, capsys):
    run = RunDir(tmp_path)
    for step, complete in ((4, True), (6, False)):  # checkpoint-6 half written: resume from 4
        d = run.checkpoints / f"checkpoint-{step}"
        d.mkdir(parents=True)
        if complete:
            (d / MARKER).write_text("{}")
    log = tmp_path / "launcher.node0.log"
    log.write_text("an earlier attempt's failure\n" + TORCHRUN_FAILURE.replace("rank      : 3", "rank      : 0"))
    offset = log.stat().st_size
    with log.open("a") as f:
        f.write(TORCHRUN_FAILURE)
    started = time.time()
    d = after_attempt(run, node=0, restart=0, max_restarts=1, exit_code=1, signal=0, log=log, log_offset=offset,
                      started=started)
    assert d.exit_code is None
    (event,) = read_events(run)
    assert event["event"] == "exit" and event["restarting"] is True and event["reason"] == "rank failed"
    assert (event["failed_rank"], event["failed_host"], event["resume_step"]) == (3, "node7.cluster", 4)
    assert "rank 3 on node7.cluster (exit code -9) failed; restart 1 of at most 1, resuming from checkpoint-4" \
        in capsys.readouterr().err


def test_a_fatal_event_or_a_fresh_interrupted_json_of_this_attempt_ends_the_loop(tmp_path):
    run = RunDir(tmp_path)
    log = tmp_path / "none.log"
    append_event(run, {"event": "fatal", "time": 100.0, "rank": 1, "host": "h", "check": "data", "exit_code": 2})
    # a fatal event of an earlier attempt does not count
    assert after_attempt(run, node=0, restart=0, max_restarts=3, exit_code=1, signal=0, log=log, log_offset=0,
                         started=200.0).exit_code is None
    append_event(run, {"event": "fatal", "time": 300.0, "rank": 1, "host": "h", "check": "preflight:disk",
                       "exit_code": 3})
    d = after_attempt(run, node=0, restart=1, max_restarts=3, exit_code=1, signal=0, log=log, log_offset=0,
                      started=250.0)
    assert (d.reason, d.exit_code) == ("fatal: preflight:disk", 3)
    assert read_events(run)[-1]["failed_rank"] == 1 and read_events(run)[-1]["restarting"] is False
    run.interrupted.write_text(json.dumps({"step": 5, "time": 400.0}))
    assert after_attempt(run, node=0, restart=0, max_restarts=3, exit_code=0, signal=0, log=log, log_offset=0,
                         started=500.0).exit_code == 0  # stale: written before this attempt
    assert after_attempt(run, node=0, restart=0, max_restarts=3, exit_code=0, signal=0, log=log, log_offset=0,
                         started=350.0).exit_code == EXIT_INTERRUPTED


def test_a_rank_named_stuck_by_rank_0_is_the_failed_one_not_the_rank_that_timed_out(tmp_path, capsys):
    run = RunDir(tmp_path)
    log = tmp_path / "launcher.node0.log"
    log.write_text(TORCHRUN_FAILURE.replace("rank      : 3", "rank      : 0"))  # rank 0's wait timed out
    append_event(run, {"event": "stuck", "time": 90.0, "rank": 0, "stuck_ranks": [2]})  # an earlier attempt's
    d = after_attempt(run, node=0, restart=0, max_restarts=0, exit_code=1, signal=0, log=log, log_offset=0,
                      started=100.0)
    assert read_events(run)[-1]["failed_rank"] == 0 and d.exit_code == 1
    append_event(run, {"event": "stuck", "time": 150.0, "rank": 0, "stuck_ranks": [1]})
    after_attempt(run, node=0, restart=0, max_restarts=0, exit_code=1, signal=0, log=log, log_offset=0,
                  started=100.0)
    assert read_events(run)[-1]["failed_rank"] == 1
    assert "rank 1 (stuck in a collective) failed; not restarting" in capsys.readouterr().err


def test_a_rank_failing_after_rank_0_is_done_ends_the_loop_finished(tmp_path, capsys):
    run = RunDir(tmp_path)
    log = tmp_path / "none.log"
    append_event(run, {"event": "done", "time": 100.0})  # an earlier attempt's: does not count
    assert after_attempt(run, node=0, restart=0, max_restarts=3, exit_code=250, signal=0, log=log, log_offset=0,
                         started=200.0).exit_code is None
    append_event(run, {"event": "done", "time": 300.0})
    d = after_attempt(run, node=0, restart=1, max_restarts=3, exit_code=250, signal=0, log=log, log_offset=0,
                      started=250.0)
    assert d.exit_code == 0 and read_events(run)[-1]["restarting"] is False
    assert read_events(run)[-1]["exit_code"] == 250
    assert "a rank exited with code 250 after the run had written all its outputs; not restarting" \
        in capsys.readouterr().err
