"""Tokenizer and base model (precision, attention kernel, RoPE scaling, quantization) from the resolved
config; the adapter goes on in launcher/worker/adapters/. Used by the worker, launch-export and launch-chat
(a finished run is opened by launcher.inference, which imports nothing from here).
"""
from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from launcher.inference import TrainedRun, open_run
from launcher.precision import COMPUTE_DTYPES, DTYPE_NAMES, auto_precision
from launcher.schema import split_list
from launcher.worker.adapters import attach_adapter, inference_adapter, load_adapter

log = logging.getLogger(__name__)

#: weight dtype name -> torch dtype
DTYPES = {name: getattr(torch, torch_name) for name, torch_name in DTYPE_NAMES.items()}


def resolve_precision(name: str, device: str) -> str:
    """`auto`: bf16 on a GPU that computes it natively, else fp16 on GPU; fp32 on CPU."""
    if name != "auto" or device == "cpu":
        return auto_precision(name, device, native_bf16=False)
    # A V100 or T4 "supports" bf16 by emulation, several times slower than fp16: native support only.
    native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return auto_precision(name, device, native_bf16=native)


def load_dtype(precision: str, adapter: str) -> torch.dtype:
    """Weights' dtype at load. pure_bf16: bf16 throughout. Mixed precision: full fine-tuning keeps fp32
    master weights; otherwise the frozen part loads in the compute dtype and what trains is upcast to fp32
    after the adapter is attached (launcher.worker.adapters)."""
    if precision == "pure_bf16":
        return torch.bfloat16
    return DTYPES[COMPUTE_DTYPES.get(precision, "fp32")] if adapter != "full" else torch.float32


def quantization_kwargs(adapter: Any, precision: str) -> Optional[dict[str, Any]]:
    """transformers' BitsAndBytesConfig(**kwargs) for the adapter config, or None (not quantized)."""
    bits = adapter.quantization_bit
    if bits is None:
        return None
    if bits == 8:
        return {"load_in_8bit": True}
    compute = DTYPE_NAMES[COMPUTE_DTYPES.get(precision, "fp32")]
    return {"load_in_4bit": True, "bnb_4bit_quant_type": str(getattr(adapter.quantization_type, "value",
                                                                      adapter.quantization_type)),
            "bnb_4bit_use_double_quant": bool(adapter.double_quantization), "bnb_4bit_compute_dtype": compute}


def rope_parameters(current: Mapping[str, Any], kind: str, factor: Optional[float], cutoff_len: int,
                    max_position_embeddings: int) -> Optional[dict[str, Any]]:
    """The model config's rope_parameters with scaling `kind`, or None when there is nothing to scale.
    LLaMA-Factory's policy: factor = ceil(cutoff_len / max_position_embeddings) unless given."""
    if factor is None:
        if cutoff_len <= max_position_embeddings:
            return None
        factor = float(math.ceil(cutoff_len / max_position_embeddings))
    params = {**current, "rope_type": kind, "factor": float(factor)}
    if kind in ("yarn", "llama3"):
        params["original_max_position_embeddings"] = max_position_embeddings
    if kind == "llama3":
        params |= {"low_freq_factor": 1.0, "high_freq_factor": 4.0}
    return params


def load_tokenizer(cfg: Any, path: Optional[str] = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path or cfg.model.model_name_or_path,
                                        trust_remote_code=cfg.model.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def is_reward_model(cfg: Any) -> bool:
    """A stage=rm run trains (and saves) a sequence classifier with one output, the reward."""
    return str(getattr(cfg.stage.name, "value", cfg.stage.name)) == "rm"


def load_base(cfg: Any, dtype: torch.dtype, *, path: Optional[str] = None,
              quantization: Optional[Mapping[str, Any]] = None, device_index: int = 0):
    """The model at `path` (default: the config's base) with the config's attention kernel and RoPE scaling,
    quantized by bitsandbytes onto GPU `device_index` when `quantization` is given; for stage=rm with a
    one-output score head (newly initialised on a base model: seed first, so every rank builds the same)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, BitsAndBytesConfig

    m = cfg.model
    path = path or m.model_name_or_path
    config = AutoConfig.from_pretrained(path, trust_remote_code=m.trust_remote_code)
    if m.rope_scaling is not None:
        kind = str(getattr(m.rope_scaling, "value", m.rope_scaling))
        params = rope_parameters(getattr(config, "rope_parameters", None) or {}, kind, m.rope_factor,
                                 cfg.data.cutoff_len, config.max_position_embeddings)
        if params is None:
            log.warning("rope_scaling=%s: cutoff_len %d fits max_position_embeddings %d; RoPE is not scaled", kind,
                        cfg.data.cutoff_len, config.max_position_embeddings)
        else:
            config.rope_parameters = params
            log.info("rope_scaling: %s", params)
    kwargs: dict[str, Any] = {}
    if quantization:
        kwargs = {"quantization_config": BitsAndBytesConfig(**quantization), "device_map": {"": device_index}}
        log.info("quantized base: %s", dict(quantization))
    auto = AutoModelForCausalLM
    if is_reward_model(cfg):
        auto, config.num_labels = AutoModelForSequenceClassification, 1
    return auto.from_pretrained(path, config=config, dtype=dtype, trust_remote_code=m.trust_remote_code,
                                attn_implementation=str(getattr(m.attn, "value", m.attn)), **kwargs)


@contextlib.contextmanager
def whole_on_this_rank():
    """Load models whole on this rank even under a ZeRO-3 ds config, where transformers otherwise builds them
    partitioned (deepspeed.zero.Init): peft merges a LoRA into whole weights only (a partition is empty).
    DeepSpeed partitions such a model when the trainer prepares it."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = ref() if ref is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if config is not None:
            hf_deepspeed.set_hf_deepspeed_config(config)


def merges_adapters(a: Any) -> bool:
    """Whether loading merges earlier LoRA adapters into the base (see adapters/lora.merge_earlier)."""
    paths = split_list(a.adapter_name_or_path)
    return a.name.value in ("lora", "qlora") and len(paths) > (0 if a.create_new_adapter else 1)


def load_model(cfg: Any, precision: str, device_index: int = 0):
    """The model a rank trains: base + adapter, trainable parameters in their training dtype."""
    adapter = cfg.adapter.name.value
    # earlier LoRA adapters are merged into whole weights, also under ZeRO-3
    with whole_on_this_rank() if merges_adapters(cfg.adapter) else contextlib.nullcontext():
        model = load_base(cfg, load_dtype(precision, adapter),
                          quantization=quantization_kwargs(cfg.adapter, precision), device_index=device_index)
        # Training needs no KV cache, and with one transformers ignores packed rows' position_ids restarts.
        model.config.use_cache = False
        # predict only: the trained adapter for inference (peft refuses a trainable prefix loaded from disk)
        model = attach_adapter(model, cfg, precision) if cfg.train.do_train else inference_adapter(model, cfg)
    if is_reward_model(cfg) and adapter == "freeze":  # the new head always trains (peft saves it with a LoRA)
        model.score.requires_grad_(True)
    return model


def load_for_eval(cfg: Any, precision: str, device_index: int = 0):
    """stage=eval: the base in the compute dtype with adapter_name_or_path loaded for inference as launch-chat loads
    a run (LoRA: the adapters before the last merged, the last loaded; prefix: its prefix); none: the base."""
    model = load_base(cfg, DTYPES[COMPUTE_DTYPES[precision]], quantization=quantization_kwargs(cfg.adapter, precision),
                      device_index=device_index)
    return inference_adapter(model, cfg).eval()


def load_trained(cfg: Any, final_dir: Path, dtype: str, quantize: bool = False):
    """A run's trained model for inference, weights in `dtype` (fp32, bf16, fp16): final/ is the whole model
    (full, freeze) or the adapter on the config's base, after the adapters the run merged first."""
    if cfg.adapter.name.value in ("full", "freeze"):
        return load_base(cfg, DTYPES[dtype], path=str(final_dir))
    quantization = quantization_kwargs(cfg.adapter, dtype) if quantize else None
    return load_adapter(load_base(cfg, DTYPES[dtype], quantization=quantization), cfg, final_dir)


def load_for_inference(trained: TrainedRun, dtype: str, quantize: bool = False):
    """(tokenizer, model in eval mode) of a trained run, weights in dtype fp32, bf16 or fp16 (a quantized
    base computes in it): what launch-export and launch-chat use."""
    tokenizer = load_tokenizer(trained.cfg, str(trained.weights))
    model = load_trained(trained.cfg, trained.weights, dtype, quantize=quantize)
    return tokenizer, model.eval()


def load_run_model(path: str, precision: str, *, dtype: Optional[str] = None):
    """An earlier run's trained model (a run dir, or its final/), frozen, LoRA merged: a reward model from an
    rm run, a reference model from any run. Weights in `dtype` (default: the frozen dtype for `precision`)."""
    from launcher.rundir import find_run_root

    trained = open_run(str(find_run_root(path)))
    with whole_on_this_rank():  # its LoRA is merged; the trainer partitions it under ZeRO-3
        model = load_trained(trained.cfg, trained.weights, dtype or COMPUTE_DTYPES[precision])
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
    model.requires_grad_(False)
    return model.eval()


def load_reference(cfg: Any, precision: str):
    """The frozen reference of dpo, kto and ppo, or None when the trainer needs no second model.

    stage.ref_model: that model (an earlier run's trained model, or a model directory / hub id). Otherwise the
    policy as the stage starts: with an adapter its trainer computes it from the same weights (TRL: a frozen
    copy of the adapter, which for a new, zero-initialised LoRA is the base); full and freeze load the base a
    second time, unless precompute_ref_log_probs computes the reference log-probs before training."""
    from launcher.rundir import find_run_root

    ref, adapter = cfg.stage.ref_model, cfg.adapter.name.value
    if ref and find_run_root(ref) is not None:
        return load_run_model(ref, precision)
    if ref:
        model = load_base(cfg, DTYPES[COMPUTE_DTYPES[precision]], path=ref)
    elif adapter in ("full", "freeze") and not cfg.stage.precompute_ref_log_probs:
        model = load_base(cfg, DTYPES[COMPUTE_DTYPES[precision]])
    else:
        return None
    model.requires_grad_(False)
    return model.eval()


def count_parameters(model) -> tuple[int, int]:
    # peft counts a 4-bit parameter as the two weights it packs, and a ZeRO-3 partition by its ds_numel
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    # Under ZeRO-3 a rank holds a partition: ds_numel is the full parameter's size.
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
    return sum(n for n, trains in sizes if trains), sum(n for n, _ in sizes)
