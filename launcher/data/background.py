"""Tokenizing while the rank loads: local rank 0 forks a child that builds the data cache (cache.locate) and
reports the entry through a pipe; the rank goes on with its imports and its model, then reads the cache.

A process, not a thread: rendering templates and building labels is Python that holds the GIL, and so are
the imports and most of the model loading it overlaps with. The child is forked before the model exists (a
small copy-on-write image) and touches no device. It dies with the rank (PR_SET_PDEATHSIG) and leaves the
stops to it: a signal that reaches it ends it at once, and the cache it was building stays unpublished (built
in a temp dir, renamed into place when whole), so the next launch builds it again. Without a core to spare
(spare_core) the rank tokenizes itself, after loading.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import traceback
from typing import Any, Optional

from launcher.data.cache import Located, locate
from launcher.data.registry import DataError
from launcher.pdeathsig import die_with_parent

log = logging.getLogger("launcher.data")


class Background:
    """The child building the cache: `located()` waits for it and returns the entry, or raises its error."""

    def __init__(self, pid: int, fd: int):
        self.pid, self.fd = pid, fd
        self.status: Optional[int] = None

    def located(self) -> Located:
        reading, self.fd = os.fdopen(self.fd, "rb"), None
        with reading:
            raw = reading.read()  # until the child exits (its end of the pipe closes)
        _, self.status = os.waitpid(self.pid, 0)
        report = json.loads(raw) if raw else {}
        if "located" in report:
            return Located(**report["located"])
        if "data_error" in report:
            raise DataError(report["data_error"])
        if "traceback" in report:
            raise RuntimeError(f"preparing the data failed (in the rank's data process {self.pid}):\n"
                               f"{report['traceback']}")
        raise RuntimeError(f"the rank's data process {self.pid} ended ({describe(self.status)}) before it "
                           "reported; see the rank log")

    def cancel(self) -> None:
        """Ends the child if the rank gives up before reading it (an error while loading)."""
        if self.status is not None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
            _, self.status = os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def describe(status: Optional[int]) -> str:
    if status is None:
        return "unknown status"
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def spare_core(ranks_here: int) -> bool:
    """Whether this node has a core that none of its ranks uses: otherwise the child would only slow the
    ranks' loading by as much as it saves (measured: 2 ranks on 2 cores start 5% later with it)."""
    return len(os.sched_getaffinity(0)) > ranks_here


def start(cfg: Any, tokenizer, *, rank: int, run_dir: Optional[str]) -> Background:
    """Forks the child that builds (or finds) the cache of cfg's data as local rank 0 does."""
    import datasets  # noqa: F401 - imported once, before the fork: the child builds with it, the rank reads with it

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _child(write, cfg, tokenizer, rank, run_dir)  # never returns
    os.close(write)
    log.info("data: preparing in process %d while this rank loads", pid)
    return Background(pid, read)


def _child(fd: int, cfg: Any, tokenizer, rank: int, run_dir: Optional[str]) -> None:
    code = 1
    try:
        parent = os.getppid()
        die_with_parent()
        for s in (signal.SIGTERM, signal.SIGINT):  # not the rank's handler: this process has nothing to save
            signal.signal(s, signal.SIG_DFL)
        if os.getppid() != parent:  # the rank ended before the request took effect
            os._exit(128 + signal.SIGTERM)
        report = {"located": dataclasses.asdict(locate(cfg, tokenizer, local_rank=0, rank=rank, run_dir=run_dir))}
        code = 0
    except DataError as e:
        report = {"data_error": str(e)}
    except BaseException:  # noqa: BLE001 - reported to the rank, which raises it
        report = {"traceback": traceback.format_exc()}
    try:
        data = json.dumps(report).encode()
        while data:
            data = data[os.write(fd, data):]
    finally:
        logging.shutdown()  # flushes the rank log's lines written here
        sys.stderr.flush()
        # _exit: none of the rank's atexit handlers or finally blocks (its process group, its files) run here
        os._exit(code)
