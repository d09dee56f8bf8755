"""P-Tuning v2 (peft prefix tuning): pre_seq_len trained key/value vectors prepended in every layer, the
model frozen; prefix_projection reparameterises them with a two-layer MLP, as ChatGLM2's ptuning does.

transformers 5.24 renamed the models' `past_key_values` argument to `cache` (the old name goes in 5.40),
while peft 0.21 still hands the prefix over as `past_key_values`. Training only warns, but generate()
passes both names and the model keeps its own empty `cache`: the prefix is silently ignored. use_cache_kwarg
makes peft's prefix reach the model under the new name in both paths.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from launcher.schema import split_list

log = logging.getLogger(__name__)


def prefix_kwargs(a: Any, hidden_size: int) -> dict[str, Any]:
    """peft PrefixTuningConfig(**kwargs) for the adapter config."""
    return {"num_virtual_tokens": a.pre_seq_len, "prefix_projection": bool(a.prefix_projection),
            "encoder_hidden_size": a.prefix_hidden_size or hidden_size}


def _cache_kwarg(module, args, kwargs):
    if "past_key_values" in kwargs:
        kwargs["cache"] = kwargs.pop("past_key_values")
    return args, kwargs


def use_cache_kwarg(peft_model):
    base = peft_model.get_base_model()
    base.register_forward_pre_hook(_cache_kwarg, with_kwargs=True)
    prepare = peft_model.base_model_prepare_inputs_for_generation

    def prepare_inputs(*args, **kwargs):
        # peft's prefix logic (inject the prefix into an empty cache, feed only new tokens) reads the old name
        inputs = prepare(*args, **kwargs)
        if "cache" in inputs:
            inputs["past_key_values"] = inputs.pop("cache")
        return inputs

    peft_model.base_model_prepare_inputs_for_generation = prepare_inputs
    return peft_model


def attach(model, cfg: Any):
    from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model

    a = cfg.adapter
    paths = split_list(a.adapter_name_or_path)
    if paths:
        log.info("prefix: continuing to train prefix %s", paths[0])
        return use_cache_kwarg(PeftModel.from_pretrained(model, paths[0], is_trainable=True))
    config = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, **prefix_kwargs(a, model.config.hidden_size))
    return use_cache_kwarg(get_peft_model(model, config))


def load(model, adapter_dir: Path):
    from peft import PeftModel

    return use_cache_kwarg(PeftModel.from_pretrained(model, str(adapter_dir)))
