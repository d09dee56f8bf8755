"""Rank-0 metrics: one JSON line per log step (step, loss, lr, epoch, tokens/s) and per evaluation
(step, epoch, eval_loss)."""
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
