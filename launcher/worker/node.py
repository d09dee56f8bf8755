"""Before the model loads, every rank checks the facts of its own node (host memory for ZeRO offload, the
toolchain for DeepSpeed's ops, flash-attn, bitsandbytes) with validate's own function: on Slurm validate saw
the login node only. A problem ends the rank with validate's message and a "fatal" event (no restart fixes
it); local rank 0 records it for its node."""
from __future__ import annotations

import logging
import sys
from typing import Any

from launcher.exitcodes import EXIT_USAGE
from launcher.rundir import RunDir, append_event

log = logging.getLogger("launcher.worker")


def node_messages(cfg: Any, ds_config_path: str) -> list[str]:
    """`key=value: fix` of each node problem here (the text validate prints after `error:`/`warning:`)."""
    from launcher.facts import node_facts
    from launcher.validate.node import node_problems

    return [str(p).partition(": ")[2] for p in node_problems(cfg, node_facts(cfg, ds_config_path))]


def check_node(cfg: Any, run: RunDir, rank: int, local_rank: int, host: str) -> None:
    messages = node_messages(cfg, str(run.ds_config_auto))
    if not messages:
        return
    from launcher.worker.preflight import fatal_event

    for message in messages:
        log.error("node %s: %s", host, message)
        if local_rank == 0:
            print(f"error: {message} (rank {rank} on {host})", file=sys.stderr, flush=True)
            append_event(run, fatal_event(rank, host, "node", message, EXIT_USAGE))
    logging.shutdown()
    sys.exit(EXIT_USAGE)
