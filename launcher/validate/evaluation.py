"""Evaluation while training: the keys that need an eval split and evaluations, accuracy for the stages it
means something in, the best checkpoint (transformers' save/eval schedule rule) and early stopping."""
from __future__ import annotations

from typing import Any, Iterator

from launcher.metrics.training import EVAL_STAGES, LM_STAGES, metric_key
from launcher.schema import TrainConfig
from launcher.validate.data import has_eval_split
from launcher.validate.problem import Problem, show

#: why next-token accuracy means nothing for a stage (its trainer logs its own accuracy, or none)
NO_ACCURACY = {
    "rm": "stage=rm scores whole answers (its eval_accuracy, chosen scored above rejected, is logged anyway)",
    "dpo": "stage=dpo compares answer pairs (it logs eval_rewards/accuracies anyway)",
    "kto": "stage=kto scores single answers as good or bad (it logs its rewards anyway)",
}


def check_evaluation(cfg: Any, facts: Any = None) -> Iterator[Problem]:
    t, stage = cfg.train, show(cfg.stage.name)
    defaults = TrainConfig()
    used = [k for k in ("compute_accuracy", "load_best_model_at_end", "early_stopping_steps")
            if getattr(t, k) not in (False, None)]
    if stage not in EVAL_STAGES:
        for k in used:
            yield Problem(f"train.{k}", getattr(t, k), f"stage={stage} evaluates nothing here (its metrics come "
                          f"from its own samples): drop train.{k}")
        return
    if not has_eval_split(cfg.data):
        for k in used + (["eval_steps"] if t.eval_steps is not None else []):
            yield Problem(f"train.{k}", getattr(t, k), "there is no eval split to evaluate on; set data.val_size "
                          "(e.g. 0.1) or data.eval_dataset (e.g. alpaca_demo), or drop it")
        return
    if t.compute_accuracy and stage not in LM_STAGES:
        yield Problem("train.compute_accuracy", True, f"next-token accuracy is for stage=pt and sft: "
                      f"{NO_ACCURACY[stage]}; drop train.compute_accuracy")
    picks_best = t.load_best_model_at_end or t.early_stopping_steps is not None
    if picks_best:
        yield from _check_metric(cfg, stage)
    else:
        for k in ("metric_for_best_model", "greater_is_better", "early_stopping_threshold"):
            if getattr(t, k) != getattr(defaults, k):
                yield Problem(f"train.{k}", getattr(t, k), "used only with train.load_best_model_at_end=true or "
                              "train.early_stopping_steps; set one, or drop it", error=False)
    if t.load_best_model_at_end:
        yield from _check_best_schedule(t)
    if t.early_stopping_steps is not None and t.eval_strategy == "no":
        yield Problem("train.early_stopping_steps", t.early_stopping_steps, "counts evaluations, and none runs "
                      "while training: set train.eval_strategy=steps (with train.eval_steps) or epoch")


def _check_metric(cfg: Any, stage: str) -> Iterator[Problem]:
    t = cfg.train
    key = metric_key(t.metric_for_best_model)
    if stage not in LM_STAGES and key != "eval_loss":
        yield Problem("train.metric_for_best_model", t.metric_for_best_model, f"stage={stage}'s trainer logs "
                      "eval_loss but neither eval_perplexity nor next-token accuracy; use eval_loss")
    elif key == "eval_accuracy" and not t.compute_accuracy:
        yield Problem("train.metric_for_best_model", t.metric_for_best_model, "eval_accuracy is logged only "
                      "with train.compute_accuracy=true; set it, or use eval_loss")


def _check_best_schedule(t: Any) -> Iterator[Problem]:
    """transformers' rule (TrainingArguments refuses otherwise, after the ranks have started): the best
    checkpoint is one of the saved ones, so saves fall on evaluations. Saves here are every save_steps."""
    if t.eval_strategy != "steps":
        yield Problem("train.eval_strategy", t.eval_strategy, "train.load_best_model_at_end needs evaluations on "
                      "the checkpoint schedule, and checkpoints are saved every train.save_steps steps: set "
                      "train.eval_strategy=steps (with train.eval_steps dividing train.save_steps)")
        return
    every = t.eval_steps or t.logging_steps
    if t.save_steps % every:
        yield Problem("train.save_steps", t.save_steps, f"train.load_best_model_at_end needs checkpoints on "
                      f"evaluation steps: a multiple of train.eval_steps={every} "
                      f"(e.g. train.save_steps={max(every, t.save_steps // every * every)}), or "
                      f"train.eval_steps dividing {t.save_steps}")
