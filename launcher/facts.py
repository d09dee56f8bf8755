"""Facts about the machine and the files a config names: the only I/O before validate and plan.

gather_facts() reads; validate() and build_plan() are pure functions of (config, Facts), so they are
tested with hand-made Facts and never start a process. No torch import: a dry run on a login node
stays fast.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

#: rows of a data file whose keys are kept for validation (bounded so huge files validate quickly)
SCANNED_ROWS = 10_000


@dataclass(frozen=True)
class DataFileFacts:
    exists: bool
    #: a parse error naming the file and line, or None
    error: Optional[str] = None
    rows: int = 0
    #: keys present in each of the first SCANNED_ROWS rows
    row_keys: tuple[frozenset, ...] = ()


@dataclass(frozen=True)
class RunDirFacts:
    exists: bool = False
    finished: bool = False  # holds summary.json
    has_checkpoints: bool = False


@dataclass(frozen=True)
class Facts:
    python: str = sys.executable
    hostname: str = "localhost"
    cpu_count: int = 1
    visible_gpus: int = 0
    #: local paths named by the config -> exists
    paths: Mapping[str, bool] = field(default_factory=dict)
    data: Mapping[str, DataFileFacts] = field(default_factory=dict)
    output_dir: RunDirFacts = field(default_factory=RunDirFacts)
    #: path of sbatch, when this host can submit Slurm jobs
    sbatch: Optional[str] = None


def is_local_path(name: str) -> bool:
    """A model name is a local path when it looks like one (absolute, ./, ../, ~) or exists; else a hub id."""
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists()


def count_visible_gpus(env: Mapping[str, str]) -> int:
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def scan_data_file(path: str) -> DataFileFacts:
    p = Path(path).expanduser()
    if not p.is_file():
        return DataFileFacts(exists=False)
    rows: list[Any] = []
    try:
        if p.suffix == ".jsonl":
            with p.open(encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            return DataFileFacts(True, f"{p}: line {lineno}: invalid JSON ({e.msg})")
        else:
            try:
                rows = json.loads(p.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                return DataFileFacts(True, f"{p}: line {e.lineno} column {e.colno}: invalid JSON ({e.msg})")
            if not isinstance(rows, list):
                return DataFileFacts(True, f"{p}: expected a JSON list of rows, got {type(rows).__name__}")
    except (OSError, UnicodeDecodeError) as e:
        return DataFileFacts(True, f"{p}: cannot read ({e})")
    keys = tuple(frozenset(r) if isinstance(r, dict) else frozenset() for r in rows[:SCANNED_ROWS])
    return DataFileFacts(exists=True, rows=len(rows), row_keys=keys)


def scan_run_dir(path: Optional[str]) -> RunDirFacts:
    if not path:
        return RunDirFacts()
    p = Path(path).expanduser()
    ckpt = p / "checkpoints"
    return RunDirFacts(
        exists=p.exists(),
        finished=(p / "summary.json").is_file(),
        has_checkpoints=ckpt.is_dir() and any(ckpt.glob("checkpoint-*")),
    )


def gather_facts(cfg: Any, env: Optional[Mapping[str, str]] = None) -> Facts:
    env = os.environ if env is None else env
    model = str(cfg.model.model_name_or_path)
    paths = {model: Path(model).expanduser().exists()} if is_local_path(model) else {}
    dataset = str(cfg.data.dataset)
    return Facts(
        python=sys.executable,
        hostname=socket.gethostname(),
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        visible_gpus=count_visible_gpus(env) if cfg.device == "cuda" else 0,
        paths=paths,
        data={dataset: scan_data_file(dataset)},
        output_dir=scan_run_dir(cfg.output_dir),
        sbatch=shutil.which("sbatch") if cfg.cluster.name == "slurm" else None,
    )
