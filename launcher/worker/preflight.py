"""Preflight (preflight=true): before the model loads, every rank checks what would otherwise fail late or
hang: its device, free disk in the run dir for the planned checkpoints, that the run dir is the same shared
directory on every rank, and one collective with a timeout. A failure names the rank, host and check,
appends a "fatal" event to attempts.jsonl (a restart cannot fix it) and ends the rank at once.

The decisions are pure functions (device_problem, checkpoint_bytes, disk_problem); `local_checks` and
`collective_checks` gather the facts.
"""
from __future__ import annotations

import datetime
import logging
import os
import secrets
import shutil
import socket
import sys
from dataclasses import dataclass
from typing import Any, Optional

from launcher.rundir import RunDir, append_event

log = logging.getLogger("launcher.preflight")

#: a rank that fails a preflight check exits with this (no restart helps)
EXIT_PREFLIGHT = 1
#: test hook: the free bytes the disk check sees instead of the file system's
FREE_DISK_ENV = "LAUNCHER_TEST_FREE_DISK_BYTES"
#: the preflight's collective waits at most this long (or ddp_timeout, if shorter) for every rank
COLLECTIVE_TIMEOUT_S = 300
#: a GPU with less free memory than this (or than this share of its total) is taken
MIN_FREE_GPU_BYTES, MIN_FREE_GPU_SHARE = 2**30, 0.1
#: bytes per trainable parameter of Adam's state in a checkpoint (two fp32 moments)
OPTIMIZER_BYTES = 8
ADAPTERS_SAVING_THE_MODEL = ("full", "freeze")
TOKEN_FILE = ".preflight_token"


@dataclass(frozen=True)
class Failure:
    rank: int
    host: str
    #: device, disk, shared_dir, collective
    check: str
    message: str

    def describe(self) -> str:
        return f"preflight failed on rank {self.rank} ({self.host}), check {self.check}: {self.message}"


def device_problem(device: str, local_rank: int, gpu_count: int, free: int = 0, total: int = 0,
                   visible: str = "unset") -> Optional[str]:
    """visible: CUDA_VISIBLE_DEVICES, for the message."""
    if device != "cuda":
        return None
    if local_rank >= gpu_count:
        return (f"local rank {local_rank} was given GPU {local_rank}, but this node sees {gpu_count} GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={visible}); ask for at most {gpu_count} per node (gpus=)")
    if free < MIN_FREE_GPU_BYTES or free < MIN_FREE_GPU_SHARE * total:
        return (f"GPU {local_rank} has {size(free)} free of {size(total)}: another process holds it "
                "(nvidia-smi shows which)")
    return None


def checkpoint_bytes(params: Optional[int], adapter: str, precision: str, save_total_limit: Optional[int]) -> int:
    """A low estimate of the disk the planned checkpoints and final/ take: with the full model saved
    (full, freeze), its weights per checkpoint (plus Adam's state for full), save_total_limit of them (at
    least 1) plus the one being written, plus final/. Adapters (LoRA, prefix) save a few MB: 0."""
    if not params or adapter not in ADAPTERS_SAVING_THE_MODEL:
        return 0
    weights = params * (4 if precision == "fp32" else 2)
    per_checkpoint = weights + (params * OPTIMIZER_BYTES if adapter == "full" else 0)
    return per_checkpoint * (max(save_total_limit or 1, 1) + 1) + weights


def disk_problem(path: str, free: int, needed: int) -> Optional[str]:
    if free >= needed:
        return None
    return (f"{path} has {size(free)} free, the planned checkpoints and final/ need about {size(needed)}; "
            "free space, choose another output_dir or lower train.save_total_limit")


def size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def local_checks(cfg: Any, run: RunDir, local_rank: int, precision: str) -> list[tuple[str, str]]:
    """(check, message) of each failed check this rank can make alone (before torch.distributed)."""
    from launcher.facts import count_model_params

    problems = []
    if cfg.device.value == "cuda":
        import torch

        count = torch.cuda.device_count()
        free, total = torch.cuda.mem_get_info(local_rank) if local_rank < count else (0, 0)
        if msg := device_problem("cuda", local_rank, count, free, total,
                                 os.environ.get("CUDA_VISIBLE_DEVICES", "unset")):
            problems.append(("device", msg))
    model = count_model_params(cfg.model.model_name_or_path)
    params = model.total_params if model else cfg.model.num_params
    needed = checkpoint_bytes(params, cfg.adapter.name.value, precision, cfg.train.save_total_limit)
    free = int(os.environ.get(FREE_DISK_ENV) or shutil.disk_usage(run.root).free)
    if msg := disk_problem(str(run.root), free, needed):
        problems.append(("disk", msg))
    return problems


def collective_checks(run: RunDir, rank: int, timeout_s: int) -> list[Failure]:
    """On every rank together: one barrier with a timeout (gloo's monitored_barrier names a rank that does not
    arrive), then rank 0's token read back from the run dir by every rank. Every rank returns every
    rank's failures (gathered), so rank 0 can record them in its run dir even when another's is not shared."""
    import torch.distributed as dist

    host = socket.gethostname()
    timeout = datetime.timedelta(seconds=timeout_s)
    try:
        # monitored_barrier names the ranks that did not arrive (on rank 0); it needs gloo: under NCCL a gloo
        # group, whose creation connects every pair of ranks and can time out too
        group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
        dist.monitored_barrier(group=group, timeout=timeout, wait_all_ranks=True)
    except RuntimeError as e:  # torch.distributed's errors (DistError, DistStoreError) are RuntimeErrors
        return [Failure(rank, host, "collective", f"not every rank reached the preflight barrier within "
                                                  f"{timeout_s} s (train.ddp_timeout): {e}")]
    token = [secrets.token_hex(16) if rank == 0 else None]
    token_file = run.root / TOKEN_FILE
    if rank == 0:
        token_file.write_text(token[0])
    dist.broadcast_object_list(token, src=0, group=group)
    try:
        seen = token_file.read_text()
    except OSError:
        seen = None
    mine = None if seen == token[0] else Failure(
        rank, host, "shared_dir", f"the run dir {run.root} is not the one rank 0 wrote to (its token file is "
        f"{'missing' if seen is None else 'different'}): put output_dir on storage every node shares")
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine, group=group)
    if rank == 0:
        token_file.unlink(missing_ok=True)
    if group is not None:
        dist.destroy_process_group(group)
    return [f for f in everyone if f is not None]


def fail(run: RunDir, failures: list[Failure], rank: int) -> None:
    """Log, print and record (a fatal event) each failure this rank knows of: its own, and on rank 0 every
    rank's; then exit at once, without a teardown that could wait on a rank that is gone."""
    for f in failures:
        if f.rank == rank or rank == 0:
            log.error("%s", f.describe())
            print(f"error: {f.describe()}", file=sys.stderr, flush=True)
            append_event(run, fatal_event(f.rank, f.host, f"preflight:{f.check}", f.message, EXIT_PREFLIGHT))
    logging.shutdown()
    os._exit(EXIT_PREFLIGHT)


def fatal_event(rank: int, host: str, check: str, message: str, exit_code: int) -> dict:
    import time

    return {"event": "fatal", "time": time.time(), "rank": rank, "host": host, "check": check,
            "message": message, "exit_code": exit_code}
