"""Keys the schema lacks: listed with the valid ones, before and after Hydra composes."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError
from omegaconf.errors import ValidationError as OmegaConfValidationError

from launcher.schema import LaunchConfig, schema_fields
from launcher.validate.problem import Problem


#: keys renamed because their old name misled: old dotted key -> (new dotted key, why)
RENAMED = {"stage.ppo_buffer_size": ("stage.ppo_num_mini_batches", "it counts the mini-batches each batch of rollouts "
                                     "is split into (TRL's num_mini_batches), not a buffer size")}


def _unknown_key(key: str, value: Any) -> Problem | None:
    if key in RENAMED:
        new, why = RENAMED[key]
        return Problem(key, value, f"renamed to {new}, since {why}; use {new}={value}")
    parent, _, leaf = key.rpartition(".")
    valid = schema_fields(parent)
    if valid is None or leaf in valid:
        return None
    where = f"in {parent}" if parent else "at the top level"
    return Problem(key, value, f"unknown key {where}; valid keys: {', '.join(valid)}")


def unknown_override_keys(overrides: Sequence[str]) -> list[Problem]:
    """Overrides naming a key the schema lacks, each with the valid keys listed (before Hydra composes)."""
    problems = []
    for o in overrides:
        key, eq, value = o.lstrip("+").partition("=")
        if o.startswith(("-", "~")) or not eq or "/" in key or key.split(".")[0] in ("hydra", "recipe"):
            continue
        problem = _unknown_key(key, value)
        if problem:
            problems.append(problem)
    return problems


def check_schema(cfg: Any) -> Iterator[Problem]:
    if isinstance(cfg, LaunchConfig):  # a typed config (OmegaConf.to_object) fits the schema by construction
        return
    # Hydra's `+key=value` appends even to a structured config: check against the schema once more.
    try:
        OmegaConf.merge(OmegaConf.structured(LaunchConfig), OmegaConf.to_container(cfg))
    except (ConfigKeyError, OmegaConfValidationError) as e:
        yield _unknown_key(e.full_key, "?") or Problem(e.full_key, "?", f"does not fit the schema: {e.msg}")
