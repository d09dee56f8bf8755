"""Per-rank logging: every rank writes logs/rank{N}.log; only rank 0 also talks to the console."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def rank_from_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size), from torchrun's / Slurm's env only."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def setup_rank_logging(log_file: Path, rank: int) -> None:
    import transformers

    log_file.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter(f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(fmt)
    handlers: list[logging.Handler] = [file_handler]
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        # The console gets the launcher's own progress, the Trainer's banner and every warning; the rank
        # log gets everything (row ids, transformers' config dumps, ...).
        console.addFilter(lambda r: r.levelno >= logging.WARNING or r.name == "transformers.trainer"
                          or (r.name.startswith("launcher") and r.name != "launcher.rows"))
        handlers.append(console)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.INFO)
    # transformers logs through its own handler: send it to ours instead.
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    transformers.utils.logging.set_verbosity_info()
