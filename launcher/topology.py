"""How wide a run is: world size, processes per node, the backend that starts them and the batch arithmetic.

Pure (no torch): validate checks these numbers and plan uses them, so both read them from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from launcher.schema import BackendType


def world_size(cfg: Any) -> int:
    """The ranks a config asks for: gpus (ranks per node) x nodes."""
    return cfg.gpus * cfg.nodes


def pick_backend(cfg: Any) -> str:
    if cfg.backend.name != BackendType.auto:
        return BackendType(cfg.backend.name).value
    # DeepSpeed needs torch.distributed set up by a launcher, even for one process.
    return "single" if world_size(cfg) == 1 and cfg.zero.name == "none" else "torchrun"


def procs_per_node(cfg: Any, backend: str) -> int:
    """backend=single runs one process (validate refuses it with more ranks); the others one per GPU."""
    return 1 if backend == "single" else cfg.gpus


@dataclass(frozen=True)
class BatchPlan:
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    world_size: int
    global_batch_size: int
    #: gradient_accumulation_steps was derived from the config's global_batch_size
    derived: bool

    def describe(self) -> str:
        how = " (grad accum derived from global_batch_size)" if self.derived else ""
        return (f"per_device_train_batch_size {self.per_device_train_batch_size} x gradient_accumulation_steps "
                f"{self.gradient_accumulation_steps} x world size {self.world_size} = global batch "
                f"{self.global_batch_size}{how}")


def plan_batch(cfg: Any) -> BatchPlan:
    world = world_size(cfg)
    per_device = cfg.train.per_device_train_batch_size
    if cfg.global_batch_size is not None:
        accum = cfg.global_batch_size // (per_device * world)
        return BatchPlan(per_device, accum, world, cfg.global_batch_size, derived=True)
    accum = cfg.train.gradient_accumulation_steps
    return BatchPlan(per_device, accum, world, per_device * accum * world, derived=False)
