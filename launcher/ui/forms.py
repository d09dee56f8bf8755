"""The compose form, read from the schema: each field's type, choices, default, `#:` help and allowed() range.

Pure: nothing here composes or validates; the page shows the composed value of each field (checks.py) and types
an override only for what the user changed.
"""
from __future__ import annotations

import inspect
import re
import typing
from dataclasses import MISSING, fields, is_dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from launcher import PROJECT_ROOT, schema

#: config groups offered as dropdowns, in conf/launch.yaml's order (recipe last: it picks groups itself)
GROUPS = ("recipe", "model", "stage", "adapter", "precision", "data", "backend", "zero", "cluster", "logger")

#: the common keys, by section; anything else goes into the free "more overrides" box
SECTIONS = (
    ("Run", ("name", "gpus", "nodes", "device", "seed", "max_restarts")),
    ("Model and data", ("model.model_name_or_path", "model.template", "data.dataset", "data.dataset_dir",
                        "data.cutoff_len", "data.max_samples", "data.val_size", "data.packing")),
    ("Training", ("train.per_device_train_batch_size", "train.gradient_accumulation_steps", "global_batch_size",
                  "train.learning_rate", "train.num_train_epochs", "train.max_steps", "train.lr_scheduler_type",
                  "train.warmup_steps", "train.logging_steps", "train.save_steps", "train.eval_strategy")),
    ("Adapter", ("adapter.lora_rank", "adapter.lora_alpha", "adapter.lora_dropout", "adapter.lora_target")),
    ("Slurm (cluster=slurm)", ("cluster.partition", "cluster.time", "cluster.account", "cluster.qos",
                               "cluster.gpus_per_node", "cluster.cpus_per_task", "cluster.mem")),
)


def group_options(conf_dir: Path = PROJECT_ROOT / "conf") -> dict[str, list[str]]:
    return {g: sorted(p.stem for p in (conf_dir / g).glob("*.yaml")) for g in GROUPS}


@lru_cache(maxsize=None)
def help_comments(cls: type) -> dict[str, str]:
    """{field: its `#:` comment lines} of a schema dataclass, read from its source (the schema's one help text)."""
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        s = line.strip()
        if s.startswith("#:"):
            pending.append(s[2:].strip())
            continue
        m = re.match(r"(\w+)\s*:", s)
        if m and pending:
            out[m.group(1)] = " ".join(pending)
        pending = []
    return out


def _field(path: str) -> tuple[type, Any]:
    """(owning dataclass, dataclasses.Field) of a dotted schema key."""
    node: Any = schema.LaunchConfig
    *parents, leaf = path.split(".")
    for part in parents:
        node = typing.get_type_hints(node)[part]
    return node, next(f for f in fields(node) if f.name == leaf)


def describe(path: str) -> dict[str, Any]:
    """One form field: key, kind (bool, choice, number, text), choices, default, help, allowed range."""
    cls, f = _field(path)
    hint = typing.get_type_hints(cls)[f.name]
    optional = type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    allowed: Optional[schema.Allowed] = f.metadata.get("allowed")
    choices: list[str] = []
    if isinstance(base, type) and issubclass(base, Enum):
        kind, choices = "choice", [m.value for m in base]
    elif base is bool:
        kind, choices = "choice", ["true", "false"]
    elif allowed is not None and allowed.choices:
        kind, choices = "choice", [str(c) for c in allowed.choices]
    elif base in (int, float):
        kind = "number"
    else:
        kind = "text"
    if optional and choices:
        choices.append("null")
    default = f.default if f.default is not MISSING else None
    if isinstance(default, Enum):
        default = default.value
    return {"key": path, "kind": kind, "choices": choices,
            "default": None if default is MISSING or is_dataclass(default) else default,
            "help": help_comments(cls).get(f.name, ""),
            "allowed": (allowed.describe() + (f"; {allowed.hint}" if allowed.hint else "")) if allowed else ""}


def form() -> dict[str, Any]:
    return {"groups": group_options(),
            "sections": [{"title": t, "fields": [describe(k) for k in keys]} for t, keys in SECTIONS]}


def field_keys() -> list[str]:
    return [k for _, keys in SECTIONS for k in keys]
