"""Tokenizer, model and adapter, from the resolved config."""
from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def resolve_precision(name: str, device: str) -> str:
    """`auto`: bf16 on a GPU that supports it, else fp16 on GPU; fp32 on CPU."""
    if name != "auto":
        return name
    if device == "cpu":
        return "fp32"
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16"


def load_dtype(precision: str, adapter: str) -> torch.dtype:
    """Weights' dtype at load. Mixed precision keeps fp32 master weights for what trains; a LoRA base is
    frozen, so it is loaded in the compute dtype (peft keeps the adapter itself in fp32)."""
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return half if half is not None and adapter == "lora" else torch.float32


def load_tokenizer(cfg: Any):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.model.model_name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: Any, precision: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        cfg.model.model_name_or_path, dtype=load_dtype(precision, cfg.adapter.name),
        trust_remote_code=cfg.model.trust_remote_code,
    )
    if cfg.train.gradient_checkpointing:
        model.config.use_cache = False
    return attach_adapter(model, cfg)


def attach_adapter(model, cfg: Any):
    a = cfg.adapter
    if a.name == "full":
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    targets = [t.strip() for t in str(a.lora_target).split(",") if t.strip()]
    lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=a.lora_rank, lora_alpha=a.lora_alpha or 2 * a.lora_rank,
                      lora_dropout=a.lora_dropout, target_modules=targets)
    model = get_peft_model(model, lora)
    if cfg.train.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def count_parameters(model) -> tuple[int, int]:
    # Under ZeRO-3 a rank holds a partition: ds_numel is the full parameter's size.
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
    return sum(n for n, trains in sizes if trains), sum(n for n, _ in sizes)
