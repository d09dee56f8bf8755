"""build_plan(config, facts, run_dir) -> LaunchPlan: what will run, where, with which numbers.

Pure: no I/O, no env reads, frozen dataclasses out. World size, backend and batch arithmetic live in
launcher.topology (validate checks the same numbers); the resolved config the worker reads carries the plan's
numbers. Backends only carry a plan out.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

from omegaconf import OmegaConf

from launcher import visible_devices
from launcher.facts import Facts
from launcher.schema import BackendType, ClusterType, Device
from launcher.topology import BatchPlan, pick_backend, plan_batch, procs_per_node
from launcher.zero import ZeroPlan, plan_zero

WORKER_MODULE = "launcher.worker"
#: torchrun's and DeepSpeed's default rendezvous port: every node must agree on it, so no random pick
DEFAULT_MASTER_PORT = 29500
#: torchrun reads any flag from PET_<FLAG>: on Slurm each node's values come from the allocation
SLURM_RENDEZVOUS = {"PET_NNODES": "$SLURM_NNODES", "PET_NODE_RANK": "$SLURM_NODEID", "PET_MASTER_ADDR": "$MASTER_ADDR"}
#: launch.sh's rendezvous port of the current attempt (BASE_PORT + restart index: a fresh store per attempt,
#: the same on every node); an argv word holding it is expanded by the shell
PORT = "$PORT"
#: how long torchrun lets its ranks stop after a signal (save a checkpoint) before it kills them
SHUTDOWN_TIMEOUT_S = 120
#: torchrun runs one attempt (launch.sh's loop restarts it with a fresh store: its own in-place restart
#: reuses a stale store with gloo) and gives the ranks time to checkpoint when signalled
TORCHRUN_ONE_ATTEMPT = ("--max-restarts=0", f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}")


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
    #: ZeRO stage, offload, optimizer, memory estimate and the ds config the worker uses; None = no DeepSpeed
    zero: Optional[ZeroPlan] = None
    #: the node this launch runs on (launch.sh runs that node's command; any node's by argument)
    node_rank: int = 0
    cluster: str = "local"
    #: env whose values the shell expands on each node at run time (node rank, master address from Slurm)
    node_env: Mapping[str, str] = field(default_factory=dict)
    #: restarts of the rank group after a rank dies (launch.sh's loop); each resumes from a checkpoint
    max_restarts: int = 0
    #: the first attempt's rendezvous port (a number, or "$MASTER_PORT" from the sbatch script); None: the
    #: command picks its own (torchrun --standalone) or needs none (one process)
    base_port: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("config")
        return d

    def to_shell(self, cwd: str) -> str:
        """launch.sh: the exact command(s) and the restart loop around them, re-runnable; what dry_run prints.

        `bash launch.sh [NODE_RANK]` (default: this launch's node) runs that node's command once per attempt."""
        q = shlex.quote
        lines = [
            "#!/usr/bin/env bash",
            f"# run dir: {self.run_dir}",
            f"# backend: {self.backend}, nodes {self.nodes} x {self.nproc_per_node} process(es) per node "
            f"= world size {self.world_size}",
            f"# batch: {self.batch.describe()}",
            "# ranks (rank: node/local_rank device): "
            + ", ".join(f"{r.rank}: {r.node}/{r.local_rank} {r.device}" for r in self.ranks),
            *(f"# {line}" for line in (self.zero.describe() if self.zero else ())),
            "set -uo pipefail",
            f"cd {q(cwd)}",
            f"RUN_DIR={q(self.run_dir)}",
            'NODE="${SLURM_NODEID:-0}"' if self.cluster == "slurm" else f'NODE="${{1:-{self.node_rank}}}"',
            f"MAX_RESTARTS={self.max_restarts}",
            *([f'BASE_PORT="{self.base_port}"' if self.base_port.startswith("$") else f"BASE_PORT={self.base_port}"]
              if self.base_port else []),
            'LOG="$RUN_DIR/logs/launcher.node$NODE.log"  # this node\'s launcher output (which rank failed)',
            "",
            "# One attempt: this node's command; its ranks resume when LAUNCHER_RESUME=1.",
            "attempt() {",
        ]
        if len(self.commands) == 1:
            lines += [f"  {line}" for line in self._node_lines(self.commands[0])]
        else:
            lines.append('  case "$NODE" in')
            for cmd in self.commands:
                lines.append(f"    {cmd.node})")
                lines += [f"      {line}" for line in self._node_lines(cmd)]
                lines.append("      ;;")
            lines += ['    *) echo "launch.sh: no node $NODE in this plan" >&2; exit 2;;', "  esac"]
        lines += ["}", "", *self._signal_lines(), "", *self._loop_lines()]
        return "\n".join(lines) + "\n"

    def _node_lines(self, cmd: NodeCommand) -> list[str]:
        argv = cmd.argv if self.backend == "single" else (cmd.argv[0], "-m", "launcher.pdeathsig", *cmd.argv)
        return [*(f"export {k}={shlex.quote(v)}" for k, v in sorted(cmd.env.items())),
                *(f'export {k}="{v}"' for k, v in sorted(self.node_env.items())),  # expanded on the node
                "exec " + " ".join(map(shell_word, argv))]

    def _signal_lines(self) -> list[str]:
        if self.cluster == "slurm":
            forward = ["# On Slurm, Slurm signals the step's processes itself (torchrun forwards to its ranks); the",
                       "# request file makes the ranks checkpoint and the batch script requeue the job.",
                       'forward() { touch "${LAUNCHER_PREEMPT_FILE:-/dev/null}"; }']
        elif self.backend == "deepspeed":
            forward = ["# The deepspeed runner does not forward signals: they go to the ranks (children of its",
                       "# launch.py child); before those exist, to launch.py, which stops its ranks.",
                       'forward() { pkill -"$1" -P "$(pgrep -d, -P "$PID")" || pkill -"$1" -P "$PID" '
                       '|| kill -s "$1" "$PID"; } 2>/dev/null']
        else:
            who = "torchrun, which forwards it to its ranks once" if self.backend == "torchrun" else "the one rank"
            forward = [f"# to {who}", 'forward() { kill -s "$1" "$PID" 2>/dev/null; }']
        return [
            "# A signal stops the loop and reaches every rank once; the ranks checkpoint and stop.",
            *forward,
            'SIG=0; PID=""',
            "trap 'SIG=15; forward TERM' TERM; trap 'SIG=2; forward INT' INT; trap 'SIG=1; forward TERM' HUP",
        ]

    def _loop_lines(self) -> list[str]:
        py = self.commands[0].argv[0]
        return [
            "# A rank that dies ends the attempt; the rank group restarts (at most MAX_RESTARTS times) with a",
            "# fresh rendezvous and resumes from the newest complete checkpoint. launcher.restarts records each",
            "# attempt's end in attempts.jsonl and prints `restart` or the status to exit with.",
            "RESTART=0",
            'while [ "$SIG" = 0 ]; do',
            '  export LAUNCHER_RESTART="$RESTART"',
            '  if [ "$RESTART" -gt 0 ]; then export LAUNCHER_RESUME=1; fi',
            *(['  PORT=$(( BASE_PORT + RESTART ))'] if self.base_port else []),
            '  STARTED="$(date +%s.%N)"; OFFSET="$(stat -c %s "$LOG" 2>/dev/null || echo 0)"',
            '  attempt 2> >(tee -a "$LOG" >&2) &',
            "  PID=$!",
            '  while wait "$PID"; rc=$?; kill -0 "$PID" 2>/dev/null; do :; done  # a trap ends `wait` early',
            f'  NEXT="$({shlex.quote(py)} -m launcher.restarts "$RUN_DIR" --node "$NODE" --restart "$RESTART" '
            '--max-restarts "$MAX_RESTARTS" \\',
            '         --exit-code "$rc" --signal "$SIG" --log "$LOG" --log-offset "$OFFSET" --started "$STARTED"'
            + (' --port "$PORT"' if self.base_port and self.backend == "deepspeed" else '') + ')" || NEXT="$rc"',
            '  [ "$NEXT" = restart ] || exit "$NEXT"',
            "  RESTART=$(( RESTART + 1 ))",
            "done",
            "exit $(( 128 + SIG ))",
        ]


def shell_word(arg: str) -> str:
    """shlex.quote, except that an argument holding this attempt's port ($PORT) is left to the shell."""
    if PORT in arg and re.fullmatch(r"[\w.,:=/+-]*", arg.replace(PORT, "")):
        return f'"{arg}"'
    return shlex.quote(arg)


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
    if str(getattr(cfg.stage.name, "value", cfg.stage.name)) == "eval":
        # benchmarks read local task data and models only: a missing dataset fails at once, never downloads
        env |= {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    if cfg.device == Device.cpu and (cfg.zero.name != "none" or cfg.backend.name == BackendType.deepspeed):
        env["DS_ACCELERATOR"] = "cpu"  # else DeepSpeed picks CUDA wherever a GPU is visible
    report_to = list(cfg.logger.report_to)
    if "tensorboard" in report_to:
        env["TENSORBOARD_LOGGING_DIR"] = f"{run_dir}/tensorboard"
    if "wandb" in report_to:
        env |= {"WANDB_DIR": run_dir, "WANDB_PROJECT": cfg.logger.project, "WANDB_MODE": cfg.logger.wandb_mode,
                "WANDB_NAME": cfg.name}
    return env


def deepspeed_env(cfg: Any, facts: Facts, backend: str, nproc: int) -> dict[str, str]:
    """UUID or MIG entries of CUDA_VISIBLE_DEVICES, which the deepspeed runner drops, for the ranks to restore."""
    visible = visible_devices.entries(facts.cuda_visible_devices)
    if backend != "deepspeed" or cfg.nodes != 1 or cfg.device != Device.cuda or visible_devices.are_indices(visible):
        return {}
    return {visible_devices.KEPT_ENV: ",".join(visible[:nproc])}


def build_plan(cfg: Any, facts: Facts, run_dir: str) -> LaunchPlan:
    batch = plan_batch(cfg)
    backend = pick_backend(cfg)
    nproc = procs_per_node(cfg, backend)
    device = Device(cfg.device)
    ranks = tuple(
        Rank(rank=n * nproc + i, node=n, local_rank=i, device=f"cuda:{i}" if device == Device.cuda else "cpu")
        for n in range(cfg.nodes) for i in range(nproc)
    )
    env = {**worker_env(cfg, facts, run_dir, nproc), **deepspeed_env(cfg, facts, backend, nproc)}
    node_env: dict[str, str] = {}
    if cfg.cluster.name == ClusterType.slurm:
        argvs, node_env = slurm_node_command(cfg, facts, backend, nproc, run_dir, env)
    else:
        argvs = node_argvs(cfg, facts, backend, nproc, run_dir)
    commands = tuple(NodeCommand(node=n, argv=argv, env=env) for n, argv in enumerate(argvs))

    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    config["output_dir"] = run_dir
    config["train"]["gradient_accumulation_steps"] = batch.gradient_accumulation_steps
    return LaunchPlan(run_dir=run_dir, backend=backend, nodes=cfg.nodes, nproc_per_node=nproc, world_size=len(ranks),
                      batch=batch, ranks=ranks, commands=commands, config=config, cluster=cfg.cluster.name.value,
                      node_env=node_env, zero=plan_zero(cfg, facts, nproc), node_rank=cfg.node_rank,
                      max_restarts=cfg.max_restarts, base_port=base_port(cfg, facts, backend))


def base_port(cfg: Any, facts: Facts, backend: str) -> Optional[str]:
    """The first attempt's rendezvous port; each restart adds 1 (every node counts restarts alike)."""
    if backend == "single" or (backend == "torchrun" and cfg.nodes == 1 and cfg.cluster.name != ClusterType.slurm):
        return None  # one process, or torchrun --standalone (a free port of its own per attempt)
    if cfg.cluster.name == ClusterType.slurm:
        return "$MASTER_PORT"  # the sbatch script's, derived from the job id
    if backend == "deepspeed" and cfg.nodes == 1:
        return str(cfg.master_port or facts.free_port)
    return str(cfg.master_port or DEFAULT_MASTER_PORT)


def slurm_node_command(cfg: Any, facts: Facts, backend: str, nproc: int, run_dir: str, env: Mapping[str, str]
                       ) -> tuple[list[tuple[str, ...]], dict[str, str]]:
    """On Slurm every node runs the same launch.sh (srun starts it): one torchrun per node with a static
    rendezvous on the allocation's first host; node count, node rank and cores come from Slurm at run time."""
    node_env = {} if "OMP_NUM_THREADS" in env else \
        {"OMP_NUM_THREADS": f"$(( SLURM_CPUS_ON_NODE / {nproc} > 1 ? SLURM_CPUS_ON_NODE / {nproc} : 1 ))"}
    py = cfg.cluster.python or facts.python  # a container's own interpreter (validate.container)
    if backend == "single":
        return [(py, "-m", WORKER_MODULE, run_dir)], node_env
    return [torchrun_argv(py, run_dir, f"--nproc-per-node={nproc}", f"--master-port={PORT}")], \
        {**SLURM_RENDEZVOUS, **node_env}


def torchrun_argv(py: str, run_dir: str, *flags: str) -> tuple[str, ...]:
    """torchrun running one attempt of the worker; flags: its rendezvous and processes per node."""
    return (py, "-m", "torch.distributed.run", *flags, *TORCHRUN_ONE_ATTEMPT, "-m", WORKER_MODULE, run_dir)


def node_argvs(cfg: Any, facts: Facts, backend: str, nproc: int, run_dir: str) -> list[tuple[str, ...]]:
    """The command each node runs, node 0 first."""
    py, worker = facts.python, ("-m", WORKER_MODULE, run_dir)
    nodes = range(cfg.nodes)
    if backend == "single":
        return [(py, *worker)]
    if backend == "torchrun":
        if cfg.nodes == 1:
            return [torchrun_argv(py, run_dir, "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}")]
        return [torchrun_argv(py, run_dir, f"--nnodes={cfg.nodes}", f"--node-rank={n}",
                              f"--master-addr={cfg.master_addr}", f"--master-port={PORT}", f"--nproc-per-node={nproc}")
                for n in nodes]
    # deepspeed: --no_local_rank, else it appends --local_rank=N to the worker's argv; --module runs it as -m.
    runner, tail = (py, "-m", "deepspeed.launcher.runner"), ("--no_local_rank", "--module", WORKER_MODULE, run_dir)
    if cfg.nodes == 1:
        visible = visible_devices.entries(facts.cuda_visible_devices) if cfg.device == Device.cuda else []
        # Without --include the runner would renumber GPUs from 0 and ignore CUDA_VISIBLE_DEVICES; it takes
        # indices only: UUID/MIG entries reach the ranks through visible_devices.KEPT_ENV (deepspeed_env).
        slots = f"--include=localhost:{','.join(visible[:nproc])}" if visible and visible_devices.are_indices(visible) \
            else f"--num_gpus={nproc}"
        return [(*runner, slots, f"--master_port={PORT}", *tail)]
    # Each node starts its own ranks (--no_ssh): no pdsh or passwordless ssh, and the same model as torchrun.
    addr = cfg.master_addr or facts.hostfile.hosts[0][0]
    return [(*runner, f"--hostfile={cfg.hostfile}", f"--num_nodes={cfg.nodes}", f"--num_gpus={nproc}", "--no_ssh",
             f"--node_rank={n}", f"--master_addr={addr}", f"--master_port={PORT}", *tail) for n in nodes]
