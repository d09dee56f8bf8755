"""The run-dir lock (RUN_DIR/launch.lock): which launch holds a run dir, taken and released atomically.

The lock is a small JSON file: {"pid", "host", "pid_start", "time", "slurm_job"}. A local launch holds it
from before it writes the run dir until its ranks have exited; a Slurm launch leaves it behind naming the
job, which holds the run dir while it is queued or running. Whether a holder is still alive is read by
facts.py and judged by launcher.validate.lock (pure); this module only does the atomic file operations.

Taking is a hard link of a fully written temporary file onto launch.lock: it fails when the lock exists
and never exposes a half-written lock (O_EXCL would, between create and write). Taking over a stale lock
happens under flock on the stale file and only if it still says what was judged stale, so two launches
that both found the same stale lock cannot both win.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping, Optional


def process_start(pid: int) -> Optional[int]:
    """Start time of a process (clock ticks after boot, /proc/PID/stat field 22), to tell a live holder from a
    new process that reused its pid; None where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count fields after its last ')'
    return int(stat.rpartition(")")[2].split()[19])


def this_holder() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "pid_start": process_start(pid), "time": time.time(),
            "slurm_job": None}


def read_raw(lock: Path) -> Optional[str]:
    try:
        return lock.read_text()
    except FileNotFoundError:
        return None


def _temp(lock: Path, holder: Mapping[str, Any]) -> Path:
    tmp = lock.with_name(f".{lock.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(holder)) + "\n")
    return tmp


def take(lock: Path, holder: Mapping[str, Any], stale: Optional[str] = None) -> Optional[str]:
    """Take the lock for holder: None when taken, else the content of the lock that holds the run dir now.

    stale: the exact content of a lock judged stale, replaced only if it is still that content."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp(lock, holder)
    try:
        if stale is None:
            try:
                os.link(tmp, lock)
                return None
            except FileExistsError:
                return read_raw(lock) or ""
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:  # its holder released it meanwhile: take it as new
            return take(lock, holder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            now = read_raw(lock)
            if now != stale:
                return now if now is not None else take(lock, holder)
            os.replace(tmp, lock)
            return None
        finally:
            os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)


def _ours(lock: Path, holder: Mapping[str, Any]) -> bool:
    try:
        current = json.loads(read_raw(lock) or "null")
    except ValueError:
        return False
    return isinstance(current, dict) and all(current.get(k) == holder[k] for k in ("pid", "host", "time"))


def record_job(lock: Path, holder: Mapping[str, Any], job_id: str) -> None:
    """After sbatch: the queued job holds the run dir from now on (the lock names it)."""
    if _ours(lock, holder):
        tmp = _temp(lock, {**holder, "slurm_job": job_id})
        os.replace(tmp, lock)


def release(lock: Path, holder: Mapping[str, Any]) -> None:
    """Remove the lock if holder still holds it (a stale-lock takeover may have replaced it)."""
    if _ours(lock, holder):
        lock.unlink(missing_ok=True)
