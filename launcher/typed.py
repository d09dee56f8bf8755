"""What the user typed on the command line, and the rule that a typed key is never silently overridden.

A value derived from another key (gradient_accumulation_steps from global_batch_size, adapter.lora_target
from model.lora_target) could drop a typed value without a word. settle_typed() lets the typed key win over a
derived one that a recipe or group set, and says so; two typed keys that disagree are validate's error
(validate/typed.py). Pure: config and override strings in, a new config and notes out.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

from omegaconf import OmegaConf

from launcher.topology import world_size
from launcher.validate.problem import Problem

#: keys whose default is another key's value (schema interpolations): target -> source
INTERPOLATED = {"adapter.lora_target": "model.lora_target", "data.template": "model.template"}


def typed_keys(overrides: Iterable[str]) -> frozenset[str]:
    """Dotted keys (and group names: `adapter` for adapter=lora) the overrides set; removals (~key) excluded."""
    keys = set()
    for o in overrides:
        key, eq, _ = str(o).partition("=")
        if eq and not key.startswith("~"):
            keys.add(key.lstrip("+"))
    return frozenset(keys)


def _get(cfg: Any, key: str) -> Any:
    return OmegaConf.select(cfg, key)


def settle_typed(cfg: Any, typed: frozenset[str]) -> tuple[Any, list[Problem]]:
    """A copy of cfg where a typed key wins over a value derived from it that it would otherwise lose to,
    and one note per such decision (printed; the launch goes on)."""
    notes: list[Problem] = []
    changes: dict[str, Any] = {}
    accum = "train.gradient_accumulation_steps"
    if accum in typed and "global_batch_size" not in typed and cfg.global_batch_size is not None:
        t = cfg.train
        world = world_size(cfg)
        changes["global_batch_size"] = None
        notes.append(Problem(accum, t.gradient_accumulation_steps, f"typed, so it wins over global_batch_size="
                             f"{cfg.global_batch_size} (set by the recipe), which would derive it: the global batch "
                             f"is now {t.per_device_train_batch_size} x {t.gradient_accumulation_steps} x world "
                             f"{world} = {t.per_device_train_batch_size * t.gradient_accumulation_steps * world}; "
                             f"type global_batch_size=N instead to keep a global batch", error=False))
    for target, source in INTERPOLATED.items():
        value = _get(cfg, source)
        if source in typed and target not in typed and _get(cfg, target) != value:
            changes[target] = value
            notes.append(Problem(source, value, f"typed, so it wins over {target}={_get(cfg, target)} set by the "
                                 f"recipe or group: {target}={value}", error=False))
    if not changes:
        return cfg, notes
    cfg = copy.deepcopy(cfg)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg, notes
