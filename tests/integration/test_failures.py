"""What the ranks do when things fail (real torchrun, 2 gloo ranks, the tiny model): a rank killed in the middle
of a checkpoint save, SIGTERM mid-run or while tokenizing, a failed preflight, bad data found while loading."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.checkpoints import MARKER, complete_checkpoints
from tests.support import processes_mentioning, rank_pids, run_launch, signals_as_in_a_terminal, \
    wait_until_training

pytestmark = pytest.mark.integration

TINY = ("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "train.logging_steps=1", "train.dataloader_drop_last=true",
        "max_restarts=0")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def start(run: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    log = (run.parent / "launch.out").open("ab")
    return subprocess.Popen([sys.executable, "-m", "launcher.cli", *TINY, f"output_dir={run}", *args],
                            cwd=run.parent, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.1)


def test_a_rank_killed_during_a_save_resumes_from_the_previous_complete_checkpoint(tmp_path, tiny_model):
    run = tmp_path / "run"
    plan = ("train.max_steps=6", "train.save_steps=2", "train.save_total_limit=1")
    ckpt = run / "checkpoints"
    # every save waits 4 s between its files and its marker: SIGKILL rank 1 in that window of checkpoint-4's
    proc = start(run, *plan, env={"LAUNCHER_TEST_SAVE_DELAY_S": "4"})
    try:
        wait_for(lambda: (ckpt / "checkpoint-2" / MARKER).is_file(), 240, "complete checkpoint-2")
        wait_for(lambda: (ckpt / "checkpoint-4/trainer_state.json").is_file(), 60, "checkpoint-4 files")
        assert not (ckpt / "checkpoint-4" / MARKER).exists()
        os.kill(rank_pids(run)[1], signal.SIGKILL)
        assert proc.wait(timeout=120) != 0
    finally:
        proc.kill()
    # the Trainer's own rotation (save_total_limit=1) would have deleted checkpoint-2 for the torn checkpoint-4
    assert [p.name for p in complete_checkpoints(ckpt)] == ["checkpoint-2"]
    assert (ckpt / "checkpoint-4").is_dir()
    assert not (run / "summary.json").exists()

    r = run_launch(*TINY, f"output_dir={run}", *plan, "resume=true", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["resumed_from"].endswith("checkpoint-2") and s["steps"] == 6
    rows = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in rows] == [1, 2, 3, 4, 3, 4, 5, 6]
    assert s["first_loss"] == rows[0]["loss"]  # the first attempt's, not the resumed one's
    killed, resumed = s["attempts"]
    assert (killed["start_step"], killed["end_step"], killed["resumed_from"]) == (0, 4, None)
    assert killed["outcome"] != "finished"
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["start_step"] == 2
    assert (resumed["end_step"], resumed["outcome"]) == (6, "finished")
    assert s["train_time_s"] >= killed["train_time_s"] + resumed["train_time_s"] - 0.01 > 0
    log0 = (run / "logs/rank0.log").read_text()
    assert "not resuming from checkpoint-4" in log0 and f"resuming from {ckpt}/checkpoint-2" in log0
    assert [p.name for p in sorted(ckpt.iterdir())] == ["checkpoint-6"]  # rotated once complete
    assert json.loads((ckpt / "checkpoint-6" / MARKER).read_text())["world_size"] == 2


def test_sigterm_saves_the_next_step_and_a_resume_finishes_as_planned(tmp_path, tiny_model):
    run = tmp_path / "run"
    plan = ("train.max_steps=60", "train.save_steps=1000")
    proc = start(run, *plan)
    try:
        if not wait_until_training(run, ranks=2, timeout=240):
            pytest.fail("ranks did not start training within 240 s")
        wait_for(lambda: (run / "metrics.jsonl").is_file() and len(read_jsonl(run / "metrics.jsonl")) >= 2, 60,
                 "two metrics rows")
        ranks = rank_pids(run)
        assert sorted(ranks) == [0, 1]
        signalled_after = read_jsonl(run / "metrics.jsonl")[-1]["step"]
        for pid in ranks.values():  # straight to the ranks, as Kubernetes or a spot VM would
            os.kill(pid, signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert rc == 75, rc  # interrupted, resumable: launch.sh read interrupted.json
    stop = json.loads((run / "interrupted.json").read_text())
    step = stop["step"]
    assert signalled_after < step < 60 and stop["signal"] == "SIGTERM"
    assert stop["checkpoint"] == str(run / f"checkpoints/checkpoint-{step}")
    assert [p.name for p in complete_checkpoints(run / "checkpoints")] == [f"checkpoint-{step}"]
    assert not (run / "summary.json").exists()
    for rank in (0, 1):
        assert "SIGTERM: saving a checkpoint at the next step boundary" in (run / f"logs/rank{rank}.log").read_text()
    ends = [e for e in read_jsonl(run / "attempts.jsonl") if e["event"] == "train_end"]
    assert [(e["step"], e["outcome"]) for e in ends] == [(step, "interrupted")]

    r = run_launch(*TINY, f"output_dir={run}", *plan, "resume=true", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["steps"] == 60 and s["resumed_from"].endswith(f"checkpoint-{step}")
    assert [(a["start_step"], a["end_step"], a["outcome"]) for a in s["attempts"]] == \
        [(0, step, "interrupted"), (step, 60, "finished")]
    assert not (run / "interrupted.json").exists()  # the resumed attempt continued from it


@pytest.mark.parametrize("gpus", [1, 2])
def test_sigterm_while_tokenizing_leaves_no_process_behind(tmp_path, tiny_model, gpus):
    """Local rank 0 tokenizes with a pool of 2 processes: in its data process when the node has a core to spare
    (1 rank on 2 cores), in the rank itself when not (2 ranks). A SIGTERM then ends the run at once, and takes
    the pool (and the data process) with it: none is left behind, and no half-built cache is published. Under
    torchrun its kill of each rank's process group takes them; a single process's forks die with their parent
    (worker/__main__.py), where before a pool of a 1-process run was left blocked for good."""
    rows = [{"instruction": f"Add {i} and {7 * i}, then say why.", "input": "numbers " * 20,
             "output": f"{8 * i} because " + "reasons " * 30} for i in range(40_000)]
    (tmp_path / "many.json").write_text(json.dumps(rows))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", *TINY, f"gpus={gpus}", f"output_dir={run}",
                             f"data.dataset=[{tmp_path}/many.json]", f"data.cache_dir={tmp_path}/cache",
                             "data.preprocessing_num_workers=2"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=signals_as_in_a_terminal)
    try:
        # the ranks, the data process (1 rank) and the pool's 2 workers: forks, with the ranks' command line (its
        # arguments NUL-separated in /proc)
        forked = 2 + (gpus == 1)
        wait_for(lambda: len(processes_mentioning(f"launcher.worker\0{run}")) >= gpus + forked, 120, "tokenizing pool")
        assert not list((tmp_path / "cache").glob("*/meta.json"))  # still tokenizing
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    wait_for(lambda: not processes_mentioning(str(run)), 15, "end of every process of the run")
    assert not list((tmp_path / "cache").glob("*/meta.json"))


def test_a_failed_preflight_ends_the_run_at_once_naming_rank_host_and_check(tmp_path, tiny_model):
    run = tmp_path / "run"
    started = time.monotonic()
    # full fine-tuning saves the whole model and Adam's state; the hook makes the disk look nearly full
    r = run_launch(*TINY, f"output_dir={run}", "adapter=full", "train.max_steps=2", cwd=tmp_path,
                   env={"LAUNCHER_TEST_FREE_DISK_BYTES": "1000"}, timeout=300)
    elapsed = time.monotonic() - started
    assert r.returncode != 0 and elapsed < 150
    host = socket.gethostname()
    assert re.search(rf"preflight failed on rank \d \({host}\), check disk: {run} has 1000 bytes free, the planned "
                     r"checkpoints and final/ need about [\d.]+ MiB", r.stderr), r.stderr[-3000:]
    assert "train.save_total_limit" in r.stderr
    fatal = [e for e in read_jsonl(run / "attempts.jsonl") if e["event"] == "fatal"]
    assert fatal and all(e["check"] == "preflight:disk" and e["exit_code"] == 1 and e["host"] == host
                         for e in fatal)
    # nothing loaded, nothing trained
    assert "trainable params" not in (run / "logs/rank0.log").read_text()
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()


def test_bad_data_past_what_validate_scans_is_a_fatal_event(tmp_path, tiny_model):
    """A bad row after the rows validate reads stops the rank with exit 2 and a fatal event (no restart helps)."""
    from launcher.facts import SCANNED_ROWS

    rows = [{"instruction": f"Add {i} and 1.", "input": "", "output": str(i + 1)} for i in range(SCANNED_ROWS)]
    rows.append({"instruction": "Bad.", "input": "", "output": "x", "history": "not a list of pairs"})
    (tmp_path / "late_bad.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"late_bad": {"file_name": "late_bad.json"}}))
    run = tmp_path / "run"
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "gpus=1", f"output_dir={run}", "data.dataset=late_bad",
                   f"data.dataset_dir={tmp_path}", "train.max_steps=2", cwd=tmp_path)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    message = f"dataset late_bad: row {SCANNED_ROWS} column history must be a list of [instruction, response] pairs"
    assert f"error: {message}" in r.stderr
    (fatal,) = [e for e in read_jsonl(run / "attempts.jsonl") if e["event"] == "fatal"]
    assert (fatal["rank"], fatal["check"], fatal["message"], fatal["exit_code"]) == (0, "data", message, 2)


def test_a_rank_stuck_in_a_collective_ends_the_run_naming_it(tmp_path, tiny_model):
    """Rank 1 stops answering (SIGSTOP: a deadlock, a hung filesystem): rank 0's all-reduce times out after
    train.ddp_timeout, the live ranks' monitored barrier names rank 1, and the run ends instead of hanging."""
    run = tmp_path / "run"
    proc = start(run, "train.max_steps=100000", "train.save_steps=100000", "train.ddp_timeout=15")
    stopped = None
    try:
        if not wait_until_training(run, ranks=2, timeout=240):
            pytest.fail("ranks did not start training within 240 s")
        stopped = rank_pids(run)[1]
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()
        wait_for(lambda: any(e["event"] == "stuck" for e in read_jsonl(run / "attempts.jsonl")), 120,
                 "stuck event")
        named_after = time.monotonic() - started
        os.kill(stopped, signal.SIGCONT)  # let torchrun's SIGTERM reach it now, not after its shutdown timeout
        rc = proc.wait(timeout=180)
    finally:
        if stopped:
            try:
                os.kill(stopped, signal.SIGCONT)
            except ProcessLookupError:
                pass
        proc.kill()
    assert rc != 0
    assert 15 <= named_after < 15 + 30 + 30  # ddp_timeout, then at most the diagnosis barrier (and slack)
    events = read_jsonl(run / "attempts.jsonl")
    (stuck,) = [e for e in events if e["event"] == "stuck"]
    assert stuck["rank"] == 0 and stuck["stuck_ranks"] == [1]
    (exit_event,) = [e for e in events if e["event"] == "exit"]
    assert exit_event["failed_rank"] == 1 and exit_event["restarting"] is False
    rank0 = (run / "logs/rank0.log").read_text()
    assert "a collective timed out on rank 0" in rank0 and "rank(s) 1 did not respond" in rank0
    out = (run.parent / "launch.out").read_text()
    assert "rank 1 (stuck in a collective) failed; not restarting" in out
