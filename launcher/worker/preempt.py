"""Checkpoint-and-stop on request: the Slurm batch script writes a request file when the warning signal
comes (preemption or time limit); every rank checks it after each step and all agree (all-reduce MAX),
so they save the same step's checkpoint and stop together instead of deadlocking in DDP."""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from transformers import TrainerCallback

log = logging.getLogger(__name__)


class PreemptionCallback(TrainerCallback):
    def __init__(self, request_file: str):
        self.request_file = request_file
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        flag = torch.tensor([1.0 if os.path.exists(self.request_file) else 0.0])
        if dist.is_available() and dist.is_initialized():
            if dist.get_backend() == "nccl":
                flag = flag.to(args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            log.warning("checkpoint requested (%s): saving step %d and stopping", self.request_file,
                        state.global_step)
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control
