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


def local_world_size() -> int:
    """The ranks on this node: torchrun's LOCAL_WORLD_SIZE, the deepspeed runner's LOCAL_SIZE; 1 alone."""
    return int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("LOCAL_SIZE") or 1)


#: library messages that tell the user nothing (kept in the rank logs, off the console)
NOISE = ("Do not forget to share your model on huggingface.co",)
#: DeepSpeed's, on every rank of a CPU run, as deepspeed is imported: noise unless the run uses DeepSpeed
DEEPSPEED_CPU = "Setting accelerator to CPU"
#: warnings of the pinned libraries about their own future versions: for whoever pins them, not for a user
NOISY_WARNINGS = ("FutureWarning", "DeprecationWarning")


def for_console(record: logging.LogRecord, uses_deepspeed: bool = False) -> bool:
    """The console gets the launcher's own progress, the Trainer's banner and every warning, less the noise;
    the rank log gets everything (row ids, transformers' config dumps, the noise ...)."""
    if not (record.levelno >= logging.WARNING or record.name == "transformers.trainer"
            or (record.name.startswith("launcher") and record.name != "launcher.rows")):
        return False
    message = record.getMessage()
    if any(n in message for n in NOISE) or (not uses_deepspeed and DEEPSPEED_CPU in message):
        return False
    return not (record.name == "py.warnings" and any(f"{w}:" in message for w in NOISY_WARNINGS))


class ConsoleFormatter(logging.Formatter):
    """On a terminal a record first clears the live progress line (progress.py redraws it at the next step)."""

    def __init__(self, fmt: str, tty: bool):
        super().__init__(fmt)
        self.tty = tty

    def format(self, record: logging.LogRecord) -> str:
        return ("\r\x1b[2K" if self.tty else "") + super().format(record)


def setup_rank_logging(log_file: Path, rank: int, uses_deepspeed: bool = False) -> None:
    import transformers

    log_file.parent.mkdir(parents=True, exist_ok=True)
    line = f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s"
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter(line))
    handlers: list[logging.Handler] = [file_handler]
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(ConsoleFormatter(line, sys.stdout.isatty()))
        console.addFilter(lambda r: for_console(r, uses_deepspeed))
        handlers.append(console)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.INFO)
    # warnings.warn goes to the rank log (and, filtered, the console) instead of every rank's stderr
    logging.captureWarnings(True)
    # transformers logs through its own handler: send it to ours instead.
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    transformers.utils.logging.set_verbosity_info()
    if rank != 0:  # one rank's "Loading weights" bar is enough
        transformers.utils.logging.disable_progress_bar()
    route_deepspeed_logger()


def route_deepspeed_logger() -> None:
    """DeepSpeed's logger prints to stdout itself, on every rank, once deepspeed is imported (by accelerate, with
    the Trainer), and does not propagate: a filter on it (kept when deepspeed creates it later) hands each record
    to our handlers instead (rank log; console on rank 0, filtered), and stops its own."""

    def reroute(record: logging.LogRecord) -> bool:
        logging.getLogger().handle(record)
        return False

    logging.getLogger("DeepSpeed").addFilter(reroute)
