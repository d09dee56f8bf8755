"""Trainer callbacks of the worker: rank-0 metrics (one JSON line per log step: step, epoch, loss, lr,
grad_norm, tokens/s and every other number the stage's trainer logs: rewards/accuracies, objective/kl, reward,
...; and per evaluation: step, epoch, eval_*), the attempt's train_begin event, each rank's peak memory, and
the resolved ds config."""
from __future__ import annotations

import ctypes
import json
import re
import numbers
import time
from pathlib import Path

from transformers import TrainerCallback

#: a key of the end-of-training log only (average loss, runtime): summary.json's, not a step's
END_OF_TRAINING = "train_loss"


class MetricsCallback(TrainerCallback):
    def __init__(self, path: Path):
        self.path = path
        self.last: tuple[float, int] | None = None
        self.history: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = (time.perf_counter(), state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or END_OF_TRAINING in logs:
            return
        # time: summary.json cuts metrics.jsonl (appended across attempts) into attempts by it
        at = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "time": round(time.time(), 3)}
        numbers_only = {k: v for k, v in logs.items() if isinstance(v, numbers.Number) and k != "epoch"}
        if any(k.startswith("eval_") for k in numbers_only):
            self._write({**at, **{k: v for k, v in numbers_only.items() if k.startswith("eval_")}})
            return
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        t0, tokens0 = self.last or (now, tokens)
        self.last = (now, tokens)
        row = {**at, "lr": numbers_only.pop("learning_rate", None), **numbers_only}
        if tokens:
            row |= {"tokens": tokens, "tokens_per_s": round((tokens - tokens0) / (now - t0), 1) if now > t0 else None}
        self.history.append(row)
        self._write(row)

    def _write(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


class AttemptBegins(TrainerCallback):
    """Rank 0 records the attempt's train_begin in attempts.jsonl once the checkpoint is loaded (its step is the
    resumed one), and removes a previous attempt's interrupted.json: this attempt continues from it."""

    def __init__(self, run, event: dict):
        self.run = run
        self.event = event

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from launcher.rundir import append_event

            self.run.interrupted.unlink(missing_ok=True)
            append_event(self.run, {"event": "train_begin", "time": time.time(), **self.event,
                                    "step": state.global_step})


class SaveResolvedDsConfig(TrainerCallback):
    """Rank 0 writes the DeepSpeed config the engine received: transformers and accelerate have filled
    every "auto" by the time training begins."""

    def __init__(self, path: Path, trainer):
        self.path = path
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.path.write_text(json.dumps(self.trainer.deepspeed.config, indent=2, default=str) + "\n")


class PeakMemory(TrainerCallback):
    """This rank's peak memory while training, after the engine is set up (not the load and sharding
    transients): the accelerator's max_memory_allocated on GPU, the resident-set high-water mark on CPU."""

    def __init__(self, device: str):
        self.device = device
        self.kind = {"cuda": "torch.cuda.max_memory_allocated while training",
                     "cpu": "resident set high-water mark (VmHWM) while training"}[device]
        self.peak_mb: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            # Freed setup buffers stay resident in malloc's arenas until trimmed; then reset VmHWM (Linux) to
            # the resident set of what training holds.
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")

    def on_train_end(self, args, state, control, **kwargs):
        if self.device == "cuda":
            import torch

            self.peak_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        else:
            status = Path("/proc/self/status").read_text()
            self.peak_mb = round(int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024, 1)
