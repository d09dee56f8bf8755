"""The combination matrix (launcher/matrix.py) applied to a config: one problem per refusal covering its cell."""
from __future__ import annotations

from typing import Any, Iterator

from launcher import matrix, zero
from launcher.facts import Facts
from launcher.validate.problem import Problem


def zero_option(cfg: Any, facts: Facts) -> str:
    """The conf/zero option a config's ZeRO amounts to: zero=custom by its ds config's stage and offload."""
    name = str(cfg.zero.name)
    if name in matrix.DIMENSIONS["zero"]:
        return name
    f = facts.ds_configs.get(cfg.zero.config) if cfg.zero.config else None
    if f is None or not isinstance(f.content, dict):
        return "0"  # unreadable (reported on its own): what holds for any ZeRO config still does
    ds = f.content
    offload = "none" != zero.offload_device(ds, "optimizer") or "none" != zero.offload_device(ds, "param")
    level = {0: "0", 1: "2", 2: "2", 3: "3"}.get(zero.stage(ds), "0")
    return f"{level}_offload" if offload and level != "0" else level


def cell_of(cfg: Any, facts: Facts) -> dict[str, Any]:
    return {"stage": matrix.show(cfg.stage.name), "adapter": matrix.show(cfg.adapter.name),
            "zero": zero_option(cfg, facts), "precision": matrix.show(cfg.precision.name),
            "data.packing": bool(cfg.data.packing), "backend": matrix.show(cfg.backend.name)}


def check_matrix(cfg: Any, facts: Facts) -> Iterator[Problem]:
    cell = cell_of(cfg, facts)
    shown = {**cell, "zero": str(cfg.zero.name)}  # messages name the option typed (custom), not its class
    for r in matrix.refusals(cell):
        yield Problem(r.key, cfg.data.packing if r.key == "data.packing" else shown[r.key], r.message(shown))
    # lora and prefix on a quantized base (adapter.quantization_bit) are qlora's cells for the base
    bits = cfg.adapter.quantization_bit
    if bits is not None and cell["adapter"] != "qlora":
        own = matrix.refusals(cell)
        for r in matrix.refusals({**cell, "adapter": "qlora"}):
            if r not in own and "adapter" in r.when:
                yield Problem("adapter.quantization_bit", bits, r.message(shown))
