"""Slurm: render a readable sbatch script from a plan, submit it (one job, or a sweep's job array, recording
the job ids in the run dirs and their locks), follow and cancel jobs.

render_sbatch() is pure (sorted #SBATCH lines, values shell-quoted). In the allocation, `srun` starts one
task per node that runs the run dir's launch.sh (torchrun with the node rank and master address from
Slurm). The batch shell traps the warning signal and SIGTERM, asks the ranks to checkpoint (a request file they poll
at every step, agreed on by all ranks), then requeues the job, bounded by max_requeues; the requeued job
resumes from that checkpoint in the same run dir. srun runs in the background because bash runs a trap
only between foreground commands.
"""
from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from launcher import runlock
from launcher.exitcodes import EXIT_USAGE
from launcher.rundir import RunDir
from launcher.secrets import env_indirect

if TYPE_CHECKING:
    from launcher.plan import LaunchPlan

#: cluster keys that map 1:1 onto sbatch options of the same name (underscores become dashes)
SBATCH_KEYS = ("partition", "account", "qos", "time", "mem", "constraint", "nodelist", "exclude", "dependency",
               "error")
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                   "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"}
PREEMPT_FILE = "slurm/preempt.request"
#: CPUs asked per GPU when cluster.cpus_per_task is unset: data loading, tokenization and the NCCL/host
#: threads of one rank (a DGX node has 112-128 cores for 8 GPUs)
CPUS_PER_GPU = 8
#: the rendezvous port is MASTER_PORT_BASE + job id % MASTER_PORT_SPAN: below the Linux ephemeral range
#: (32768-60999 by default), and distinct for jobs (and array tasks) with nearby ids that share a node
MASTER_PORT_BASE, MASTER_PORT_SPAN = 10000, 20000


class SlurmError(RuntimeError):
    """sbatch/scontrol refused (a bad partition, account, ...): shown to the user as is."""


def default_cpus_per_task(cluster: Mapping[str, Any], gpus_per_node: int, ranks_per_node: int) -> Optional[int]:
    """CPUs of each node's one task (torchrun and all its ranks). Slurm's default is one CPU per task, and where
    tasks are confined (cgroups) every rank of the node would share that one core: CPUS_PER_GPU per GPU, one
    per rank on the CPU; none asked under --exclusive, where the job holds every CPU of its nodes."""
    if cluster.get("cpus_per_task"):
        return int(cluster["cpus_per_task"])
    if cluster.get("exclusive"):
        return None
    return CPUS_PER_GPU * gpus_per_node if gpus_per_node else max(1, ranks_per_node)


def sbatch_options(cluster: Mapping[str, Any], *, name: str, nodes: int, gpus_per_node: int, output: str,
                   ranks_per_node: int = 1) -> dict[str, Optional[str]]:
    """sbatch option -> value (None for a flag). Pure; the one place sbatch options are decided."""
    opts: dict[str, Optional[str]] = {
        "job-name": cluster.get("job_name") or name,
        "nodes": str(nodes),
        "ntasks-per-node": "1",  # one launcher (torchrun) per node; it starts the ranks
        "output": cluster.get("output") or output,
        "open-mode": "append",  # a requeued job appends to, not wipes, its log
        "requeue": None,
        "signal": f"B:{cluster['signal']}@{cluster['signal_time']}",
    }
    if gpus_per_node:
        opts["gpus-per-node"] = str(gpus_per_node)
    cpus = default_cpus_per_task(cluster, gpus_per_node, ranks_per_node)
    if cpus:
        opts["cpus-per-task"] = str(cpus)
    for key in SBATCH_KEYS:
        if cluster.get(key) not in (None, ""):
            opts[key.replace("_", "-")] = str(cluster[key])
    if cluster.get("exclusive"):
        opts["exclusive"] = None
    for key, value in (cluster.get("additional_parameters") or {}).items():
        opts[key.replace("_", "-")] = str(value) if value not in (None, "") else None
    return opts


def options_for(plan: Any, output: str) -> dict[str, Optional[str]]:
    """sbatch options of a plan: its cluster keys, nodes, and GPUs per node (none on CPU)."""
    cfg = plan.config
    gpus = (cfg["cluster"].get("gpus_per_node") or cfg["gpus"]) if cfg["device"] == "cuda" else 0
    return sbatch_options(cfg["cluster"], name=cfg["name"], nodes=plan.nodes, gpus_per_node=gpus, output=output,
                          ranks_per_node=plan.nproc_per_node)


def script_for(plans: Sequence[Any], cwd: str, output: str) -> str:
    """The sbatch script for one plan, or one job array for several (a multirun sweep).

    Raises ValueError when the plans ask for different resources (they cannot share one array)."""
    options = [options_for(p, output) for p in plans]
    first = {k: v for k, v in options[0].items() if k != "job-name"}
    for plan, opts in zip(plans[1:], options[1:]):
        differ = sorted(k for k in set(first) | set(opts) if k != "job-name" and first.get(k) != opts.get(k))
        if differ:
            raise ValueError(f"the sweep's runs ask for different resources ({', '.join('--' + k for k in differ)}), "
                             "so they cannot be one job array; sweep only training keys, or submit separately")
    opts = dict(options[0])
    if len(plans) > 1:
        limit = plans[0].config["cluster"].get("array_parallelism")
        opts["array"] = f"0-{len(plans) - 1}" + (f"%{limit}" if limit else "")
    c = plans[0].config["cluster"]
    return render_sbatch(options=opts, run_dirs=[p.run_dir for p in plans], cwd=cwd, nodes=plans[0].nodes,
                         setup=c.get("setup") or [], srun_args=c.get("srun_args") or [], signal=c["signal"],
                         max_requeues=c["max_requeues"])


def _sbatch_line(key: str, value: Optional[str]) -> str:
    return f"#SBATCH --{key}" if value is None else f"#SBATCH --{key}={shlex.quote(value)}"


def render_sbatch(*, options: Mapping[str, Optional[str]], run_dirs: Sequence[str], cwd: str, nodes: int,
                  setup: Sequence[str], srun_args: Sequence[str], signal: str, max_requeues: int) -> str:
    """The batch script. One run dir, or several for an array (task i runs run_dirs[i])."""
    q = shlex.quote
    if len(run_dirs) == 1:
        pick = f"RUN_DIR={q(run_dirs[0])}"
    else:
        pick = "RUN_DIRS=(\n" + "".join(f"  {q(d)}\n" for d in run_dirs) + ')\nRUN_DIR="${RUN_DIRS[$SLURM_ARRAY_TASK_ID]}"'
    srun = shlex.join(["srun", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", *srun_args])
    lines = [
        "#!/usr/bin/env bash",
        *sorted(_sbatch_line(k, v) for k, v in options.items()),
        "# Written by `launch`; re-submit with: sbatch THIS_FILE",
        "set -uo pipefail",
        *(["# --- setup (cluster.setup)", *setup] if setup else []),
        f"cd {q(cwd)}",
        pick,
        f"MAX_REQUEUES={int(max_requeues)}",
        'RESTART="${SLURM_RESTART_COUNT:-0}"',
        'mkdir -p "$RUN_DIR/slurm"',
        'echo "$(date -Is) job=$SLURM_JOB_ID restart=$RESTART nodes=$SLURM_JOB_NODELIST" >> "$RUN_DIR/slurm/attempts.log"',
        "# Rendezvous on the allocation's first host; the port is derived from the job id (stable on requeue).",
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f'export MASTER_PORT="$(( {MASTER_PORT_BASE} + SLURM_JOB_ID % {MASTER_PORT_SPAN} ))"',
        'export LAUNCHER_RESTART_COUNT="$RESTART"',
        '# A requeued job (by us after a warning signal, or by an admin) resumes from its last checkpoint.',
        'if [ "$RESTART" -gt 0 ]; then export LAUNCHER_RESUME=1; fi',
        f'export LAUNCHER_PREEMPT_FILE="$RUN_DIR/{PREEMPT_FILE}"',
        'rm -f "$LAUNCHER_PREEMPT_FILE"',
        "# The warning signal, and SIGTERM (the time limit, a preemption with a grace time, scancel --signal=TERM):",
        "# the ranks checkpoint, then the job is requeued.",
        *(f"trap 'echo \"launch: SIG{sig} at $(date -Is): asking the ranks to checkpoint\"; "
          f"touch \"$LAUNCHER_PREEMPT_FILE\"' {sig}" for sig in dict.fromkeys((signal, "TERM"))),
        "# srun in a session of its own: a SIGTERM to the batch shell's process group would make srun kill the",
        "# step at once (Slurm signals the step's processes itself, which checkpoint and stop).",
        f'setsid {srun} bash "$RUN_DIR/launch.sh" &',
        'SRUN_PID=$!',
        'while :; do',
        '  wait "$SRUN_PID"; rc=$?',
        '  # a trap interrupted `wait` while srun still runs: keep waiting',
        '  if [ "$rc" -gt 128 ] && kill -0 "$SRUN_PID" 2>/dev/null; then continue; fi',
        '  break',
        'done',
        'echo "$rc" > "$RUN_DIR/slurm/exit_code"',
        'if [ -f "$LAUNCHER_PREEMPT_FILE" ] && [ ! -f "$RUN_DIR/summary.json" ]; then',
        '  # scancel sends the same SIGTERM as a preemption: a cancelled (no longer running) job stays so',
        '  if ! scontrol show job -o "$SLURM_JOB_ID" | grep -q "JobState=RUNNING"; then',
        '    echo "launch: job $SLURM_JOB_ID is no longer running (cancelled?); not requeueing" >&2',
        '    exit "$rc"',
        '  fi',
        '  if [ "$RESTART" -lt "$MAX_REQUEUES" ]; then',
        '    echo "launch: checkpoint saved; requeueing job $SLURM_JOB_ID (restart $((RESTART + 1)) of at most $MAX_REQUEUES)"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        '    exit 0',
        '  fi',
        '  echo "launch: stopped by a signal after $RESTART requeue(s) = max_requeues; not requeueing" >&2',
        '  exit 1',
        'fi',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def submit(script: str, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> str:
    """sbatch --parsable SCRIPT -> job id."""
    out = run(["sbatch", "--parsable", script], capture_output=True, text=True)
    if out.returncode != 0:
        raise SlurmError(out.stderr.strip() or out.stdout.strip() or f"sbatch exited {out.returncode}")
    return out.stdout.strip().split(";")[0]


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str
    exit_code: Optional[int]
    restarts: int

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES


def parse_scontrol(text: str) -> list[JobState]:
    """`scontrol show job -o ID` -> one JobState per line (array tasks are lines of their own)."""
    states = []
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" not in fields:
            continue
        job = fields["JobId"]
        if fields.get("ArrayJobId") and fields.get("ArrayTaskId", "").isdigit():
            job = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
        code = fields.get("ExitCode", "")
        rc, _, sig = code.partition(":")
        exit_code = (int(rc) or (128 + int(sig) if sig.isdigit() and int(sig) else 0)) if rc.isdigit() else None
        states.append(JobState(job, fields.get("JobState", "UNKNOWN"), exit_code, int(fields.get("Restarts", 0))))
    return states


def job_states(job_id: str) -> list[JobState]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if out.returncode != 0:
        raise SlurmError(out.stderr.strip() or f"scontrol exited {out.returncode}")
    return parse_scontrol(out.stdout)


def wait_for(job_id: str, poll_s: float = 2.0, report: Callable[[str], None] = print) -> list[JobState]:
    """Follow a job (all its array tasks) until every part is in a terminal state."""
    seen: dict[str, str] = {}
    while True:
        states = job_states(job_id)
        for s in states:
            if seen.get(s.job_id) != s.state:
                seen[s.job_id] = s.state
                report(f"launch: job {s.job_id}: {s.state}" + (f" (restarts {s.restarts})" if s.restarts else ""))
        if states and all(s.done for s in states):
            return states
        time.sleep(poll_s)


def cancel(job_id: str) -> None:
    out = subprocess.run(["scancel", job_id], capture_output=True, text=True)
    if out.returncode != 0:
        raise SlurmError(out.stderr.strip() or f"scancel exited {out.returncode}")


@dataclass
class PendingArray:
    """Runs of a multirun sweep on Slurm, validated and planned but not yet written: once Hydra's loop has
    validated every job, either all are written and submitted as one job array, or none (one job has a problem)."""

    sweep_dir: str = ""
    plans: list[LaunchPlan] = field(default_factory=list)
    #: take and write each planned job's run dir (deferred until every job validated); None: held by another
    writes: list[Callable[[], Optional[dict]]] = field(default_factory=list)
    #: the overrides of each job that has problems
    refused: list[str] = field(default_factory=list)
    wait: bool = False
    #: run dir -> the lock this process holds on it (the job id is written into it after sbatch)
    holders: dict[str, dict] = field(default_factory=dict)


def submit_runs(plans: Sequence[LaunchPlan], script_dir: Path, wait: bool, holders: dict[str, dict]) -> int:
    """Write sbatch.sh (one job, or one array for a sweep), submit it, record the job id(s) (also in each run
    dir's lock: the job holds the run dir while it is queued or running)."""

    def release_all() -> None:
        for plan in plans:
            if plan.run_dir in holders:
                runlock.release(RunDir(Path(plan.run_dir)).lock, holders[plan.run_dir])

    array = len(plans) > 1
    output = str(script_dir / ("slurm-%A_%a.out" if array else "slurm/%j.out"))
    try:
        script = script_for(plans, cwd=os.getcwd(), output=output)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        release_all()
        return EXIT_USAGE
    # Secrets in cluster.setup stay out of sbatch.sh: the script names a variable, sbatch's environment holds it.
    script, secret_env = env_indirect(script)
    path = script_dir / "sbatch.sh"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    (script_dir / "slurm").mkdir(exist_ok=True)
    try:
        job_id = submit(str(path), run=functools.partial(subprocess.run, env={**os.environ, **secret_env}))
    except SlurmError as e:
        (script_dir / "slurm" / "submit_error.txt").write_text(str(e) + "\n")
        release_all()
        print(f"error: sbatch refused the job: {e}\n  check the cluster.* keys (partition, account, qos, time, "
              f"...) in {path}; nothing was started.", file=sys.stderr)
        return EXIT_USAGE
    for i, plan in enumerate(plans):
        run = RunDir(Path(plan.run_dir))
        (run.root / "slurm").mkdir(exist_ok=True)
        if array:
            (run.root / "sbatch.sh").write_text(script)
        job = f"{job_id}_{i}" if array else job_id
        with run.job_ids.open("a") as f:
            f.write(job + "\n")
        if plan.run_dir in holders:
            runlock.record_job(run.lock, holders[plan.run_dir], job)
    cpus = options_for(plans[0], output).get("cpus-per-task")
    print(f"launch: submitted job {job_id}" + (f" (array of {len(plans)})" if array else "")
          + f", {plans[0].nodes} node(s) x {plans[0].nproc_per_node} rank(s), "
          + (f"{cpus} CPU(s) per node" if cpus else "every CPU of each node (exclusive)"))
    for plan in plans:
        print(f"  run dir: {plan.run_dir}")
    first = plans[0].run_dir
    print(f"  follow:  squeue -j {job_id}; tail -f {first}/logs/rank0.log; launch-status {first}; "
          f"launch-cancel {first}")
    if not wait:
        return 0
    states = wait_for(job_id)
    release_all()  # the job has ended: it holds the run dir no more
    return max((s.exit_code or 0) if s.state == "COMPLETED" else max(1, s.exit_code or 0) for s in states)


def finish_sweep(pending: PendingArray) -> int:
    """After Hydra's loop: refuse the whole Slurm sweep if any job has a problem, else write and submit all."""
    if pending.refused:
        total = len(pending.refused) + len(pending.plans)
        print(f"launch: {len(pending.refused)} of {total} sweep job(s) have problems (listed above); no run dir was "
              "written and nothing was submitted:", file=sys.stderr)
        for overrides in pending.refused:
            print(f"  {overrides}", file=sys.stderr)
        return EXIT_USAGE
    if not pending.plans:
        return 0
    try:  # runs asking for different resources cannot share one array: refused before anything is written
        script_for(pending.plans, cwd=os.getcwd(), output="")
    except ValueError as e:
        print(f"error: {e}\nlaunch: no run dir was written and nothing was submitted.", file=sys.stderr)
        return EXIT_USAGE
    for plan, write in zip(pending.plans, pending.writes):
        holder = write()
        if holder is None:  # another launch took one of the run dirs meanwhile
            for run_dir, taken in pending.holders.items():
                runlock.release(RunDir(Path(run_dir)).lock, taken)
            return EXIT_USAGE
        pending.holders[plan.run_dir] = holder
    return submit_runs(pending.plans, script_dir=Path(pending.sweep_dir).resolve(), wait=pending.wait,
                       holders=pending.holders)
