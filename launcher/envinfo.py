"""env.json: versions, git state, host and devices of a launch. Never secret values.

Versions come from package metadata, so nothing heavy (torch, transformers) is imported here.
"""
from __future__ import annotations

import platform
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any

from launcher import PROJECT_ROOT

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "deepspeed", "hydra-core", "omegaconf",
            "tokenizers", "trl", "wandb", "tensorboard")


def package_version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def env_info(visible_gpus: int, device: str) -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "packages": {p: package_version(p) for p in PACKAGES},
        "git": {"sha": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None},
        "device": device,
        "visible_gpus": visible_gpus,
        "argv": sys.argv,
    }
