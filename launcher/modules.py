"""How module names in the config (lora_target, additional_target, freeze_*) match a model's modules.

Pure (no torch): validate checks the names against a list built on the meta device (facts), the worker applies
them to the real model, with the same rules.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from launcher.schema import split_list

#: module classes peft's LoRA can adapt (transformers' Conv1D is GPT-2's linear layer)
LORA_LAYER_CLASSES = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D")


def name_matches(name: str, target: str) -> bool:
    """peft's rule for target_modules and modules_to_save: the qualified name, or a dotted suffix of it."""
    return name == target or name.endswith("." + target)


def trainable_layer_ids(num_layers: int, n: int) -> list[int]:
    """n > 0: the last n layers; n < 0: the first |n|."""
    return list(range(num_layers - n, num_layers)) if n > 0 else list(range(-n))


def is_trainable(param: str, layers: str, ids: Sequence[int], modules: Sequence[str], extra: Sequence[str]) -> bool:
    """Whether parameter `param` (a qualified name) trains under freeze tuning; modules match whole name
    components (inside the hidden layers `layers`: those of layers `ids`; outside: `extra`)."""
    parts = param.split(".")
    if param.startswith(layers + "."):
        index, *inner = param[len(layers) + 1:].split(".")
        return int(index) in ids and (list(modules) == ["all"] or any(m in inner[:-1] for m in modules))
    return any(m in parts[:-1] for m in extra)


def find_layers(modules: Iterable[tuple[str, str]], num_layers: int) -> Optional[str]:
    """The qualified name of the ModuleList holding the num_layers hidden layers (as the worker finds it)."""
    modules = list(modules)
    names = {name for name, _ in modules}
    for name, cls in modules:
        if cls == "ModuleList" and sum(f"{name}.{i}" in names for i in range(num_layers)) == num_layers \
                and f"{name}.{num_layers}" not in names:
            return name
    return None


def unique_leaves(names: Iterable[str]) -> list[str]:
    """Last name components, first occurrence order, without duplicates or layer indices."""
    out: dict[str, None] = {}
    for name in names:
        leaf = name.rsplit(".", 1)[-1]
        if name and not leaf.isdigit():
            out.setdefault(leaf)
    return list(out)


def configured_names(adapter: Any) -> dict[str, list[str]]:
    """The module names an adapter config refers to, by key (empty: nothing to check; `all` is no name)."""
    name = str(getattr(adapter.name, "value", adapter.name))
    keys: dict[str, Any] = {}
    if name in ("lora", "qlora"):
        keys = {"adapter.lora_target": adapter.lora_target, "adapter.additional_target": adapter.additional_target}
    elif name == "freeze":
        keys = {"adapter.freeze_trainable_modules": adapter.freeze_trainable_modules,
                "adapter.freeze_extra_modules": adapter.freeze_extra_modules}
    out = {key: [n for n in split_list(value) if n != "all"] for key, value in keys.items()}
    return {key: names for key, names in out.items() if names}
