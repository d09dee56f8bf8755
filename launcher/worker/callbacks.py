"""Rank-0 metrics: one JSON line per log step (step, epoch, loss, lr, grad_norm, tokens/s and every other number
the stage's trainer logs: rewards/accuracies, objective/kl, reward, ...) and per evaluation (step, epoch,
eval_*)."""
from __future__ import annotations

import json
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
        at = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
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
