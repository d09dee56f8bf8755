"""build_plan(config, facts, run_dir) -> LaunchPlan: what will run, where, with which numbers.

Pure: no I/O, no env reads, frozen dataclasses out. The batch arithmetic lives here and nowhere else;
the resolved config the worker reads carries the plan's numbers. Backends only carry a plan out.
"""
from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from omegaconf import OmegaConf

from launcher.facts import Facts
from launcher.schema import BackendType, ClusterType, Device

WORKER_MODULE = "launcher.worker"
#: torchrun reads any flag from PET_<FLAG>: on Slurm each node's values come from the allocation
SLURM_RENDEZVOUS = {"PET_NNODES": "$SLURM_NNODES", "PET_NODE_RANK": "$SLURM_NODEID",
                    "PET_MASTER_ADDR": "$MASTER_ADDR", "PET_MASTER_PORT": "$MASTER_PORT"}


@dataclass(frozen=True)
class BatchPlan:
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    world_size: int
    global_batch_size: int
    #: gradient_accumulation_steps was derived from the config's global_batch_size
    derived: bool

    def describe(self) -> str:
        how = " (grad accum derived from global_batch_size)" if self.derived else ""
        return (f"per_device_train_batch_size {self.per_device_train_batch_size} x gradient_accumulation_steps "
                f"{self.gradient_accumulation_steps} x world size {self.world_size} = global batch "
                f"{self.global_batch_size}{how}")


@dataclass(frozen=True)
class Rank:
    rank: int
    node: int
    local_rank: int
    device: str


@dataclass(frozen=True)
class NodeCommand:
    node: int
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchPlan:
    run_dir: str
    backend: str
    nodes: int
    nproc_per_node: int
    world_size: int
    batch: BatchPlan
    ranks: tuple[Rank, ...]
    commands: tuple[NodeCommand, ...]
    #: the fully resolved config, with the plan's numbers, that the worker reads from the run dir
    config: Mapping[str, Any]
    cluster: str = "local"
    #: env whose values the shell expands on each node at run time (node rank, master address from Slurm)
    node_env: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("config")
        return d

    def to_shell(self, cwd: str) -> str:
        """launch.sh: the exact command(s), re-runnable; also what dry_run prints."""
        lines = [
            "#!/usr/bin/env bash",
            f"# run dir: {self.run_dir}",
            f"# backend: {self.backend}, nodes {self.nodes} x {self.nproc_per_node} process(es) per node "
            f"= world size {self.world_size}",
            f"# batch: {self.batch.describe()}",
            "# ranks (rank: node/local_rank device): "
            + ", ".join(f"{r.rank}: {r.node}/{r.local_rank} {r.device}" for r in self.ranks),
            "set -euo pipefail",
            f"cd {shlex.quote(cwd)}",
        ]
        for cmd in self.commands:
            if len(self.commands) > 1:
                lines.append(f"# node {cmd.node}")
            lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(cmd.env.items())]
            lines += [f'export {k}="{v}"' for k, v in sorted(self.node_env.items())]
            lines.append("exec " + shlex.join(cmd.argv))
        return "\n".join(lines) + "\n"


def plan_batch(cfg: Any) -> BatchPlan:
    world = cfg.gpus * cfg.nodes
    per_device = cfg.train.per_device_train_batch_size
    if cfg.global_batch_size is not None:
        accum = cfg.global_batch_size // (per_device * world)
        return BatchPlan(per_device, accum, world, cfg.global_batch_size, derived=True)
    accum = cfg.train.gradient_accumulation_steps
    return BatchPlan(per_device, accum, world, per_device * accum * world, derived=False)


def pick_backend(cfg: Any) -> str:
    if cfg.backend.name != BackendType.auto:
        return cfg.backend.name.value
    return "single" if cfg.gpus * cfg.nodes == 1 else "torchrun"


def threads_per_rank(cfg: Any, facts: Facts, nproc: int) -> dict[str, str]:
    """OMP_NUM_THREADS = cores per node / processes per node: left unset, ranks oversubscribe the cores
    (5-20x slower on CPU). On Slurm the cores are the task's, known only on the node unless requested."""
    if cfg.cluster.name == ClusterType.slurm:
        if cfg.cluster.cpus_per_task is None:
            return {}
        return {"OMP_NUM_THREADS": str(max(1, cfg.cluster.cpus_per_task // nproc))}
    return {"OMP_NUM_THREADS": str(max(1, facts.cpu_count // nproc))}


def worker_env(cfg: Any, facts: Facts, run_dir: str, nproc: int) -> dict[str, str]:
    env = {**threads_per_rank(cfg, facts, nproc), "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    report_to = list(cfg.logger.report_to)
    if "tensorboard" in report_to:
        env["TENSORBOARD_LOGGING_DIR"] = f"{run_dir}/tensorboard"
    if "wandb" in report_to:
        env |= {"WANDB_DIR": run_dir, "WANDB_PROJECT": cfg.logger.project, "WANDB_MODE": cfg.logger.wandb_mode,
                "WANDB_NAME": cfg.name}
    return env


def build_plan(cfg: Any, facts: Facts, run_dir: str) -> LaunchPlan:
    batch = plan_batch(cfg)
    backend = pick_backend(cfg)
    nproc = 1 if backend == "single" else cfg.gpus
    world = nproc * cfg.nodes
    device = Device(cfg.device)
    ranks = tuple(
        Rank(rank=n * nproc + i, node=n, local_rank=i, device=f"cuda:{i}" if device == Device.cuda else "cpu")
        for n in range(cfg.nodes) for i in range(nproc)
    )
    slurm = cfg.cluster.name == ClusterType.slurm
    worker = ["-m", WORKER_MODULE, run_dir]
    node_env: dict[str, str] = {}
    if backend == "single":
        argv = (facts.python, *worker)
    elif slurm:  # static rendezvous on the allocation's first host; nnodes and node rank from Slurm
        argv = (facts.python, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--max-restarts=0",
                *worker)
        node_env = dict(SLURM_RENDEZVOUS)
    else:
        argv = (facts.python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                f"--nproc-per-node={nproc}", "--max-restarts=0", *worker)
    env = worker_env(cfg, facts, run_dir, nproc)
    if slurm and "OMP_NUM_THREADS" not in env:
        node_env["OMP_NUM_THREADS"] = f"$(( SLURM_CPUS_ON_NODE / {nproc} > 1 ? SLURM_CPUS_ON_NODE / {nproc} : 1 ))"
    commands = (NodeCommand(node=0, argv=argv, env=env),)

    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    config["output_dir"] = run_dir
    config["train"]["gradient_accumulation_steps"] = batch.gradient_accumulation_steps
    return LaunchPlan(run_dir=run_dir, backend=backend, nodes=cfg.nodes, nproc_per_node=nproc, world_size=world,
                      batch=batch, ranks=ranks, commands=commands, config=config, cluster=cfg.cluster.name.value,
                      node_env=node_env)
