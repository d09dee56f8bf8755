"""Every key against the range its schema field declares (schema.Allowed): one message per bad value."""
from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, Iterator

from launcher.schema import Allowed, LaunchConfig
from launcher.validate.problem import Problem


def declared_ranges(node: Any = LaunchConfig, prefix: str = "") -> dict[str, Allowed]:
    """Dotted key -> its Allowed, for every schema field that declares one."""
    out: dict[str, Allowed] = {}
    for f in fields(node):
        key = f"{prefix}{f.name}"
        if "allowed" in f.metadata:
            out[key] = f.metadata["allowed"]
        default = f.default_factory() if callable(f.default_factory) else None  # type: ignore[misc]
        if is_dataclass(default):
            out |= declared_ranges(type(default), f"{key}.")
    return out


def _lookup(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = cfg[part] if isinstance(cfg, dict) else getattr(cfg, part)
    return cfg


def check_ranges(cfg: Any) -> Iterator[Problem]:
    for key, rule in declared_ranges().items():
        value = _lookup(cfg, key)
        if value is None or rule.accepts(value):
            continue
        yield Problem(key, value, f"must be {rule.describe()}" + (f"; {rule.hint}" if rule.hint else ""))
