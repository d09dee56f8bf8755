"""Shared fixtures: the tiny model, built once and locally by the project's own script."""
from __future__ import annotations

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
