"""CUDA_VISIBLE_DEVICES of a local launch: MIG instances."""
from __future__ import annotations

from typing import Any, Iterator

from launcher import visible_devices
from launcher.facts import Facts
from launcher.schema import ClusterType, Device
from launcher.validate.problem import Problem


def check_visible_devices(cfg: Any, facts: Facts) -> Iterator[Problem]:
    if cfg.device != Device.cuda or cfg.cluster.name == ClusterType.slurm:
        return  # on Slurm the node's variable is Slurm's, unknown here
    found = visible_devices.mig(visible_devices.entries(facts.cuda_visible_devices))
    if found and cfg.gpus > 1:
        # NVIDIA's MIG guide: a CUDA process enumerates a single MIG device, whatever the variable lists
        yield Problem("gpus", cfg.gpus, f"CUDA_VISIBLE_DEVICES lists MIG instances ({found[0]}, ...): a CUDA "
                      "process sees only one MIG device, so ranks cannot each pick their own; use gpus=1 on a MIG "
                      "instance, or whole GPUs (indices or GPU- UUIDs)")
