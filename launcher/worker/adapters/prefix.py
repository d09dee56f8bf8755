"""P-Tuning v2 (peft prefix tuning): pre_seq_len trained key/value vectors prepended in every layer, the
model frozen; prefix_projection reparameterises them with a two-layer MLP, as ChatGLM2's ptuning does.

transformers 5.24 renamed the models' `past_key_values` argument to `cache` (the old name goes in 5.40),
while peft 0.21 still hands the prefix over as `past_key_values`. Training only warns, but generate()
passes both names and the model keeps its own empty `cache`: the prefix is silently ignored. use_cache_kwarg
makes peft's prefix reach the model under the new name in both paths.
"""
from __future__ import annotations

import contextlib
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
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    a = cfg.adapter
    paths = split_list(a.adapter_name_or_path)
    if paths:
        return use_cache_kwarg(continued(model, paths[0]))
    config = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, **prefix_kwargs(a, model.config.hidden_size))
    return use_cache_kwarg(get_peft_model(model, config))


def continued(model, adapter_dir: str):
    """A saved prefix, trainable again. peft refuses is_trainable for a prompt-learning adapter read from disk,
    so a fresh prefix model of the saved config gets the saved vectors. A saved prefix holds the vectors the
    projection MLP produced, not the MLP, so a projected prefix continues as plain vectors (no projection)."""
    from peft import PeftConfig, get_peft_model, load_peft_weights, set_peft_model_state_dict

    config = PeftConfig.from_pretrained(adapter_dir)
    if config.prefix_projection:
        log.warning("prefix: %s was trained with prefix_projection; its saved vectors continue training as "
                    "plain vectors (the projection MLP is not saved)", adapter_dir)
    config.inference_mode, config.prefix_projection = False, False
    log.info("prefix: continuing to train prefix %s", adapter_dir)
    peft_model = get_peft_model(model, config)
    set_peft_model_state_dict(peft_model, load_peft_weights(adapter_dir))
    return peft_model


def load(model, adapter_dir: Path):
    from peft import PeftModel

    return use_cache_kwarg(PeftModel.from_pretrained(model, str(adapter_dir)))



@contextlib.contextmanager
def prefix_saveable(trainer):
    """Under ZeRO-3 each rank holds a slice of the prefix encoder, and peft runs the encoder to save the prefix
    on the saving rank only, which would wait forever on the others. So every rank computes the prefix here,
    with the encoder gathered, and the save that follows (its own gathers included) uses that result."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not (trainer.is_deepspeed_enabled and trainer.deepspeed.zero_optimization_stage() == 3
            and getattr(model, "prompt_encoder", None) is not None):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.prompt_encoder.parameters()), modifier_rank=None):
        prefix = {name: model.get_prompt_embedding_to_save(name).detach().clone() for name in model.peft_config}
    model.get_prompt_embedding_to_save = lambda adapter_name: prefix[adapter_name]
    try:
        yield
    finally:
        del model.get_prompt_embedding_to_save  # back to the class's method
