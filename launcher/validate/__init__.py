"""validate(config, facts) -> every problem at once, each naming the key, the bad value and the fix.

Pure: runs before any process, allocation or GPU is touched. Errors stop the launch (exit 2);
warnings are printed and the launch goes on.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from launcher.facts import Facts
from launcher.validate.benchmark import check_eval
from launcher.validate.container import check_container
from launcher.validate.data import check_data
from launcher.validate.devices import check_visible_devices
from launcher.validate.ds import check_zero
from launcher.validate.evaluation import check_evaluation
from launcher.validate.keys import check_schema, unknown_override_keys
from launcher.validate.matrix import check_matrix
from launcher.validate.modeldir import check_model_dir
from launcher.validate.node import check_node
from launcher.validate.predict import check_predict, check_remote_code
from launcher.validate.model import check_adapter, check_adapter_paths, check_model, check_precision, check_quantization
from launcher.validate.problem import Problem
from launcher.validate.ranges import check_ranges
from launcher.validate.typed import check_typed
from launcher.validate.slurm import check_slurm, slurm_time_seconds
from launcher.validate.stages import check_stage
from launcher.validate.lock import check_lock
from launcher.validate.resume import check_output
from launcher.validate.topology import check_batch, check_logger, check_topology

__all__ = ["Problem", "slurm_time_seconds", "unknown_override_keys", "validate"]


def validate(cfg: Any, facts: Facts, typed: frozenset[str] = frozenset()) -> list[Problem]:
    """typed: the keys typed on the command line (launcher.typed.typed_keys), which must not be dropped."""
    ranges = list(check_ranges(cfg))
    # A value outside its schema range is reported once, by the range check, not again by a later check;
    # a later check whose arithmetic that value breaks (a division by gpus=0) is skipped.
    out_of_range = {p.key for p in ranges}
    problems = list(ranges)
    for check in (*CHECKS, lambda cfg, facts: check_typed(cfg, facts, typed),
                  lambda cfg, facts: check_eval(cfg, facts, typed)):
        try:
            found = list(check(cfg, facts))
        except ArithmeticError:
            if not ranges:
                raise
            continue
        problems += [p for p in found if p.key not in out_of_range]
    return problems


CHECKS: tuple[Callable[[Any, Facts], Iterable[Problem]], ...] = (
    lambda cfg, facts: check_schema(cfg),
    check_topology,
    check_matrix,
    check_precision,
    check_zero,
    check_node,
    check_visible_devices,
    check_model,
    check_model_dir,
    check_remote_code,
    check_adapter,
    check_quantization,
    check_adapter_paths,
    check_data,
    check_stage,
    check_predict,
    check_evaluation,
    lambda cfg, facts: check_batch(cfg),
    check_output,
    check_lock,
    check_logger,
    check_slurm,
    check_container,
)
