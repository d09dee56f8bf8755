"""Stages: the trainer each stage builds. The worker skeleton (train.py: data, model, metrics, preemption,
resume, final/, summary.json) is the same for all; one module per family builds the trainer.

    pt, sft          transformers Trainer                           sft.py
    rm               TRL RewardTrainer                              rm.py
    dpo, kto         TRL DPOTrainer, KTOTrainer                     preference.py
    ppo, grpo, rloo  TRL PPOTrainer (trl.experimental.ppo),         online.py
                     GRPOTrainer, RLOOTrainer

Each module has build(StageInputs) -> trainer and METRICS: per stage, the logged metrics whose first and last
values summary.json keeps (e.g. rewards/accuracies, objective/kl); optionally finish(trainer, inputs) -> more
summary.json entries (called on every rank after training; rank 0 writes them).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

#: each stage's module, imported by stage_of() only: TRL (and wandb, which it imports) load for its stages alone
STAGES: dict[str, str] = {"pt": "sft", "sft": "sft", "rm": "rm", "dpo": "preference", "kto": "preference",
                          "ppo": "online", "grpo": "online", "rloo": "online"}
#: TRL's PPOTrainer.train() takes no checkpoint to resume from
CANNOT_RESUME = ("ppo",)


@dataclass
class StageInputs:
    """What the worker has built, for a stage's trainer."""
    cfg: Any
    tokenizer: Any
    model: Any
    #: launcher.data.cache.Prepared: train (and eval) rows in the stage's format
    data: Any
    #: transformers TrainingArguments kwargs (precision, device, logging, seed, ...) every stage's config takes
    args: dict
    callbacks: list
    #: resolved precision: fp32, fp16, bf16, pure_bf16
    precision: str


def stage_of(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{STAGES[name]}")
