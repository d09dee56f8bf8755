"""Fixtures of the integration tests: a real local Slurm (test_slurm.py, and launch-ui's browser test)."""
from __future__ import annotations

import os
import subprocess

import pytest

from launcher import PROJECT_ROOT

SLURM = PROJECT_ROOT / "scripts" / "slurm"


@pytest.fixture(scope="module")
def slurm_cluster():
    """slurmctld + 2 slurmd on this host (scripts/slurm/up.sh), for one test module; skipped where Slurm cannot
    be installed, torn down after the module."""
    state_dir = os.environ.get("LAUNCHER_SLURM_DIR", "/tmp/launcher-slurm")
    os.environ["SLURM_CONF"] = f"{state_dir}/etc/slurm.conf"
    up = subprocess.run(["bash", str(SLURM / "up.sh")], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        if subprocess.run(["bash", "-c", "command -v sbatch slurmctld slurmd"], capture_output=True).returncode:
            pytest.skip(f"Slurm could not be installed here:\n{up.stdout[-2000:]}{up.stderr[-2000:]}")
        pytest.fail(f"scripts/slurm/up.sh failed:\n{up.stdout[-3000:]}{up.stderr[-3000:]}")
    yield
    subprocess.run(["bash", str(SLURM / "down.sh")], capture_output=True, timeout=120)
