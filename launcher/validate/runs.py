"""Earlier runs (or adapters) a config names: are they what the key expects, on the same base?"""
from __future__ import annotations

import os
from typing import Any, Iterator

from launcher.facts import RunRefFacts, is_local_path
from launcher.schema import AdapterType
from launcher.validate.problem import Problem

#: peft_type of the adapter_config.json each adapter continues from
PEFT_TYPES = {AdapterType.lora: "LORA", AdapterType.qlora: "LORA", AdapterType.prefix: "PREFIX_TUNING"}


def same_path(a: str, b: str) -> bool:
    norm = lambda p: os.path.normpath(os.path.abspath(os.path.expanduser(p)))  # noqa: E731
    return norm(a) == norm(b)


def _same_model(a: str, b: str) -> bool:
    return same_path(a, b) if is_local_path(a) and is_local_path(b) else a == b


def check_same_base(cfg: Any, key: str, path: str, run: RunRefFacts) -> Iterator[Problem]:
    """An earlier run a stage builds on must have trained on this run's base model (same weights, tokenizer)."""
    base = cfg.model.model_name_or_path
    if run.run_dir is not None and run.base_model is not None and not _same_model(run.base_model, base):
        yield Problem(key, path, f"that run trained on {run.base_model}, this one on model.model_name_or_path="
                      f"{base}; use the same base model (model.model_name_or_path={run.base_model}), or a run "
                      "trained on this one")
