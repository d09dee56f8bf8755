"""Freeze tuning (LLaMA-Factory's `freeze`): the last (or first) N hidden layers train, optionally only some
of their modules, plus extra modules outside the layers (embed_tokens, norm, lm_head); the rest is frozen."""
from __future__ import annotations

import logging
from typing import Any

from launcher.modules import is_trainable, trainable_layer_ids
from launcher.schema import split_list

log = logging.getLogger(__name__)


def hidden_layers(model) -> tuple[str, int]:
    """(qualified name, length) of the ModuleList holding the model's num_hidden_layers decoder layers."""
    import torch

    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return name, n
    raise ValueError(f"found no list of {n} hidden layers in {type(model).__name__}; use adapter=lora or full")


def attach(model, cfg: Any):
    a = cfg.adapter
    layers, n = hidden_layers(model)
    ids = trainable_layer_ids(n, a.freeze_trainable_layers)
    modules, extra = split_list(a.freeze_trainable_modules), split_list(a.freeze_extra_modules)
    names = [name for name, _ in model.named_parameters()]
    every_layer = list(range(n))
    for m in modules:
        if m != "all" and not any(is_trainable(p, layers, every_layer, [m], []) for p in names):
            raise ValueError(f"adapter.freeze_trainable_modules: no module named {m!r} in the hidden layers "
                             f"({layers}.N.*); e.g. {', '.join(names[1:5])}")
    for m in extra:
        if not any(is_trainable(p, layers, [], [], [m]) for p in names):
            raise ValueError(f"adapter.freeze_extra_modules: no module named {m!r} outside the hidden layers; "
                             f"they are {', '.join(p for p in names if not p.startswith(layers + '.'))}")
    for name, p in model.named_parameters():
        p.requires_grad_(is_trainable(name, layers, ids, modules, extra))
    log.info("freeze: training layers %s of %s (modules %s)%s", ids, layers, ",".join(modules),
             f" and {','.join(extra)}" if extra else "")
    return model
