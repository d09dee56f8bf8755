"""A collective that timed out (train.ddp_timeout): name the rank that is stuck, not only the one that waited.

The rank whose all-reduce timed out is rarely the culprit: another rank hangs (a deadlock, a stalled
filesystem, a stopped process) and never joins. After the timeout every live rank checks in through the
rendezvous store (not the process group, whose channels the timed-out collective left in an unknown state);
rank 0 waits briefly for the others and records the ranks that never check in as a "stuck" event in
attempts.jsonl (the restart loop reports that rank as the failed one); every live rank then exits at once,
without a teardown that would wait on the stuck rank.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import time

from launcher.rundir import RunDir, append_event

log = logging.getLogger(__name__)

#: exit status of a rank that gave up on a collective (a restart may help: not a fatal event)
EXIT_COLLECTIVE_TIMEOUT = 1
#: how long rank 0 waits for the other live ranks to check in (at most ddp_timeout)
DIAGNOSIS_TIMEOUT_S = 30
_TIMEOUT = re.compile(r"timed out|timeout", re.I)
#: the store key each live rank sets after a collective timed out
CHECK_IN = "launcher/alive-after-timeout/"


def is_collective_timeout(exc: BaseException) -> bool:
    """torch.distributed's errors (DistBackendError, DistError, gloo's RuntimeErrors) that say a wait timed out."""
    return isinstance(exc, RuntimeError) and bool(_TIMEOUT.search(str(exc)))


def stuck_ranks(rank: int, timeout_s: int) -> list[int] | None:
    """The ranks that do not check in within timeout_s (rank 0 knows them; the other ranks get []). None where
    torch.distributed is not set up."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    store, world = dist.distributed_c10d._get_default_store(), dist.get_world_size()
    store.set(f"{CHECK_IN}{rank}", "1")
    if rank != 0:
        return []
    deadline = time.monotonic() + timeout_s
    while True:
        absent = [r for r in range(world) if not store.check([f"{CHECK_IN}{r}"])]
        if not absent or time.monotonic() > deadline:
            return absent
        time.sleep(0.5)


def give_up(run: RunDir, rank: int, host: str, exc: BaseException, ddp_timeout: int) -> None:
    """Name the stuck rank(s), record them (rank 0), and end this rank at once."""
    stuck = stuck_ranks(rank, min(DIAGNOSIS_TIMEOUT_S, ddp_timeout))
    who = f"rank(s) {', '.join(map(str, stuck))} did not respond" if stuck else \
        "every rank is alive" if stuck == [] and rank == 0 else "rank 0 names the stuck rank(s)"
    message = (f"a collective timed out on rank {rank} ({host}) after train.ddp_timeout={ddp_timeout} s; {who}: "
               f"{str(exc).splitlines()[0][:300]}")
    log.error("%s", message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    if rank == 0:
        append_event(run, {"event": "stuck", "time": time.time(), "rank": rank, "host": host,
                           "stuck_ranks": stuck or [], "message": message})
    logging.shutdown()
    os._exit(EXIT_COLLECTIVE_TIMEOUT)
