"""Adapters: what of the model trains. One module per family; this module picks one by adapter.name.

    full    every parameter                       freeze  chosen hidden layers (+ extra modules)
    lora    peft LoRA (rsLoRA, DoRA, continue)    qlora   LoRA on a bitsandbytes-quantized base
    prefix  P-Tuning v2 (peft prefix tuning)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from launcher.worker.adapters import freeze, lora, prefix

log = logging.getLogger(__name__)

ATTACH = {"full": lambda model, cfg: model, "freeze": freeze.attach, "lora": lora.attach, "qlora": lora.attach,
          "prefix": prefix.attach}


def attach_adapter(model, cfg: Any, precision: str):
    """The model with only the adapter's parameters trainable, those in their training dtype: bf16 for
    pure_bf16, else fp32 (what mixed precision keeps as master weights)."""
    name = cfg.adapter.name.value
    if cfg.adapter.quantization_bit is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    model = ATTACH[name](model, cfg)
    dtype = torch.bfloat16 if precision == "pure_bf16" else torch.float32
    for p in model.parameters():
        if p.requires_grad and p.dtype != dtype:
            p.data = p.data.to(dtype)
    return model


def inference_adapter(model, cfg: Any):
    """The trained adapter of adapter_name_or_path (its last, after merging the others) loaded for inference:
    predict-only runs and stage=eval; the base alone without one (full, freeze: model_name_or_path is the
    trained model)."""
    from launcher.schema import split_list

    paths = split_list(cfg.adapter.adapter_name_or_path)
    if cfg.adapter.name.value in ("full", "freeze") or not paths:
        return model
    log.info("adapter %s, for inference", paths[-1])
    return load_adapter(model, cfg, Path(paths[-1]))


def load_adapter(model, cfg: Any, adapter_dir: Path):
    """A trained adapter (a run's final/ or a checkpoint) on its base, for inference."""
    if cfg.adapter.name.value == "prefix":
        return prefix.load(model, adapter_dir)
    return lora.load(model, cfg, adapter_dir)
