"""Checkpoint-and-stop on request: a SIGTERM/SIGINT to the rank (launcher/worker/signals.py), or the request
file the Slurm batch script writes when its warning signal comes (preemption or time limit). Every rank checks
both after each step and all agree (all-reduce MAX), so they save the same step's checkpoint and stop together
instead of deadlocking in DDP."""
from __future__ import annotations

import logging
import os
import signal

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from launcher.worker.signals import StopSignals

log = logging.getLogger(__name__)

#: the all-reduced value of a request from the file (a signal's is its number, always larger)
FILE_REQUEST = 1


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
        # at the last step training ends anyway, with final/ and summary.json: nothing to resume
        if agreed and state.global_step < state.max_steps:
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
