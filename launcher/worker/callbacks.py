"""Trainer callbacks of the worker: rank-0 metrics (one JSON line per log step) and the resolved ds config."""
from __future__ import annotations

import json
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
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        t0, tokens0 = self.last or (now, tokens)
        self.last = (now, tokens)
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "loss": logs["loss"],
               "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
               "tokens": tokens, "tokens_per_s": round((tokens - tokens0) / (now - t0), 1) if now > t0 else None}
        self.history.append(row)
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
