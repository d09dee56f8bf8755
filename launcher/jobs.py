"""`launch-status RUN_DIR [--wait]` and `launch-cancel RUN_DIR`: follow or stop a run's Slurm job; stop_run():
the graceful stop of a local or Slurm run (launch-ui's Stop)."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

from launcher.backends import slurm
from launcher.facts import read_lock
from launcher.rundir import RunDir


def _last_job(run_dir: str) -> str:
    run = RunDir(Path(run_dir).resolve())
    if not run.job_ids.is_file():
        sys.exit(f"error: {run.root} has no Slurm job ({run.job_ids} missing): was it launched with cluster=slurm?")
    return run.job_ids.read_text().split()[-1]


def status_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="launch-status", description="State of a run dir's (last) Slurm job.")
    p.add_argument("run_dir")
    p.add_argument("--wait", action="store_true", help="follow the job to its end; exit with its status")
    args = p.parse_args(argv)
    job = _last_job(args.run_dir)
    try:
        states = slurm.wait_for(job) if args.wait else slurm.job_states(job)
    except slurm.SlurmError as e:
        # Without accounting, Slurm forgets a job MinJobAge after it ends; the batch script left its status.
        exit_file = RunDir(Path(args.run_dir).resolve()).root / "slurm" / "exit_code"
        if not exit_file.is_file():
            sys.exit(f"error: {e}")
        rc = int(exit_file.read_text().strip() or 1)
        print(f"job {job}: no longer known to Slurm ({e}); its batch script ended with exit {rc}")
        sys.exit(rc)
    rc = 0
    for s in states:
        if not args.wait:
            print(f"job {s.job_id}: {s.state}" + (f" exit {s.exit_code}" if s.done else "")
                  + (f" (restarts {s.restarts})" if s.restarts else ""))
        if s.done and (s.state != "COMPLETED" or s.exit_code):
            rc = max(rc, s.exit_code or 1)
    sys.exit(rc)


def cancel_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="launch-cancel", description="Cancel a run dir's (last) Slurm job.")
    p.add_argument("run_dir")
    args = p.parse_args(argv)
    job = _last_job(args.run_dir)
    try:
        slurm.cancel(job)
    except slurm.SlurmError as e:
        sys.exit(f"error: {e}")
    print(f"launch: cancelled job {job}")


class NotRunning(RuntimeError):
    pass


def stop_run(run_dir: str) -> str:
    """Stop a run the graceful way: its Slurm job cancelled as launch-cancel does, or SIGTERM to the local `launch`
    that holds the run dir (launch.sh's trap: every rank saves a checkpoint and stops; launch exits 75).
    Raises NotRunning when no live launch or job holds the run dir, slurm.SlurmError when scancel fails."""
    run = RunDir(Path(run_dir).resolve())
    lock = read_lock(run.lock, socket.gethostname())
    holder = lock.holder or {}
    if holder.get("slurm_job"):
        slurm.cancel(str(holder["slurm_job"]))
        return f"cancelled job {holder['slurm_job']}"
    if lock.pid_alive:
        os.kill(int(holder["pid"]), signal.SIGTERM)
        return f"sent SIGTERM to launch (pid {holder['pid']}): the ranks save a checkpoint and stop"
    if lock.pid_alive is None and holder.get("host"):
        raise NotRunning(f"{run.root}: held by launch pid {holder.get('pid')} on {holder['host']}, not this machine; "
                         "stop it there (kill -TERM PID)")
    raise NotRunning(f"{run.root}: no live launch holds {run.lock.name}; nothing to stop")
