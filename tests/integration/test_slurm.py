"""`cluster=slurm` against a real 2-node Slurm (slurmctld + 2 slurmd on this host, scripts/slurm/up.sh)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from launcher.rundir import RunDir, read_events
from tests.support import rank_pid, run_launch

pytestmark = pytest.mark.integration
TINY = ("recipe=tiny_sft_lora", "device=cpu", "cluster=slurm")


def job_id(run: Path) -> str:
    return (run / "slurm" / "job_ids").read_text().split()[-1]


def rank_logs(run: Path) -> dict[int, str]:
    return {int(p.stem[4:]): p.read_text() for p in (run / "logs").glob("rank*.log")}


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.mark.parametrize("gpus", [1, 2])
def test_two_nodes_train_into_one_run_dir(slurm_cluster, tiny_model, tmp_path, gpus):
    run = tmp_path / "run"
    r = run_launch(*TINY, "nodes=2", f"gpus={gpus}", f"train.per_device_train_batch_size={4 // gpus}",
                   f"output_dir={run}", "wait=true", "train.max_steps=8", cwd=tmp_path)
    job_logs = "".join(p.read_text()[-3000:] for p in run.glob("slurm/*.out"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + job_logs
    assert re.search(r"submitted job \d+, 2 node\(s\) x %d rank\(s\)" % gpus, r.stdout)
    assert "COMPLETED" in r.stdout
    logs = rank_logs(run)
    assert sorted(logs) == list(range(2 * gpus))
    assert {re.search(r"slurm node (node\d)", text).group(1) for text in logs.values()} == {"node1", "node2"}
    s = summary(run)
    assert s["world_size"] == 2 * gpus and s["steps"] == 8 and s["restart_count"] == 0
    assert (run / "sbatch.sh").is_file() and (run / "final" / "adapter_model.safetensors").is_file()


def test_a_signalled_job_checkpoints_requeues_and_finishes(slurm_cluster, tiny_model, tmp_path):
    run = tmp_path / "run"
    r = run_launch(*TINY, "nodes=2", "gpus=1", f"output_dir={run}", "train.max_steps=400", "train.logging_steps=5",
                   "train.save_steps=100000", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    job = job_id(run)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # let it train a few steps, then send the warning signal
        metrics = run / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR2", "--batch", job], check=True)
    status = subprocess.run(["launch-status", str(run), "--wait"],
                            capture_output=True, text=True, timeout=400)
    assert status.returncode == 0, status.stdout + status.stderr
    attempts = (run / "slurm" / "attempts.log").read_text().splitlines()
    assert [a.split()[2] for a in attempts] == ["restart=0", "restart=1"]
    out = (run / "slurm" / f"{job}.out").read_text()
    assert "asking the ranks to checkpoint" in out and "requeueing job" in out
    s = summary(run)
    assert s["steps"] == 400 and s["restart_count"] == 1  # the same final step as an uninterrupted run
    assert re.search(r"checkpoint-\d+$", s["resumed_from"])
    resumed_at = int(s["resumed_from"].rsplit("-", 1)[1])
    assert 0 < resumed_at < 400
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 400


def test_a_job_requeued_from_outside_resumes(slurm_cluster, tiny_model, tmp_path):
    run = tmp_path / "run"
    r = run_launch(*TINY, "gpus=2", "train.per_device_train_batch_size=2", f"output_dir={run}",
                   "train.max_steps=300", "train.save_steps=20", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    job = job_id(run)
    deadline = time.monotonic() + 180
    while not list((run / "checkpoints").glob("checkpoint-*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1)  # let the checkpoint finish writing
    subprocess.run(["scontrol", "requeue", job], check=True)  # an admin's requeue, or a node failure
    status = subprocess.run(["launch-status", str(run), "--wait"], capture_output=True, text=True, timeout=400)
    assert status.returncode == 0, status.stdout + status.stderr
    s = summary(run)
    assert s["steps"] == 300 and s["restart_count"] == 1 and re.search(r"checkpoint-\d+$", s["resumed_from"])


def test_a_sweep_is_one_job_array(slurm_cluster, tiny_model, tmp_path):
    r = run_launch("-m", *TINY, "adapter.lora_rank=2,4,8", "wait=true", "train.max_steps=4", cwd=tmp_path,
                   timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "(array of 3)" in r.stdout
    runs = sorted((tmp_path / "outputs" / "tiny_sft_lora").iterdir())
    assert len(runs) == 3
    ranks = {yaml.safe_load((run / "config.yaml").read_text())["adapter"]["lora_rank"]: run for run in runs}
    assert sorted(ranks) == [2, 4, 8]
    ids = {job_id(run) for run in runs}
    assert len({i.split("_")[0] for i in ids}) == 1 and {i.split("_")[1] for i in ids} == {"0", "1", "2"}
    for rank, run in ranks.items():
        assert summary(run)["trainable_params"] == 2 * rank * ((64 + 64) + (64 + 32))
        assert f"adapter.lora_rank={rank}" in (run / "overrides.yaml").read_text()


def test_unknown_partition_is_one_clear_message(slurm_cluster, tiny_model, tmp_path):
    r = run_launch(*TINY, "cluster.partition=nosuchpartition", f"output_dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 2
    assert "error: sbatch refused the job:" in r.stderr and "Invalid partition name" in r.stderr
    assert "Traceback" not in r.stderr


def test_status_and_cancel(slurm_cluster, tiny_model, tmp_path):
    run = tmp_path / "run"
    r = run_launch(*TINY, f"output_dir={run}", "train.max_steps=100000", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    status = subprocess.run(["launch-status", str(run)], capture_output=True, text=True)
    assert re.search(r"job \d+: (PENDING|RUNNING)", status.stdout), status.stdout + status.stderr
    cancel = subprocess.run(["launch-cancel", str(run)], capture_output=True, text=True)
    assert cancel.returncode == 0 and "cancelled job" in cancel.stdout
    final = subprocess.run(["launch-status", str(run), "--wait"], capture_output=True, text=True, timeout=120)
    assert final.returncode != 0 and "CANCELLED" in final.stdout


def test_a_queued_or_running_job_holds_its_run_dir(slurm_cluster, tiny_model, tmp_path):
    """launch.lock names the job after sbatch; a second launch is refused naming it and its state; once the job
    has ended the lock is stale and the next launch takes the run dir over."""
    run = tmp_path / "run"
    r = run_launch(*TINY, f"output_dir={run}", "train.max_steps=100000", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    job = job_id(run)
    assert json.loads((run / "launch.lock").read_text())["slurm_job"] == job
    second = run_launch(*TINY, f"output_dir={run}", "overwrite_output_dir=true", "train.max_steps=2", cwd=tmp_path)
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    assert re.search(rf"is held by Slurm job {job} \((PENDING|RUNNING|CONFIGURING)\)", second.stderr), second.stderr
    assert job_id(run) == job  # nothing was written or submitted
    subprocess.run(["scancel", job], check=True)
    subprocess.run(["launch-status", str(run), "--wait"], capture_output=True, text=True, timeout=120)
    third = run_launch(*TINY, f"output_dir={run}", "overwrite_output_dir=true", "train.max_steps=2", "wait=true",
                       cwd=tmp_path)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    assert f"names Slurm job {job}, but it has ended (CANCELLED" in third.stderr
    assert summary(run)["steps"] == 2


def wait_for_steps(run: Path, steps: int, timeout: float = 180) -> None:
    metrics, deadline = run / "metrics.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= steps:
            return
        time.sleep(0.2)
    pytest.fail(f"no {steps} logged steps within {timeout} s")


def test_a_sigterm_to_the_job_checkpoints_requeues_and_finishes(slurm_cluster, tiny_model, tmp_path):
    """SIGTERM to the batch shell and every step (the time limit, a preemption with a grace time). The ranks
    checkpoint on SIGTERM itself (part A's graceful stop) and on the request file the batch shell writes."""
    run = tmp_path / "run"
    r = run_launch(*TINY, "nodes=2", "gpus=1", f"output_dir={run}", "train.max_steps=400", "train.logging_steps=5",
                   "train.save_steps=100000", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    job = job_id(run)
    wait_for_steps(run, 3)
    subprocess.run(["scancel", "--signal=TERM", "--full", job], check=True)
    status = subprocess.run(["launch-status", str(run), "--wait"], capture_output=True, text=True, timeout=400)
    out = (run / "slurm" / f"{job}.out").read_text()
    assert status.returncode == 0, status.stdout + status.stderr + out[-3000:]
    attempts = (run / "slurm" / "attempts.log").read_text().splitlines()
    assert [a.split()[2] for a in attempts] == ["restart=0", "restart=1"]
    assert "SIGTERM" in out and "requeueing job" in out
    s = summary(run)
    assert s["steps"] == 400 and s["restart_count"] == 1
    # neither node's launch.sh restarted its ranks: the job's requeue continues the run
    first = [e for e in read_events(RunDir(run)) if e["event"] == "exit"][:2]
    assert sorted(e["node"] for e in first) == [0, 1] and not any(e["restarting"] for e in first)
    resumed_at = int(s["resumed_from"].rsplit("-", 1)[1])  # the checkpoint the signal asked for
    assert 0 < resumed_at < 400


def test_a_rank_killed_on_one_of_two_nodes_restarts_the_rank_group(slurm_cluster, tiny_model, tmp_path):
    run = tmp_path / "run"
    r = run_launch(*TINY, "nodes=2", "gpus=1", f"output_dir={run}", "train.max_steps=200", "train.logging_steps=5",
                   "train.save_steps=100000", "max_restarts=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    wait_for_steps(run, 3)
    os.kill(rank_pid(run, 1), signal.SIGKILL)
    status = subprocess.run(["launch-status", str(run), "--wait"], capture_output=True, text=True, timeout=400)
    job_out = (run / "slurm" / f"{job_id(run)}.out").read_text()
    assert status.returncode == 0, status.stdout + status.stderr + job_out[-3000:]
    assert summary(run)["steps"] == 200 and summary(run)["restart_count"] == 0  # restarted inside the allocation
    exits = [e for e in read_events(RunDir(run)) if e["event"] == "exit"]
    # both nodes restarted (a fresh rendezvous on MASTER_PORT + 1), then both finished
    assert sorted((e["node"], e["restart"], e["restarting"]) for e in exits) == \
        [(0, 0, True), (0, 1, False), (1, 0, True), (1, 1, False)]
    assert any(e["failed_rank"] == 1 for e in exits if e["node"] == 1)
    assert "rank 1 on" in job_out and "restart 1 of at most 1" in job_out
