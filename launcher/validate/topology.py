"""Where and how wide a run is, its batch arithmetic and its loggers."""
from __future__ import annotations

from typing import Any, Iterator

from launcher.facts import Facts
from launcher.topology import pick_backend, world_size
from launcher.schema import BackendType, ClusterType, Device
from launcher.validate.problem import Problem

REPORT_TO = ("tensorboard", "wandb")


WANDB_MODES = ("online", "offline", "disabled")


def check_topology(cfg: Any, facts: Facts) -> Iterator[Problem]:
    # gpus, nodes >= 1: schema ranges (validate/ranges.py)
    if cfg.nodes > 1 and cfg.cluster.name == ClusterType.local:
        yield from _check_local_nodes(cfg, facts)
    elif cfg.nodes == 1 and cfg.node_rank != 0:
        yield Problem("node_rank", cfg.node_rank, "must be 0 with nodes=1")
    if cfg.backend.name == BackendType.single and world_size(cfg) > 1:
        yield Problem("backend", cfg.backend.name, f"runs one process but gpus={cfg.gpus} x nodes={cfg.nodes} "
                      "asks for more; use backend=torchrun (or auto), or gpus=1")
    # On Slurm the GPUs are the allocation's, not this (login) node's.
    if cfg.device == Device.cuda and cfg.cluster.name == ClusterType.local and cfg.gpus > facts.visible_gpus:
        where = f"{facts.visible_gpus} CUDA GPU(s) visible on {facts.hostname}"
        if cfg.dry_run:
            yield Problem("gpus", cfg.gpus, f"{where}; fine for a dry run, a real run needs them", error=False)
        else:
            yield Problem("gpus", cfg.gpus, f"{where}; use gpus<={facts.visible_gpus}"
                          + (", or device=cpu to run gloo ranks on the CPU" if facts.visible_gpus == 0 else ""))


def _check_local_nodes(cfg: Any, facts: Facts) -> Iterator[Problem]:
    """Several nodes without a cluster: the same `launch` runs on each node with its node_rank."""
    if not 0 <= cfg.node_rank < cfg.nodes:
        yield Problem("node_rank", cfg.node_rank, f"must be in [0, {cfg.nodes}): this node's rank (node 0 hosts "
                      "the rendezvous); run the same launch on each node with node_rank=0, 1, ...")
    if pick_backend(cfg) != BackendType.deepspeed.value:
        if cfg.hostfile:
            yield Problem("hostfile", cfg.hostfile, "is read by the deepspeed launcher only; use backend=deepspeed, "
                          "or give torchrun node 0's address with master_addr=HOST")
        if not cfg.master_addr:
            yield Problem("master_addr", cfg.master_addr, f"nodes={cfg.nodes} without a cluster needs node 0's "
                          "address: run `launch ... master_addr=NODE0 node_rank=I` on each node (torchrun), or use "
                          "backend=deepspeed hostfile=PATH, or a cluster (cluster=slurm)")
        return
    h = facts.hostfile
    if not cfg.hostfile:
        yield Problem("hostfile", None, f"backend=deepspeed across nodes={cfg.nodes} needs a DeepSpeed hostfile "
                      "(one `HOST slots=N` line per node): hostfile=PATH")
    elif h is None or not h.exists:
        yield Problem("hostfile", cfg.hostfile, "no such file; write one `HOST slots=N` line per node")
    elif h.error:
        yield Problem("hostfile", cfg.hostfile, f"{h.error}; fix the file")
    elif len(h.hosts) < cfg.nodes:
        yield Problem("nodes", cfg.nodes, f"{cfg.hostfile} lists {len(h.hosts)} host(s); add hosts to it or use "
                      f"nodes={len(h.hosts)}")
    else:
        for host, slots in h.hosts[:cfg.nodes]:
            if slots < cfg.gpus:
                yield Problem("gpus", cfg.gpus, f"{cfg.hostfile} gives {host} {slots} slot(s); use gpus<={slots} or "
                              "raise its slots")


def _nearest_multiples(value: int, step: int) -> list[int]:
    below = (value // step) * step
    return [m for m in (below, below + step) if m > 0]


def check_batch(cfg: Any) -> Iterator[Problem]:
    t = cfg.train
    world = world_size(cfg)
    if cfg.global_batch_size is None or world < 1 or t.per_device_train_batch_size < 1:
        return
    step = t.per_device_train_batch_size * world
    if cfg.global_batch_size < 1 or cfg.global_batch_size % step:
        fixes = " or ".join(f"global_batch_size={m}" for m in _nearest_multiples(cfg.global_batch_size, step))
        per_device = [b for b in range(1, cfg.global_batch_size + 1)
                      if cfg.global_batch_size % (b * world) == 0 and b <= 4 * t.per_device_train_batch_size]
        alt = f", or per_device_train_batch_size={per_device[-1]}" if per_device else ""
        yield Problem("global_batch_size", cfg.global_batch_size,
                      f"not divisible by per_device_train_batch_size x world size = "
                      f"{t.per_device_train_batch_size} x {world} = {step}; use {fixes}{alt}")


def check_logger(cfg: Any, facts: Facts) -> Iterator[Problem]:
    for r in cfg.logger.report_to:
        if r not in REPORT_TO:
            yield Problem("logger.report_to", list(cfg.logger.report_to),
                          f"unknown logger {r!r}; use any of {', '.join(REPORT_TO)}, e.g. logger=tensorboard")
    if cfg.logger.wandb_mode not in WANDB_MODES:
        yield Problem("logger.wandb_mode", cfg.logger.wandb_mode, f"use one of {', '.join(WANDB_MODES)}")
    if facts.wandb_credentials is False:
        yield Problem("logger.wandb_mode", "online", "wandb has no credentials here: no WANDB_API_KEY in the "
                      "environment and no api.wandb.ai entry in ~/.netrc; run `wandb login` (or export "
                      "WANDB_API_KEY), or use logger.wandb_mode=offline and `wandb sync` later", error=not cfg.dry_run)
