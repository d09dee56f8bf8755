"""validate(config, facts) -> every problem at once, each naming the key, the bad value and the fix.

Pure: runs before any process, allocation or GPU is touched. Errors stop the launch (exit 2);
warnings are printed and the launch goes on.
"""
from __future__ import annotations

from typing import Any

from launcher.facts import Facts
from launcher.validate.data import check_data
from launcher.validate.ds import check_zero
from launcher.validate.keys import check_schema, unknown_override_keys
from launcher.validate.matrix import check_matrix
from launcher.validate.model import check_adapter, check_adapter_paths, check_model, check_precision, check_quantization
from launcher.validate.problem import Problem
from launcher.validate.slurm import check_slurm, slurm_time_seconds
from launcher.validate.stages import check_stage
from launcher.validate.topology import check_batch, check_logger, check_output, check_topology

__all__ = ["Problem", "slurm_time_seconds", "unknown_override_keys", "validate"]


def validate(cfg: Any, facts: Facts) -> list[Problem]:
    return [
        *check_schema(cfg),
        *check_topology(cfg, facts),
        *check_matrix(cfg, facts),
        *check_precision(cfg, facts),
        *check_zero(cfg, facts),
        *check_model(cfg, facts),
        *check_adapter(cfg, facts),
        *check_quantization(cfg, facts),
        *check_adapter_paths(cfg, facts),
        *check_data(cfg, facts),
        *check_stage(cfg, facts),
        *check_batch(cfg),
        *check_output(cfg, facts),
        *check_logger(cfg),
        *check_slurm(cfg, facts),
    ]
