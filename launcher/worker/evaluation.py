"""Evaluation while training, on top of transformers' Trainer: the best checkpoint (load_best_model_at_end) and
early stopping, and what summary.json records of them. The metrics themselves: launcher/metrics/training.py."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
from transformers import EarlyStoppingCallback, TrainerCallback

from launcher.checkpoints import checkpoint_step
from launcher.metrics.training import greater_is_better, metric_key

log = logging.getLogger(__name__)


def best_model_kwargs(t: Any) -> dict:
    """TrainingArguments for the best checkpoint: the metric is set for early stopping too (its patience
    compares against the Trainer's best_metric, which the Trainer tracks only with a metric)."""
    if not (t.load_best_model_at_end or t.early_stopping_steps is not None):
        return {}
    return {"load_best_model_at_end": bool(t.load_best_model_at_end),
            "metric_for_best_model": metric_key(t.metric_for_best_model),
            "greater_is_better": greater_is_better(t.metric_for_best_model, t.greater_is_better)}


class SaveNewBest(TrainerCallback):
    """load_best_model_at_end: an evaluation that beats the best so far is saved at once, even between
    save_steps, so the checkpoint loaded at the end is the best evaluation's and not the best one that happened
    to fall on a save step. Eval metrics are gathered from all ranks: every rank decides the same."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(args.metric_for_best_model)
        if not args.load_best_model_at_end or value is None:
            return
        better = np.greater if args.greater_is_better else np.less
        if state.best_metric is None or better(value, state.best_metric):
            control.should_save = True


class EarlyStopping(EarlyStoppingCallback):
    """transformers' patience count, which records the step it stopped at. Without load_best_model_at_end the
    run ends with the weights of that step (transformers warns about it; here that is what was asked for)."""

    def __init__(self, patience: int, threshold: float):
        super().__init__(early_stopping_patience=patience, early_stopping_threshold=threshold)
        self.stopped_at: Optional[int] = None
        self.training = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True  # validate checked the metric and the eval strategy

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False  # the final evaluation after training counts nowhere

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        if not self.training:
            return
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if self.early_stopping_patience_counter >= self.early_stopping_patience and self.stopped_at is None:
            self.stopped_at = state.global_step
            log.info("early stopping at step %d: %s did not improve by more than %g in %d evaluations",
                     state.global_step, args.metric_for_best_model, self.early_stopping_threshold,
                     self.early_stopping_patience)


def callbacks(t: Any) -> list:
    out: list = []
    if t.load_best_model_at_end:
        out.append(SaveNewBest())
    if t.early_stopping_steps is not None:
        out.append(EarlyStopping(t.early_stopping_steps, t.early_stopping_threshold))
    return out


def best_step(trainer) -> Optional[int]:
    """The step whose weights final/ holds under load_best_model_at_end (None: off, or no evaluation saved)."""
    best = trainer.state.best_model_checkpoint
    return checkpoint_step(best) if trainer.args.load_best_model_at_end and best else None


def summary_entries(trainer, stop: Optional[EarlyStopping]) -> dict:
    """summary.json's best checkpoint (step, metric, its value) and early stop step."""
    out: dict = {}
    if trainer.args.load_best_model_at_end:
        step, metric = best_step(trainer), trainer.args.metric_for_best_model
        entry = next((h for h in trainer.state.log_history if h.get("step") == step and metric in h), {})
        out["best"] = {"step": step, "metric": metric, "value": entry.get(metric),
                       "checkpoint": trainer.state.best_model_checkpoint}
    if stop is not None:
        out["early_stopped_at"] = stop.stopped_at
    return out


def copy_best_prefix(trainer, final: Path) -> None:
    """Rank 0, after final/ is saved: a prefix run's best checkpoint's adapter files replace the last weights'
    (LauncherTrainer._load_best_model)."""
    best = getattr(trainer, "best_prefix_checkpoint", None)
    if best is None:
        return
    for f in Path(best).glob("adapter_*"):
        shutil.copy2(f, final / f.name)
    log.info("final/: the adapter of the best checkpoint %s", best)
