"""The run directory: one object owns every path in it (the record of a run).

    config.yaml  overrides.yaml  plan.json  launch.sh  env.json  data.json  logs/rank{N}.log  metrics.jsonl
    ds_config.auto.json (ZeRO: what the worker hands the Trainer)  ds_config.json (what DeepSpeed received)
    tensorboard/  wandb/  checkpoints/checkpoint-N/  final/  summary.json
    attempts/N/ (each launch's config, overrides, plan, launch.sh, config_changes.json)  attempts.jsonl (events)
    launch.lock (who holds the run dir)  interrupted.json (stopped by a signal after a checkpoint)
    sbatch.sh  slurm/{job_ids, %j.out, attempts.log, exit_code}          (cluster=slurm)
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Collection, Mapping, Optional, Sequence

import yaml

from launcher.secrets import redact, redact_config


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.root / "overrides.yaml"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def launch_sh(self) -> Path:
        return self.root / "launch.sh"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def ds_config_auto(self) -> Path:
        """The planned DeepSpeed config, "auto" values left for transformers to fill from config.yaml."""
        return self.root / "ds_config.auto.json"

    @property
    def ds_config(self) -> Path:
        """The resolved DeepSpeed config, exactly as the engine received it (written by rank 0)."""
        return self.root / "ds_config.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def rank_log(self, rank: int) -> Path:
        return self.logs / f"rank{rank}.log"

    @property
    def data(self) -> Path:
        """data.json: the tokenized-data cache this run used, its inputs and counts (rank 0)."""
        return self.root / "data.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def predictions(self) -> Path:
        """generated_predictions.jsonl: prompt, predict, label of every eval row, in order (train.do_predict)."""
        return self.root / "generated_predictions.jsonl"

    @property
    def predict_results(self) -> Path:
        """predict_results.json: ROUGE/BLEU of the predictions, runtime and throughput (train.do_predict)."""
        return self.root / "predict_results.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def eval_results(self) -> Path:
        """eval_results.json: stage=eval's benchmark results per task and averaged (rank 0)."""
        return self.root / "eval_results.json"

    @property
    def eval_samples(self) -> Path:
        """eval_samples.jsonl: stage=eval with eval.log_samples: one row per benchmark row and task."""
        return self.root / "eval_samples.jsonl"

    @property
    def attempts(self) -> Path:
        """attempts/N/: what each launch into this run dir was given (config, overrides, launch.sh)."""
        return self.root / "attempts"

    @property
    def attempts_log(self) -> Path:
        """attempts.jsonl: one JSON object per event of an attempt (launch, restart, train begin/end, exit)."""
        return self.root / "attempts.jsonl"

    @property
    def lock(self) -> Path:
        """launch.lock: the launch (pid@host, or Slurm job) that holds this run dir."""
        return self.root / "launch.lock"

    @property
    def interrupted(self) -> Path:
        """interrupted.json: the ranks stopped on a signal after saving a checkpoint (resume=true continues)."""
        return self.root / "interrupted.json"

    @property
    def sbatch_sh(self) -> Path:
        return self.root / "sbatch.sh"

    @property
    def slurm_output(self) -> Path:
        return self.root / "slurm" / "%j.out"

    @property
    def job_ids(self) -> Path:
        """Slurm job id(s) of this run, one line per submission."""
        return self.root / "slurm" / "job_ids"


def find_run_root(path: str | Path) -> Path | None:
    """The run dir a path names: itself, or the run it lies in (RUN_DIR/final, RUN_DIR/checkpoints/checkpoint-N)."""
    p = Path(path).expanduser()
    return next((d for d in (p, p.parent, p.parent.parent) if RunDir(d).config.is_file()), None)


def new_run_dir(output_root: str, name: str, now: datetime, taken: Collection[str] = ()) -> Path:
    """<output_root>/<name>/<timestamp>, suffixed -1, -2, ... when runs start in the same second (or the path
    is `taken` by a sweep job planned but not yet written)."""
    base = Path(output_root).expanduser().resolve() / name / now.strftime("%Y%m%d-%H%M%S")
    path, n = base, 0
    while path.exists() or str(path) in taken:
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def clear_run_dir(run: RunDir) -> None:
    """overwrite_output_dir=true: the previous run's record and weights go, the folder (and the lock this launch
    holds on it) stays."""
    for child in run.root.iterdir():
        if child != run.lock:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _write(path: Path, text: str) -> None:
    # Whole or not at all: on shared storage every node of a multi-node launch writes the same files while
    # the ranks of another may already be reading them.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def append_event(run: RunDir, event: Mapping[str, Any]) -> None:
    """One line of attempts.jsonl. A single write of a whole line to an O_APPEND file: lines written by the
    launcher, launch.sh and rank 0 never interleave."""
    line = json.dumps(dict(event), default=str) + "\n"
    fd = os.open(run.attempts_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_events(run: RunDir) -> list[dict[str, Any]]:
    """attempts.jsonl as a list (a torn last line, from a kill mid-write, is skipped)."""
    if not run.attempts_log.is_file():
        return []
    events = []
    for line in run.attempts_log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def write_run_dir(run: RunDir, *, config: Mapping[str, Any], overrides: Sequence[str], plan: Mapping[str, Any],
                  launch_sh: str, env: Mapping[str, Any], ds_config: Optional[Mapping[str, Any]] = None) -> None:
    """Everything a worker (or a person) needs, written before any process starts; a token, key or password
    typed into the launch is written as *** (launcher/secrets.py: its value reaches the job by environment)."""
    run.logs.mkdir(parents=True, exist_ok=True)
    _write_launch(run.root, config, overrides, plan, launch_sh)
    if ds_config is not None:
        _write(run.ds_config_auto, json.dumps(ds_config, indent=2) + "\n")
    _write(run.env, json.dumps(redact_config(dict(env)), indent=2) + "\n")


def _write_launch(folder: Path, config: Mapping[str, Any], overrides: Sequence[str], plan: Mapping[str, Any],
                  launch_sh: str) -> None:
    """What one launch was given: config.yaml, overrides.yaml, plan.json, launch.sh (named as RunDir names them)."""
    d = RunDir(folder)
    _write(d.config, yaml.safe_dump(redact_config(dict(config)), sort_keys=False))
    _write(d.overrides, yaml.safe_dump([redact(str(o)) for o in overrides]))
    _write(d.plan, json.dumps(redact_config(dict(plan)), indent=2) + "\n")
    _write(d.launch_sh, redact(launch_sh))
    d.launch_sh.chmod(0o755)


def write_attempt(run: RunDir, n: int, *, config: Mapping[str, Any], overrides: Sequence[str],
                  plan: Mapping[str, Any], launch_sh: str, config_changes: Sequence[Mapping[str, Any]] = ()) -> Path:
    """attempts/N/: this launch's own copy of what it was given (the top-level files describe the current
    attempt and are replaced by the next launch), and the config changes a resume brought."""
    folder = run.attempts / str(n)
    folder.mkdir(parents=True, exist_ok=True)
    _write_launch(folder, config, overrides, plan, launch_sh)
    if config_changes:
        _write(folder / "config_changes.json", json.dumps(list(config_changes), indent=2, default=str) + "\n")
    return folder
