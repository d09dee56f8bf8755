"""DeepSpeed's shared-memory all-reduce buffers on CPU: removed, never left behind.

On CPU, when every rank is on one node (the deepspeed launcher sets LOCAL_SIZE), deepspeed.comm creates one
file per rank in /dev/shm (ops/csrc/cpu/comm/shm.cpp: `deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_
<MASTER_PORT>_<rank>`, 66 MiB) and never unlinks it. /dev/shm is RAM: each run used to leave 66 MiB per rank
behind until reboot, and a few hundred runs filled this machine's memory.

Two steps, no torch here: each rank removes its buffer's name once all ranks have mapped all buffers (the
memory then lives exactly as long as the last rank, however the ranks end), and after each attempt the node
sweeps what a rank that died earlier left under the attempt's port.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

SHM_DIR = Path("/dev/shm")
PREFIX = "deepspeed_allreduce_buffer"


def buffer_name(uid: int, addr: str, port: str, rank: int) -> str:
    return f"{PREFIX}_{uid}_{addr}_{port}_{rank}"


def release_own(rank: int, env: Mapping[str, str] = os.environ, shm_dir: Path = SHM_DIR) -> bool:
    """Unlink this rank's buffer name. Only after a barrier that follows DeepSpeed's comm init: a rank that has
    not opened its peers' buffers yet waits for their names forever. False: there was none (GPU, several nodes)."""
    path = shm_dir / buffer_name(os.getuid(), env.get("MASTER_ADDR", ""), env.get("MASTER_PORT", ""), rank)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def sweep(port: str, shm_dir: Path = SHM_DIR) -> list[Path]:
    """Remove this user's buffers of rendezvous port `port` (no rank of that attempt is alive any more)."""
    pattern = re.compile(rf"{PREFIX}_{os.getuid()}_.*_{re.escape(port)}_\d+")
    removed = []
    for path in shm_dir.glob(f"{PREFIX}_*"):
        if pattern.fullmatch(path.name):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed
