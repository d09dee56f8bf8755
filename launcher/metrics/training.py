"""Eval metrics while training: their names, which stages log them, which way is better, and next-token
accuracy computed from argmax ids (never the full logits). Pure names and numpy only: validate reads the
tables, the worker the functions.
"""
from __future__ import annotations

import math
from typing import Any

#: the stages whose trainer (LauncherTrainer) logs eval_perplexity and, with compute_accuracy, eval_accuracy
LM_STAGES = ("pt", "sft")
#: the stages that evaluate at all (the online ones sample their own metrics)
EVAL_STAGES = ("pt", "sft", "rm", "dpo", "kto")
IGNORE_INDEX = -100


def metric_key(name: str) -> str:
    """metric_for_best_model as the Trainer looks it up: eval_ prefixed."""
    return name if name.startswith("eval_") else f"eval_{name}"


def greater_is_better(name: str, value: Any = None) -> bool:
    """value when set; else transformers' rule (lower is better for a loss), which would call perplexity
    higher-better: it is lower-better too."""
    if value is not None:
        return bool(value)
    return not metric_key(name).endswith(("loss", "perplexity"))


def perplexity(loss: float) -> float:
    """exp(eval_loss), inf where it overflows (a diverged run) rather than an exception."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def argmax_ids(logits: Any, labels: Any) -> Any:
    """Trainer's preprocess_logits_for_metrics: each batch's logits -> predicted token ids, so evaluation keeps
    batch x length ids instead of batch x length x vocabulary floats."""
    if isinstance(logits, (tuple, list)):  # (logits, past_key_values, ...)
        logits = logits[0]
    return logits.argmax(dim=-1)


def next_token_accuracy(predictions: Any, labels: Any) -> dict[str, float]:
    """Share of label tokens (labels != -100) whose preceding position predicted them: prediction t scores
    label t+1, as the causal LM loss. Rows padded across batches (-100) count nowhere."""
    import numpy as np

    predictions, labels = np.asarray(predictions), np.asarray(labels)
    predicted, target = predictions[:, :-1], labels[:, 1:]
    counted = target != IGNORE_INDEX
    total = int(counted.sum())
    return {"accuracy": float((predicted[counted] == target[counted]).sum() / total) if total else 0.0}


def compute_accuracy(prediction: Any) -> dict[str, float]:
    """Trainer's compute_metrics on an EvalPrediction of argmax ids."""
    return next_token_accuracy(prediction.predictions, prediction.label_ids)
