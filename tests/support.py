"""Helpers for tests: compose a config, hand-made Facts, run `launch` as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir

import launcher.cli  # noqa: F401  (registers the schema and the project_root resolver)
from launcher import PROJECT_ROOT
from launcher.facts import Facts, RunDirFacts, gather_data_facts

TINY_MODEL = PROJECT_ROOT / "assets" / "tiny_llama"
DEMO_DATA = PROJECT_ROOT / "data" / "demo" / "alpaca_demo.json"


def compose(*overrides: str):
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="launch", overrides=list(overrides))


def facts(cfg=None, **kw) -> Facts:
    """Facts of a healthy machine for cfg (its datasets resolved and scanned for real), changed by kw."""
    data = gather_data_facts(cfg.data.dataset, cfg.data.dataset_dir) if cfg is not None else None
    base = dict(python="/usr/bin/python3", hostname="testhost", cpu_count=8, visible_gpus=8, paths={},
                output_dir=RunDirFacts(), **({"data": data} if data else {}))
    base.update(kw)
    return Facts(**base)


def run_launch(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def run_module(module: str, *args: str, cwd: Path | None = None, timeout: float = 300):
    """`python -m MODULE ARGS` (launch-export, launch-chat) as a user would run it."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
