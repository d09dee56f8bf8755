"""`launch`: compose (Hydra) -> validate -> plan -> run dir -> execute (local) | submit (Slurm).

A thin shell over pure steps: launch_run(cfg) does the work, so tests call it with a composed config.
User mistakes (bad keys, bad values) exit 2 with one message per problem, before anything starts.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from launcher import PROJECT_ROOT, runlock, schema
from launcher.exitcodes import EXIT_USAGE
from launcher.facts import Facts, gather_facts, read_config, read_lock
from launcher.plan import LaunchPlan, build_plan
from launcher.rundir import RunDir, append_event, clear_run_dir, new_run_dir, write_attempt, write_run_dir
from launcher.validate import unknown_override_keys, validate
from launcher.validate.lock import lock_status, owns_run_dir
from launcher.validate.resume import flatten, resume_changes, resume_mode, resumes_from

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
schema.register()


@dataclass
class PendingArray:
    """Runs of a multirun sweep on Slurm, written but not yet submitted: they become one job array."""

    sweep_dir: str = ""
    plans: list[LaunchPlan] = field(default_factory=list)
    wait: bool = False
    #: run dir -> the lock this process holds on it (the job id is written into it after sbatch)
    holders: dict[str, dict] = field(default_factory=dict)


def launch_run(cfg: DictConfig, overrides: Sequence[str] = (), now: datetime | None = None,
               pending: PendingArray | None = None) -> int:
    facts = gather_facts(cfg)
    problems = validate(cfg, facts)
    for p in problems:
        print(p, file=sys.stderr)
    if any(p.error for p in problems):
        print(f"launch: {sum(p.error for p in problems)} problem(s) in the config; nothing was started.",
              file=sys.stderr)
        return EXIT_USAGE

    run_root = Path(cfg.output_dir).expanduser().resolve() if cfg.output_dir else \
        new_run_dir(cfg.output_root, cfg.name, now or datetime.now())
    plan = build_plan(cfg, facts, str(run_root))
    run = RunDir(run_root)
    script = plan.to_shell(cwd=os.getcwd())
    slurm = plan.cluster == "slurm"
    if cfg.dry_run:
        print(f"# dry run: nothing started, {run_root} " + ("not changed" if run_root.exists() else "not created"))
        if resume_mode(cfg.resume) != "false":
            resumed_from = resumes_from(cfg, facts)
            print(f"# resume={resume_mode(cfg.resume)}: " + (f"resumes from {resumed_from}" if resumed_from else
                                                               "no complete checkpoint; trains from the start"))
        if slurm:
            from launcher.backends.slurm import script_for

            print(f"# ---- {run.sbatch_sh} (submitted with sbatch --parsable)")
            print(script_for([plan], cwd=os.getcwd(), output=str(run.slurm_output)), end="")
            print(f"# ---- {run.launch_sh} (run on every node by srun)")
        print(script, end="")
        return 0
    if cfg.prepare_only:
        return prepare_data(plan.config)
    if not owns_run_dir(cfg):
        return run_other_node(plan, script)

    holder = runlock.this_holder()
    if not take_run_dir(run, holder, facts):
        return EXIT_USAGE
    keep_lock = False  # a submitted Slurm job keeps it (it names the job); a local launch releases it at exit
    try:
        from launcher.envinfo import env_info

        resumed_from = resumes_from(cfg, facts)
        changes = [c.record() for c in resume_changes(cfg, facts)]
        if cfg.overwrite_output_dir and run.root.exists():
            clear_run_dir(run)
        write_run_dir(run, config=plan.config, overrides=overrides, plan=plan.to_dict(), launch_sh=script,
                      env=env_info(facts.visible_gpus, plan.ranks[0].device),
                      ds_config=plan.zero.ds_config if plan.zero else None)
        attempt = 0 if cfg.overwrite_output_dir else facts.output_dir.next_attempt
        write_attempt(run, attempt, config=plan.config, overrides=overrides, plan=plan.to_dict(), launch_sh=script,
                      config_changes=changes)
        append_event(run, {"event": "launch", "time": time.time(), "attempt_dir": f"attempts/{attempt}",
                           "resume": cfg.resume, "resumed_from": resumed_from, "config_changes": changes,
                           "host": facts.hostname, "pid": os.getpid()})
        report_resume(cfg, run, resumed_from)
        if slurm:
            keep_lock = True  # submit_runs releases it if sbatch refuses
            if pending is not None:
                pending.plans.append(plan)
                pending.holders[plan.run_dir] = holder
                print(f"launch: {run.root} written; submitted with the sweep's job array", file=sys.stderr)
                return 0
            return submit_runs([plan], script_dir=run.root, wait=cfg.wait, holders={plan.run_dir: holder})

        from launcher.backends.local import execute

        print(script, end="", flush=True)
        rc = execute(run.launch_sh, str(plan.node_rank))
        print(f"launch: run dir {run.root} (exit {rc})", file=sys.stderr)
        return rc
    finally:
        if not keep_lock:
            runlock.release(run.lock, holder)


def take_run_dir(run: RunDir, holder: dict, facts: Facts) -> bool:
    """Hold the run dir before writing anything in it: a stale lock (validate warned) is taken over, a live one
    refused; a launch that took it between validate's look and now wins, and this one says who it is."""
    lock = facts.output_dir.lock
    stale = lock.raw if lock_status(lock, facts.hostname).kind == "stale" else None
    if runlock.take(run.lock, holder, stale=stale) is None:
        return True
    now = lock_status(read_lock(run.lock, facts.hostname), facts.hostname)
    print(f"error: output_dir={run.root}: is held by {now.holder} (it took the run dir just now); nothing was "
          "started", file=sys.stderr)
    return False


def report_resume(cfg: DictConfig, run: RunDir, resumed_from: str | None) -> None:
    mode = resume_mode(cfg.resume)
    if resumed_from:
        print(f"launch: resume={mode}: resuming from {resumed_from}", file=sys.stderr)
    elif mode == "auto":
        print(f"launch: resume=auto: no complete checkpoint in {run.checkpoints}; training from the start",
              file=sys.stderr)


#: node I>0 of a multi-node run without Slurm: how long it waits for node 0 to write the run dir
NODE_WAIT_S = 600.0


def same_launch(written: dict | None, mine: dict) -> bool:
    """The run dir's config.yaml is this launch's, up to what differs between its nodes."""
    node_keys = ("node_rank",)
    drop = lambda c: {k: v for k, v in flatten(c).items() if k not in node_keys}  # noqa: E731
    return written is not None and drop(written) == drop(mine)


def run_other_node(plan: LaunchPlan, script: str) -> int:
    """Node I>0 of a multi-node run without Slurm (the same output_dir on shared storage): node 0 holds the run
    dir, clears it (overwrite_output_dir) and writes its files. This node waits until node 0 has written this
    launch's config.yaml, then runs its own copy of the launch script from outside the run dir, so nothing it
    writes is shared, and node 0's clearing never removes it."""
    run = RunDir(Path(plan.run_dir))
    deadline = time.monotonic() + NODE_WAIT_S
    print(f"launch: node {plan.node_rank}: waiting for node 0 to write {run.config}", file=sys.stderr)
    while not same_launch(read_config(run.config), dict(plan.config)):
        if time.monotonic() > deadline:
            print(f"error: node_rank={plan.node_rank}: node 0 has not written this launch's {run.config} within "
                  f"{NODE_WAIT_S:.0f} s; start `launch ... node_rank=0` with the same arguments and output_dir",
                  file=sys.stderr)
            return EXIT_USAGE
        time.sleep(1.0)

    from launcher.backends.local import execute

    print(script, end="", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"launch-node{plan.node_rank}-") as d:
        launch_sh = Path(d) / "launch.sh"
        launch_sh.write_text(script)
        rc = execute(launch_sh, str(plan.node_rank))
    print(f"launch: node {plan.node_rank}: run dir {run.root} (exit {rc})", file=sys.stderr)
    return rc


def submit_runs(plans: Sequence[LaunchPlan], script_dir: Path, wait: bool, holders: dict[str, dict]) -> int:
    """Write sbatch.sh (one job, or one array for a sweep), submit it, record the job id(s) (also in each run
    dir's lock: the job holds the run dir while it is queued or running)."""
    from launcher.backends import slurm

    def release_all() -> None:
        for plan in plans:
            if plan.run_dir in holders:
                runlock.release(RunDir(Path(plan.run_dir)).lock, holders[plan.run_dir])

    array = len(plans) > 1
    output = str(script_dir / ("slurm-%A_%a.out" if array else "slurm/%j.out"))
    try:
        script = slurm.script_for(plans, cwd=os.getcwd(), output=output)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        release_all()
        return EXIT_USAGE
    path = script_dir / "sbatch.sh"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    (script_dir / "slurm").mkdir(exist_ok=True)
    try:
        job_id = slurm.submit(str(path))
    except slurm.SlurmError as e:
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
    print(f"launch: submitted job {job_id}" + (f" (array of {len(plans)})" if array else "")
          + f", {plans[0].nodes} node(s) x {plans[0].nproc_per_node} rank(s)")
    for plan in plans:
        print(f"  run dir: {plan.run_dir}")
    first = plans[0].run_dir
    print(f"  follow:  squeue -j {job_id}; tail -f {first}/logs/rank0.log; launch-status {first}; "
          f"launch-cancel {first}")
    if not wait:
        return 0
    states = slurm.wait_for(job_id)
    release_all()  # the job has ended: it holds the run dir no more
    return max((s.exit_code or 0) if s.state == "COMPLETED" else max(1, s.exit_code or 0) for s in states)


def prepare_data(config: dict) -> int:
    """prepare_only=true: tokenize into the data cache here, on the CPU, before any allocation; no ranks."""
    import logging

    from launcher.data.cache import prepare
    from launcher.data.registry import DataError
    from launcher.worker.model import load_tokenizer

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    cfg = schema.typed(config)
    try:
        prepared = prepare(cfg, load_tokenizer(cfg))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        print("launch: the data could not be prepared; nothing was started.", file=sys.stderr)
        return EXIT_USAGE
    r = prepared.record
    print(f"data cache: {r['cache_path']}")
    share = f", non-pad share {r['non_pad_share']:.1%}" if r["non_pad_share"] is not None else ""
    print(f"rows tokenized: {r['rows_tokenized_here']}; train rows {r['train_rows']}, "
          f"eval rows {r['eval_rows']}{share}")
    return 0


_task_started = False
_pending = PendingArray()


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="launch")
def _hydra_main(cfg: DictConfig) -> None:
    global _task_started
    _task_started = True
    hc = HydraConfig.get()
    sweep_on_slurm = hc.mode == RunMode.MULTIRUN and cfg.cluster.name == "slurm" and not cfg.dry_run
    if sweep_on_slurm:
        _pending.sweep_dir, _pending.wait = hc.sweep.dir, cfg.wait
    rc = launch_run(cfg, overrides=hc.overrides.task, pending=_pending if sweep_on_slurm else None)
    if rc:
        sys.exit(rc)


#: groups whose options are numbers (zero=0|2|3): Hydra's grammar reads `zero=3` as an int, which it
#: rejects as a group choice, so the command line's bare digits are quoted (`zero=3` -> `zero='3'`).
NUMERIC_GROUPS = ("zero",)


def quote_numeric_choices(args: Sequence[str]) -> list[str]:
    out = []
    for arg in args:
        group, eq, value = arg.partition("=")
        if eq and group.lstrip("~+") in NUMERIC_GROUPS and re.fullmatch(r"\d+(,\d+)*", value):
            arg = f"{group}=" + ",".join(f"'{v}'" for v in value.split(","))
        out.append(arg)
    return out


def main() -> None:
    sys.argv[1:] = quote_numeric_choices(sys.argv[1:])
    unknown = unknown_override_keys(sys.argv[1:])
    if unknown:
        for p in unknown:
            print(p, file=sys.stderr)
        sys.exit(EXIT_USAGE)
    try:
        _hydra_main()
    except SystemExit as e:
        # Hydra reports compose errors (unknown key, wrong type, unknown group option) with exit 1
        # before our task runs: those are user mistakes too.
        if e.code == 1 and not _task_started:
            sys.exit(EXIT_USAGE)
        raise
    if _pending.plans:
        sys.exit(submit_runs(_pending.plans, script_dir=Path(_pending.sweep_dir).resolve(), wait=_pending.wait,
                             holders=_pending.holders))


if __name__ == "__main__":
    main()
