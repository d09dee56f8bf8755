"""Shared fixtures: the tiny model, built once and locally by the project's own script; a temp data cache;
DeepSpeed's CPU ops."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import TINY_MODEL
from launcher import PROJECT_ROOT


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    if not (TINY_MODEL / "model.safetensors").is_file():
        subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "make_tiny_model.py")], check=True)
    return TINY_MODEL


def _env_dir(tmp_path_factory, variable: str, name: str):
    """A temp dir that `variable` points to for the session (the runs tests start inherit it), then restored."""
    path = tmp_path_factory.mktemp(name)
    before = os.environ.get(variable)
    os.environ[variable] = str(path)
    yield path
    if before is None:
        os.environ.pop(variable, None)
    else:
        os.environ[variable] = before


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory) -> Path:
    """Tokenized data goes to a temp dir, not ~/.cache/launcher/data."""
    yield from _env_dir(tmp_path_factory, "LAUNCHER_DATA_CACHE", "data_cache")


@pytest.fixture(scope="session", autouse=True)
def module_cache(tmp_path_factory) -> Path:
    """Module lists of models built on the meta device (launcher/meta_model.py) go to a temp dir."""
    yield from _env_dir(tmp_path_factory, "LAUNCHER_MODULE_CACHE", "module_cache")


@pytest.fixture(scope="session")
def deepspeed_ops() -> None:
    """DeepSpeed JIT-builds its CPU ops on first use (shm collectives ~45 s, CPU Adam ~60 s on 2 cores) into
    ~/.cache/torch_extensions: build them once here, so no training test's timing depends on it."""
    code = ("from deepspeed.accelerator import get_accelerator\n"
            "for op in ('ShareMemCommBuilder', 'CPUAdamBuilder'):\n"
            "    get_accelerator().create_op_builder(op).load()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=900, capture_output=True,
                   env={**os.environ, "DS_ACCELERATOR": "cpu"})
