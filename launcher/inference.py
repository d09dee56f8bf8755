"""A finished run's trained weights, for launch-export, launch-chat and the stages that reuse a run's model:
the run dir is the only input. Pure (no torch): launcher.worker.model loads the model (load_for_inference).

config.yaml says which base, adapter, template and precision the run used; final/ (or a checkpoint) holds
what it trained. Problems a user can fix (no such run, not finished) are RunError: exit 2, one message.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from launcher.checkpoints import checkpoint_step, complete_checkpoints, is_complete
from launcher.rundir import RunDir
from launcher.schema import load_run_config


class RunError(ValueError):
    """A run dir that cannot be used (a user mistake: exit 2)."""


@dataclass(frozen=True)
class TrainedRun:
    run: RunDir
    cfg: Any
    #: final/ or the chosen checkpoint: an adapter (lora, qlora, prefix) or a whole model (full, freeze)
    weights: Path


def open_run(run_dir: str, checkpoint: Optional[str] = None) -> TrainedRun:
    run = RunDir(Path(run_dir).expanduser().resolve())
    if not run.config.is_file():
        raise RunError(f"{run_dir}: not a run dir (no config.yaml); give the directory `launch` printed, "
                       "e.g. outputs/<name>/<timestamp>")
    if checkpoint is None:
        weights = run.final
        missing = f"{weights} does not exist: the run has not finished; pick a checkpoint with --checkpoint N"
    else:
        weights = run.checkpoints / f"checkpoint-{checkpoint}" if checkpoint.isdigit() else Path(checkpoint)
        found = ", ".join(str(checkpoint_step(p)) for p in complete_checkpoints(run.checkpoints)) or "none"
        missing = f"{weights} does not exist; complete checkpoints of this run: {found}"
        if weights.is_dir() and checkpoint_step(weights) is not None and not is_complete(weights):
            raise RunError(f"{weights} is incomplete (its save did not finish on every rank); complete checkpoints "
                           f"of this run: {found}")
    if not weights.is_dir():
        raise RunError(missing)
    return TrainedRun(run, load_run_config(str(run.config)), weights)

