"""A local model directory: the files from_pretrained needs, and the module names the adapter keys refer to
(checked against the model built from config.json on the meta device, see launcher/meta_model.py)."""
from __future__ import annotations

from typing import Any, Iterator

from launcher.facts import Facts
from launcher.meta_model import ModuleFacts
from launcher.modules import LORA_LAYER_CLASSES, configured_names, find_layers, is_trainable, name_matches, \
    unique_leaves
from launcher.schema import AdapterType
from launcher.validate.problem import Problem

KEY = "model.model_name_or_path"


def check_model_dir(cfg: Any, facts: Facts) -> Iterator[Problem]:
    d = facts.model_dir
    if d is None:
        return
    name = cfg.model.model_name_or_path
    if not d.config:
        yield Problem(KEY, name, "has no config.json; give the directory a model was saved to (save_pretrained), "
                      "or a hub id")
    if not d.tokenizer:
        yield Problem(KEY, name, "has no tokenizer files (tokenizer.json, tokenizer.model or vocab.json/vocab.txt); "
                      "copy them (with tokenizer_config.json) from the base model's directory")
    if not d.weights:
        yield Problem(KEY, name, "has no weights (*.safetensors, *.bin or an index of them); give a directory "
                      "with the model's weights")
    elif d.missing_shards:
        yield Problem(KEY, name, f"its weight index names shards that are missing: {', '.join(d.missing_shards)}; "
                      "copy them there")
    yield from check_module_names(cfg, facts.model_modules, facts.model_config.get("num_hidden_layers"))


def check_module_names(cfg: Any, mods: ModuleFacts | None, num_layers: Any) -> Iterator[Problem]:
    names = configured_names(cfg.adapter)
    if mods is None or not names:
        return
    if mods.error:
        yield Problem(KEY, cfg.model.model_name_or_path, f"could not be built from config.json on the meta device "
                      f"({mods.error}), so {', '.join(names)} went unchecked", error=False)
        return
    if "adapter.lora_target" in names:
        yield from _check_lora_targets(names["adapter.lora_target"], mods)
    if "adapter.additional_target" in names:
        bad = [t for t in names["adapter.additional_target"] if not any(name_matches(n, t) for n, _ in mods.modules)]
        if bad:
            yield Problem("adapter.additional_target", ",".join(bad), f"no such module in the model; its modules "
                          f"outside the hidden layers are {', '.join(_outer_modules(mods))}")
    if cfg.adapter.name != AdapterType.freeze:
        return
    layers = find_layers(mods.modules, int(num_layers or 0)) if num_layers else None
    if layers is None:
        yield Problem("adapter", "freeze", f"found no list of {num_layers} hidden layers in the model; "
                      "use adapter=lora or full")
        return
    every = list(range(int(num_layers)))
    inner = names.get("adapter.freeze_trainable_modules", [])
    bad = [m for m in inner if not any(is_trainable(p, layers, every, [m], []) for p in mods.params)]
    if bad:
        inside = unique_leaves(c for p in mods.params if p.startswith(f"{layers}.0.")
                               for c in p[len(layers) + 3:].split(".")[:-1])
        yield Problem("adapter.freeze_trainable_modules", ",".join(bad), f"no such module in the hidden layers "
                      f"({layers}.N.*); they hold {', '.join(inside)}, or use `all`")
    extra = names.get("adapter.freeze_extra_modules", [])
    bad = [m for m in extra if not any(is_trainable(p, layers, [], [], [m]) for p in mods.params)]
    if bad:
        outer = unique_leaves(p.rpartition(".")[0] for p in mods.params if not p.startswith(layers + "."))
        yield Problem("adapter.freeze_extra_modules", ",".join(bad), f"no such module outside the hidden layers; "
                      f"they are {', '.join(outer)}")


def _check_lora_targets(targets: list[str], mods: ModuleFacts) -> Iterator[Problem]:
    adaptable = [n for n, cls in mods.modules if cls in LORA_LAYER_CLASSES]
    missing, inside = [], {}
    for t in targets:
        if any(name_matches(n, t) for n in adaptable):
            continue
        matched = [n for n, _ in mods.modules if name_matches(n, t)]
        if matched:
            inside[t] = unique_leaves(n for n in adaptable if n.startswith(matched[0] + "."))
        else:
            missing.append(t)
    if missing:
        yield Problem("adapter.lora_target", ",".join(missing), f"no such module in the model; its linear and "
                      f"embedding layers are {', '.join(unique_leaves(adaptable))} (or `all`: every linear layer "
                      "but the head)")
    for t, layers in inside.items():
        yield Problem("adapter.lora_target", t, "LoRA adapts linear/embedding/conv layers only, and this module is "
                      f"none; name the layers inside it: {','.join(layers) or '(none)'}")


def _outer_modules(mods: ModuleFacts) -> list[str]:
    return unique_leaves(n for n, _ in mods.modules if ".layers." not in f".{n}." and not n.endswith(".layers"))
