"""The rank's SIGTERM/SIGINT handling (installed first thing, before torch is imported).

The first signal sets a flag that PreemptionCallback turns into "save this step's checkpoint and stop" on
every rank; duplicates within DUPLICATE_S count once (Slurm signals every process of a step and torchrun
forwards it again); a signal DUPLICATE_S or more after the first stops the rank at once. Before the training
loop begins (loading) there is nothing to save: a signal ends the rank at once with 128 + its number.
"""
from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger("launcher.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: a second signal sooner than this after the first is the same request, delivered twice
DUPLICATE_S = 2.0


def _exit_now(signum: int) -> None:
    log.warning("%s: stopping at once", signal.Signals(signum).name)
    logging.shutdown()
    os._exit(128 + signum)


class StopSignals:
    """The rank's SIGTERM/SIGINT handler. `arm()` when the training loop starts: from then on the first
    signal is a request to checkpoint and stop (`signum`); before it, a signal ends the rank at once."""

    def __init__(self, clock=time.monotonic, exit_now=_exit_now):
        self.clock, self.exit_now = clock, exit_now
        self.armed = False
        self.signum: int | None = None
        self.first_at: float | None = None

    def install(self) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, self.handle)

    def arm(self) -> None:
        self.armed = True

    def handle(self, signum: int, _frame=None) -> None:
        if not self.armed:
            self.exit_now(signum)
            return
        now = self.clock()
        if self.first_at is None:
            self.signum, self.first_at = signum, now
            log.warning("%s: saving a checkpoint at the next step boundary, then stopping (signal again after "
                        "%.0f s to stop at once)", signal.Signals(signum).name, DUPLICATE_S)
        elif now - self.first_at >= DUPLICATE_S:
            self.exit_now(signum)
