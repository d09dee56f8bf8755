"""cluster=slurm: the sbatch settings."""
from __future__ import annotations

import re
from typing import Any, Iterator

from launcher.facts import Facts
from launcher.schema import BackendType, ClusterType, Device
from launcher.secrets import env_indirect
from launcher.validate.problem import Problem

SIGNALS = ("USR1", "USR2", "TERM", "INT", "HUP", "URG")


_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_time_seconds(value: str) -> int | None:
    """Slurm's time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS -> seconds (None if invalid)."""
    m = _SLURM_TIME.match(value.strip())
    if not m:
        return None
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        hh, mm, ss = (parts + [0, 0])[:3]
        return int(days) * 86400 + hh * 3600 + mm * 60 + ss
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def check_slurm(cfg: Any, facts: Facts) -> Iterator[Problem]:
    c = cfg.cluster
    if c.name != ClusterType.slurm:
        return
    if cfg.backend.name == BackendType.deepspeed:
        yield Problem("backend", "deepspeed", "on Slurm, srun starts one torchrun per node and ZeRO runs through the "
                      "transformers integration: use backend=auto (or torchrun) with zero=...")
    if not facts.sbatch and not cfg.dry_run:
        yield Problem("cluster", "slurm", "sbatch is not on PATH here; submit from a Slurm login node, use "
                      "dry_run=true to see the script, or cluster=local")
    if c.signal.removeprefix("SIG") not in SIGNALS or c.signal.startswith("SIG"):
        yield Problem("cluster.signal", c.signal, f"use one of {', '.join(SIGNALS)} (USR2 by default: NCCL may use USR1)")
    if c.time is not None:
        limit = slurm_time_seconds(str(c.time))
        if limit is None:
            yield Problem("cluster.time", c.time, "not a Slurm time; use MM, HH:MM:SS or D-HH:MM:SS, e.g. 04:00:00")
        elif limit <= c.signal_time:
            yield Problem("cluster.signal_time", c.signal_time, f"the warning would come before the job starts "
                          f"(time limit {limit} s); lower it or raise cluster.time")
    secret_vars = sorted(env_indirect("\n".join(c.setup))[1])
    export = str((c.additional_parameters or {}).get("export") or "ALL")
    missing = [v for v in secret_vars if v not in export.split(",")]
    if missing and not export.startswith("ALL"):
        yield Problem("cluster.additional_parameters.export", export, f"the secrets of cluster.setup reach the job "
                      f"through sbatch's environment (sbatch.sh names them only): add {','.join(missing)} to it, "
                      "or start it with ALL")
    if c.gpus_per_node is not None and c.gpus_per_node < cfg.gpus and cfg.device == Device.cuda:
        yield Problem("cluster.gpus_per_node", c.gpus_per_node, f"fewer GPUs than gpus={cfg.gpus} ranks per node; "
                      f"leave it unset (= gpus) or raise it")
