"""CUDA_VISIBLE_DEVICES entries: indices (0,1), GPU UUIDs (GPU-8a3c...) or MIG instances (MIG-5f1e...).

DeepSpeed's runner (0.19.8, launcher/runner.py) always deletes the inherited CUDA_VISIBLE_DEVICES, parses
--include slots with int() (a UUID raises ValueError) and its launch.py then sets CUDA_VISIBLE_DEVICES to the
slot numbers, i.e. physical indices. Indices therefore go to --include; UUID and MIG entries cannot pass
through the runner at all, so the plan passes --num_gpus=N and carries the entries in KEPT_ENV, which every
rank puts back (restore) before torch initialises CUDA: rank LOCAL_RANK then uses the LOCAL_RANK-th entry,
as under torchrun, which leaves the variable alone. Pure, no torch.
"""
from __future__ import annotations

from typing import MutableMapping, Optional

#: the entries the deepspeed runner would lose, for the ranks to restore
KEPT_ENV = "LAUNCHER_CUDA_VISIBLE_DEVICES"


def entries(value: Optional[str]) -> list[str]:
    """The listed devices ("" and the "hide every GPU" value -1 list none)."""
    return [d.strip() for d in (value or "").split(",") if d.strip() and d.strip() != "-1"]


def are_indices(devices: list[str]) -> bool:
    return all(d.isdigit() for d in devices)


def mig(devices: list[str]) -> list[str]:
    return [d for d in devices if d.startswith("MIG-")]


def restore(env: MutableMapping[str, str]) -> None:
    """In a rank (before CUDA is initialised): the devices the launch saw, if the runner replaced them."""
    if env.get(KEPT_ENV):
        env["CUDA_VISIBLE_DEVICES"] = env[KEPT_ENV]
