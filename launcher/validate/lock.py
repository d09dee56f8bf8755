"""Who holds a run dir (RUN_DIR/launch.lock), judged from facts: free, held by a live launch or job, or stale.

Pure: facts.py read the lock, asked whether its pid lives (this host only) and asked scontrol for its job.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator, Optional

from launcher.facts import Facts, LockFacts
from launcher.schema import ClusterType
from launcher.validate.problem import Problem

#: Slurm job states after which a job no longer holds its run dir. SPECIAL_EXIT is not one: the job is held
#: in the queue after a requeue and can run again.
ENDED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                          "BOOT_FAIL", "DEADLINE", "PREEMPTED"})


def slurm_job_holds(state: Optional[str]) -> Optional[bool]:
    """A job in this scontrol state holds its run dir: queued, running, requeued, suspended, completing.
    False: ended, or unknown to Slurm (""); None: the state could not be asked."""
    if state is None:
        return None
    # scontrol may show a flag after the state (CANCELLED by 1000 is one word there; be lenient anyway)
    return bool(state) and state.split()[0].split("+")[0] not in ENDED_STATES


@dataclass(frozen=True)
class LockStatus:
    #: "free" (no lock), "held" (refuse), "stale" (take it over)
    kind: str
    #: the holder, in words
    holder: str = ""
    #: why it is stale, or why it counts as held
    why: str = ""


def _since(holder: Any) -> str:
    t = holder.get("time")
    if not isinstance(t, (int, float)):
        return ""
    return " since " + datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def lock_status(lock: LockFacts, hostname: str) -> LockStatus:
    if lock.raw is None:
        return LockStatus("free")
    h = lock.holder
    if h is None:
        return LockStatus("held", "an unreadable launch.lock", "it is not the launcher's JSON")
    job = h.get("slurm_job")
    if job:
        who = f"Slurm job {job}"
        holds = slurm_job_holds(lock.slurm_state)
        if holds is None:
            return LockStatus("held", who, f"its state could not be asked ({lock.slurm_error})")
        if holds:
            return LockStatus("held", f"{who} ({lock.slurm_state.split()[0]})")
        return LockStatus("stale", who, f"it has ended ({lock.slurm_state.split()[0]})" if lock.slurm_state
                          else "Slurm does not know it (it ended)")
    who = f"launch pid {h.get('pid')} on host {h.get('host')}{_since(h)}"
    if h.get("host") != hostname:
        return LockStatus("held", who, f"another host than this one ({hostname}): its pid cannot be checked here")
    if lock.pid_alive:
        return LockStatus("held", who)
    return LockStatus("stale", who, "that process is not running")


def owns_run_dir(cfg: Any) -> bool:
    """Whether this launch writes the run dir's shared files and holds its lock: a Slurm submission, or node 0
    of a multi-node run without Slurm (every node launches into the same output_dir on shared storage)."""
    return cfg.cluster.name != ClusterType.local or cfg.node_rank == 0


def check_lock(cfg: Any, facts: Facts) -> Iterator[Problem]:
    if not cfg.output_dir or not owns_run_dir(cfg):
        return
    status = lock_status(facts.output_dir.lock, facts.hostname)
    lock = f"{cfg.output_dir}/launch.lock"
    if status.kind == "held":
        why = f" ({status.why})" if status.why else ""
        yield Problem("output_dir", cfg.output_dir,
                      f"is held by {status.holder}{why}; wait for it to end or stop it, or use another output_dir. "
                      f"If it has ended, remove {lock}", error=not cfg.dry_run)
    elif status.kind == "stale":
        yield Problem("output_dir", cfg.output_dir,
                      f"{lock} names {status.holder}, but {status.why}: "
                      + ("a launch takes the run dir over" if cfg.dry_run else "taking the run dir over"),
                      error=False)
