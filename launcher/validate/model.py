"""The model, its precision and attention kernel, the adapter and its quantization."""
from __future__ import annotations

import os
import re
from typing import Any, Iterator

from launcher.facts import Facts, RunRefFacts
from launcher.schema import AdapterType, Attention, Device, Precision, split_list
from launcher.validate.problem import Problem
from launcher.validate.runs import PEFT_TYPES, check_same_base, same_path

#: adapters that train on a frozen base, which is what may be quantized
FROZEN_BASE = (AdapterType.lora, AdapterType.qlora, AdapterType.prefix)


#: transformers drops the past_key_values path peft's prefix tuning uses here (pyproject bounds it too)
PREFIX_TRANSFORMERS_BELOW = (5, 40)


def _pre_ampere(facts: Facts) -> list[str]:
    """Visible GPUs without bf16 (compute capability < 8.0), as 'name (cc)'."""
    return [f"{g.name} (compute capability {g.compute_capability:.1f})" for g in facts.gpus
            if g.compute_capability < 8.0]


def check_precision(cfg: Any, facts: Facts) -> Iterator[Problem]:
    p = cfg.precision.name
    if cfg.device == Device.cpu and p == Precision.fp16:
        yield Problem("precision", p,
                      "the CPU cannot train in fp16; use precision=fp32 (or auto, or bf16) with device=cpu")
    old = _pre_ampere(facts) if cfg.device == Device.cuda else []
    if p in (Precision.bf16, Precision.pure_bf16) and old:
        yield Problem("precision", p, f"{old[0]} has no bf16 (it needs compute capability >= 8.0, Ampere or "
                      "newer); use precision=fp16 (mixed, with loss scaling) or precision=auto, which picks it")


def check_model(cfg: Any, facts: Facts) -> Iterator[Problem]:
    m = cfg.model
    name = m.model_name_or_path
    if facts.paths.get(name) is False:
        yield Problem("model.model_name_or_path", name,
                      "no such local directory; build the tiny model with `python scripts/make_tiny_model.py`, "
                      "or give an existing directory or a hub id (org/name)")
    if m.attn == Attention.flash_attention_2:
        yield from _check_flash_attention(cfg, facts)
    max_pos = facts.model_config.get("max_position_embeddings")
    if m.rope_scaling is not None and m.rope_factor is None and max_pos and cfg.data.cutoff_len <= max_pos:
        yield Problem("model.rope_scaling", m.rope_scaling, f"data.cutoff_len={cfg.data.cutoff_len} fits the "
                      f"model's max_position_embeddings={max_pos}, so RoPE is not scaled; raise data.cutoff_len "
                      "or set model.rope_factor", error=False)


def _check_flash_attention(cfg: Any, facts: Facts) -> Iterator[Problem]:
    # whether flash-attn is installed is the node's fact: launcher.validate.node
    key, value = "model.attn", cfg.model.attn
    if cfg.device == Device.cpu:
        yield Problem(key, value, "FlashAttention-2 runs on CUDA GPUs only; use model.attn=sdpa with device=cpu")
        return
    old = _pre_ampere(facts)
    if old:
        yield Problem(key, value, f"{old[0]} is not supported by FlashAttention-2 (Ampere or newer); "
                      "use model.attn=sdpa")
    if cfg.precision.name == Precision.fp32:
        yield Problem(key, value, "FlashAttention-2 computes in fp16/bf16 only; use precision=bf16 (or auto), "
                      "or model.attn=sdpa with precision=fp32")


def check_adapter(cfg: Any, facts: Facts) -> Iterator[Problem]:
    a = cfg.adapter
    if a.name in (AdapterType.lora, AdapterType.qlora):
        if not split_list(a.lora_target):
            yield Problem("adapter.lora_target", a.lora_target, "name the modules to adapt, e.g. q_proj,v_proj, "
                          "or `all` for every linear layer")
    elif a.name == AdapterType.freeze:
        layers = facts.model_config.get("num_hidden_layers")
        if a.freeze_trainable_layers == 0:
            yield Problem("adapter.freeze_trainable_layers", 0, "train at least one layer: n > 0 trains the last "
                          "n hidden layers, n < 0 the first |n|; e.g. 2")
        elif layers and abs(a.freeze_trainable_layers) > layers:
            yield Problem("adapter.freeze_trainable_layers", a.freeze_trainable_layers,
                          f"the model has {layers} hidden layers; use a value in [-{layers}, {layers}] "
                          "(or adapter=full to train everything)")
        if not split_list(a.freeze_trainable_modules):
            yield Problem("adapter.freeze_trainable_modules", a.freeze_trainable_modules,
                          "name modules inside a layer (e.g. mlp,self_attn) or `all`")
    elif a.name == AdapterType.prefix:
        if cfg.train.gradient_checkpointing:
            yield Problem("train.gradient_checkpointing", True, "peft's prefix tuning does not work with gradient "
                          "checkpointing; set train.gradient_checkpointing=false (or use adapter=lora)")
        version = facts.packages.get("transformers")
        if version and release(version) >= PREFIX_TRANSFORMERS_BELOW:
            yield Problem("adapter", a.name, f"transformers {version} drops the past_key_values path peft's prefix "
                          "tuning runs on; `pip install 'transformers<5.40'` (as pyproject.toml pins), "
                          "or use adapter=lora")


def release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as 5.24.0 or 5.40.0.dev0."""
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def check_quantization(cfg: Any, facts: Facts) -> Iterator[Problem]:
    a = cfg.adapter
    bits = a.quantization_bit
    if a.name == AdapterType.qlora and bits is None:
        yield Problem("adapter.quantization_bit", None, "adapter=qlora quantizes the base: set 4 or 8")
        return
    if bits is None:
        return
    key = "adapter" if a.name == AdapterType.qlora else "adapter.quantization_bit"
    value = a.name if a.name == AdapterType.qlora else bits
    if a.name not in FROZEN_BASE:
        yield Problem("adapter.quantization_bit", bits, f"adapter={a.name.value} trains the base's weights, which "
                      "cannot be quantized; use adapter=qlora (or lora/prefix), or adapter.quantization_bit=null")
        return
    # whether bitsandbytes is installed is the node's fact: launcher.validate.node
    if cfg.device == Device.cpu:
        fix = "use adapter=lora" if a.name == AdapterType.qlora else "set adapter.quantization_bit=null"
        yield Problem(key, value, "bitsandbytes quantization needs a CUDA GPU; on the CPU train the unquantized "
                      f"model: {fix} (with precision=fp32 or bf16), or run on a GPU with device=cuda")
    if len(split_list(a.adapter_name_or_path)) > (0 if a.create_new_adapter else 1):
        yield Problem("adapter.adapter_name_or_path", a.adapter_name_or_path, "adapters cannot be merged into a "
                      "quantized base; merge them first (launch-export), then quantize the export, or continue "
                      "from one adapter only")


def check_adapter_paths(cfg: Any, facts: Facts) -> Iterator[Problem]:
    a = cfg.adapter
    paths = split_list(a.adapter_name_or_path)
    key = "adapter.adapter_name_or_path"
    if a.create_new_adapter and not paths:
        yield Problem("adapter.create_new_adapter", True, "there is no adapter to start from: set "
                      "adapter.adapter_name_or_path, or drop create_new_adapter", error=False)
    if not paths:
        return
    if a.name not in PEFT_TYPES:
        yield Problem(key, a.adapter_name_or_path, f"adapter={a.name.value} trains the model itself; merge the "
                      "adapter first (launch-export RUN_DIR) and set model.model_name_or_path to the export")
        return
    if a.name == AdapterType.prefix and len(paths) > 1:
        yield Problem(key, a.adapter_name_or_path, "prefix tuning continues from one prefix adapter; "
                      "prefixes cannot be merged")
    for path in paths:
        found = facts.adapters.get(path)
        run = facts.runs.get(path, RunRefFacts())
        if found is None and run.run_dir is not None and same_path(run.run_dir, path):
            yield Problem(key, path, f"is a run dir; its adapter is in {os.path.join(path, 'final')}: "
                          f"adapter.adapter_name_or_path={os.path.join(path, 'final')}")
        elif found is None:
            yield Problem(key, path, "no adapter_config.json there; give a directory saved by peft, e.g. a "
                          "previous run's RUN_DIR/final")
        elif found != PEFT_TYPES[a.name]:
            yield Problem(key, path, f"holds a {found} adapter, not one adapter={a.name.value} can continue; "
                          "pick the matching adapter (LORA: lora/qlora, PREFIX_TUNING: prefix)")
        yield from check_same_base(cfg, key, path, run)
