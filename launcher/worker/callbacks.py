"""Trainer callbacks of the worker: rank-0 metrics (one JSON line per log step and per evaluation), each
rank's peak memory, and the resolved ds config."""
from __future__ import annotations

import ctypes
import json
import re
import time
from pathlib import Path

from transformers import TrainerCallback


class MetricsCallback(TrainerCallback):
    def __init__(self, path: Path):
        self.path = path
        self.last: tuple[float, int] | None = None
        self.history: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = (time.perf_counter(), state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "eval_loss" in logs:
            self._write({"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                         "eval_loss": logs["eval_loss"]})
        if "loss" not in logs:
            return
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        t0, tokens0 = self.last or (now, tokens)
        self.last = (now, tokens)
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "loss": logs["loss"],
               "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
               "tokens": tokens, "tokens_per_s": round((tokens - tokens0) / (now - t0), 1) if now > t0 else None}
        self.history.append(row)
        self._write(row)

    def _write(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


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
