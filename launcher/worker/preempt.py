"""Checkpoint-and-stop on request: a SIGTERM/SIGINT to the rank, or the request file the Slurm batch script
writes when its warning signal comes (preemption or time limit). Every rank checks both after each step and
all agree (all-reduce MAX), so they save the same step's checkpoint and stop together instead of
deadlocking in DDP.

Signals: the first one sets a flag (duplicates within DUPLICATE_S count once: Slurm signals every process
of a step and torchrun forwards it again); one arriving DUPLICATE_S or more after the first stops the rank at
once. Before training begins (loading) there is nothing to save: a signal ends the rank at once.
"""
from __future__ import annotations

import logging
import os
import signal
import time

import torch
import torch.distributed as dist
from transformers import TrainerCallback

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: a second signal sooner than this after the first is the same request, delivered twice
DUPLICATE_S = 2.0
#: the all-reduced value of a request from the file (a signal's is its number, always larger)
FILE_REQUEST = 1


def _exit_now(signum: int) -> None:
    log.warning("%s: stopping at once", signal.Signals(signum).name)
    logging.shutdown()
    os._exit(128 + signum)


class StopSignals:
    """The rank's SIGTERM/SIGINT handler. `arm()` when the training loop starts: from then on the first
    signal is a request to checkpoint and stop (`signum`); before it, a signal ends the rank at once."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
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
            _exit_now(signum)
        now = self.clock()
        if self.first_at is None:
            self.signum, self.first_at = signum, now
            log.warning("%s: saving a checkpoint at the next step boundary, then stopping (signal again after "
                        "%.0f s to stop at once)", signal.Signals(signum).name, DUPLICATE_S)
        elif now - self.first_at >= DUPLICATE_S:
            _exit_now(signum)


class PreemptionCallback(TrainerCallback):
    def __init__(self, signals: StopSignals, request_file: str | None = None):
        self.signals = signals
        self.request_file = request_file
        self.stopped_at: int | None = None
        #: the agreed request: a signal number, FILE_REQUEST, or None
        self.reason: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.signals.arm()

    def on_step_end(self, args, state, control, **kwargs):
        mine = self.signals.signum or (FILE_REQUEST if self.request_file and os.path.exists(self.request_file)
                                       else 0)
        flag = torch.tensor([float(mine)])
        if dist.is_available() and dist.is_initialized():
            if dist.get_backend() == "nccl":
                flag = flag.to(args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        agreed = int(flag.item())
        if agreed:
            self.reason = agreed
            log.warning("%s: saving step %d and stopping", self.describe(), state.global_step)
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    @property
    def by_signal(self) -> bool:
        return self.reason is not None and self.reason != FILE_REQUEST

    def describe(self) -> str:
        if self.reason == FILE_REQUEST:
            return f"checkpoint requested ({self.request_file})"
        return signal.Signals(self.reason).name if self.reason else "no request"
