"""Precision names and what each means to torch, transformers and DeepSpeed: the one table of them.

Pure (no torch): validate and zero read it before anything starts; the worker maps the names to torch dtypes.
Precisions: fp32, fp16, bf16 (mixed: autocast over fp32 master weights), pure_bf16 (bf16 weights, no autocast).
"""
from __future__ import annotations

from typing import Any, Optional

from launcher.schema import Device, Precision

#: weight dtype name -> torch's dtype name (torch.<name>; config.json's "dtype")
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
#: resolved precision -> the dtype name it computes in (what a frozen model or a quantized layer uses)
COMPUTE_DTYPES = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "pure_bf16": "bf16"}
#: what a ds config's fp16.enabled / bf16.enabled must be for each (resolved) precision. A precision option
#: that DeepSpeed runs differently (e.g. pure bf16 weights) adds its row here.
DEEPSPEED_FLAGS = {"fp32": (False, False), "fp16": (True, False), "bf16": (False, True)}


def dtype_of_name(torch_name: str) -> str:
    """A torch dtype name (config.json's) as a weight dtype name; fp32 when unknown."""
    return next((k for k, v in DTYPE_NAMES.items() if v == torch_name), "fp32")


def auto_precision(name: str, device: str, native_bf16: bool) -> str:
    """`auto`: bf16 on a GPU that computes it natively, else fp16 on GPU; fp32 on CPU."""
    if name != "auto":
        return name
    if device == "cpu":
        return "fp32"
    return "bf16" if native_bf16 else "fp16"


def resolved_precision(cfg: Any) -> Optional[str]:
    """The precision the worker will train in, where the launch config alone decides it (auto on a GPU
    depends on the GPU, so None)."""
    name = Precision(cfg.precision.name).value
    if name == "auto" and cfg.device != Device.cpu:
        return None
    return auto_precision(name, str(getattr(cfg.device, "value", cfg.device)), native_bf16=False)


def trainer_precision(precision: str) -> dict[str, bool]:
    """TrainingArguments' autocast flags. pure_bf16 needs none: its weights are bf16 already."""
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}
