"""`launch`: compose (Hydra) -> validate -> plan -> run dir -> execute (local) | submit (Slurm).

A thin shell over pure steps: launch_run(cfg) does the work, so tests call it with a composed config.
User mistakes (bad keys, bad values) exit 2 with one message per problem, before anything starts.
"""
from __future__ import annotations

import contextlib
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
from launcher.backends.slurm import PendingArray, finish_sweep, script_for, submit_runs
from launcher.exitcodes import EXIT_USAGE
from launcher.facts import Facts, gather_facts, read_config, read_lock
from launcher.lf_import import expand_lf_args
from launcher.plan import LaunchPlan, build_plan
from launcher.rundir import RunDir, append_event, clear_run_dir, new_run_dir, write_attempt, write_run_dir
from launcher.secrets import env_indirect, redact, redact_config
from launcher.typed import settle_typed, typed_keys
from launcher.validate import unknown_override_keys, validate
from launcher.validate.lock import lock_status, owns_run_dir
from launcher.validate.resume import flatten, resume_changes, resume_mode, resumes_from

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
schema.register()


def launch_run(cfg: DictConfig, overrides: Sequence[str] = (), now: datetime | None = None,
               pending: PendingArray | None = None) -> int:
    typed = typed_keys(overrides)
    cfg, notes = settle_typed(cfg, typed)  # a typed key wins over a value a recipe derives from another
    facts = gather_facts(cfg)
    problems = notes + validate(cfg, facts, typed)
    for p in problems:
        print(p, file=sys.stderr)
    if any(p.error for p in problems):
        if pending is not None:  # a sweep job: the sweep is refused once every job has been validated
            pending.refused.append(" ".join(overrides))
            print(f"launch: sweep job `{' '.join(overrides)}`: {sum(p.error for p in problems)} problem(s)",
                  file=sys.stderr)
            return 0
        print(f"launch: {sum(p.error for p in problems)} problem(s) in the config; nothing was started.",
              file=sys.stderr)
        return EXIT_USAGE

    run_root = Path(cfg.output_dir).expanduser().resolve() if cfg.output_dir else \
        new_run_dir(cfg.output_root, cfg.name, now or datetime.now(), taken=[p.run_dir for p in pending.plans]
                    if pending else ())
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
            print(f"# ---- {run.sbatch_sh} (submitted with sbatch --parsable)")
            print(env_indirect(script_for([plan], cwd=os.getcwd(), output=str(run.slurm_output)))[0], end="")
            print(f"# ---- {run.launch_sh} (run on every node by srun)")
        print(redact(script), end="")
        return 0
    if cfg.prepare_only:
        return prepare_data(plan.config)
    if not owns_run_dir(cfg):
        return run_other_node(plan, script)
    if slurm and pending is not None:
        # a sweep job: its run dir is taken and written once every job of the sweep has validated
        pending.plans.append(plan)
        pending.writes.append(lambda: start_run(cfg, facts, plan, script, overrides))
        print(f"launch: {run.root} planned; written and submitted with the sweep's job array once every job "
              "validates", file=sys.stderr)
        return 0
    holder = start_run(cfg, facts, plan, script, overrides)
    if holder is None:
        return EXIT_USAGE
    keep_lock = False  # a submitted Slurm job keeps it (it names the job); a local launch releases it at exit
    try:
        if slurm:
            keep_lock = True  # submit_runs releases it if sbatch refuses
            return submit_runs([plan], script_dir=run.root, wait=cfg.wait, holders={plan.run_dir: holder})

        from launcher.backends.local import execute

        print(redact(script), end="", flush=True)
        rc = execute(run.launch_sh, str(plan.node_rank))
        print(f"launch: run dir {run.root} (exit {rc})", file=sys.stderr)
        return rc
    finally:
        if not keep_lock:
            runlock.release(run.lock, holder)


def start_run(cfg: DictConfig, facts: Facts, plan: LaunchPlan, script: str, overrides: Sequence[str]
              ) -> dict | None:
    """Hold the run dir, then write it: the launch's files, attempts/N/ and the launch event. Returns the
    holder, or None when another launch holds the run dir (said on stderr)."""
    from launcher.envinfo import env_info

    run = RunDir(Path(plan.run_dir))
    holder = runlock.this_holder()
    if not take_run_dir(run, holder, facts):
        return None
    try:
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
    except BaseException:
        runlock.release(run.lock, holder)
        raise
    report_resume(cfg, run, resumed_from)
    return holder


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
    while not same_launch(read_config(run.config), redact_config(dict(plan.config))):
        if time.monotonic() > deadline:
            print(f"error: node_rank={plan.node_rank}: node 0 has not written this launch's {run.config} within "
                  f"{NODE_WAIT_S:.0f} s; start `launch ... node_rank=0` with the same arguments and output_dir",
                  file=sys.stderr)
            return EXIT_USAGE
        time.sleep(1.0)

    from launcher.backends.local import execute

    print(redact(script), end="", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"launch-node{plan.node_rank}-") as d:
        launch_sh = Path(d) / "launch.sh"
        launch_sh.write_text(script)
        rc = execute(launch_sh, str(plan.node_rank))
    print(f"launch: node {plan.node_rank}: run dir {run.root} (exit {rc})", file=sys.stderr)
    return rc


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


@dataclass
class Invocation:
    """What one `launch` command's Hydra task runs share with main(): Hydra calls the task once per run (per
    sweep job) with the config only, so this object, made by main() and closed over by the task, carries the rest."""

    #: Hydra called the task: a later exit 1 is the task's own, not a compose error
    task_started: bool = False
    #: a Slurm sweep's jobs, submitted as one array once Hydra's loop has validated every job
    sweep: PendingArray = field(default_factory=PendingArray)


def hydra_task(invocation: Invocation):
    """Hydra's entry point for one `launch` command: compose the config (each sweep job's), then launch_run."""

    @hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="launch")
    def task(cfg: DictConfig) -> None:
        invocation.task_started = True
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:  # Hydra's record of the sweep holds the typed overrides: no secret in it
            record = Path(hc.sweep.dir) / "multirun.yaml"
            if record.is_file():
                record.write_text(redact(record.read_text()))
        sweep_on_slurm = hc.mode == RunMode.MULTIRUN and cfg.cluster.name == "slurm" and not cfg.dry_run
        if sweep_on_slurm:
            invocation.sweep.sweep_dir, invocation.sweep.wait = hc.sweep.dir, cfg.wait
        rc = launch_run(cfg, overrides=hc.overrides.task, pending=invocation.sweep if sweep_on_slurm else None)
        if rc:
            sys.exit(rc)

    return task


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


#: keys whose value is a comma-separated string (schema.comma_list): LLaMA-Factory's users type them unquoted
COMMA_KEYS = frozenset(schema.comma_keys())
MULTIRUN_FLAGS = ("-m", "--multirun")


def quote_comma_lists(args: Sequence[str]) -> list[str]:
    """`adapter.lora_target=q_proj,v_proj` -> `adapter.lora_target='q_proj,v_proj'`: Hydra reads an unquoted
    comma as a sweep and refuses it without -m ("Ambiguous value"). Under -m the comma stays Hydra's sweep, and
    a value already quoted, a list, an interpolation or a function (choice(a,b)) is Hydra's grammar, left as typed."""
    if any(a in MULTIRUN_FLAGS or a.replace(" ", "") == "hydra.mode=MULTIRUN" for a in args):
        return list(args)
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if (eq and key.lstrip("~+") in COMMA_KEYS and "," in value and value[:1] not in "'\"[{$"
                and not any(c in value for c in "'\\") and not re.match(r"\w+\(", value)):
            arg = f"{key}='{value}'"
        out.append(arg)
    return out


#: a line of a config that sets hydra.mode (`mode:` under `hydra:`)
MODE_LINE = re.compile(r"^\s*mode\s*:", re.MULTILINE)


def mode_may_be_set(args: Sequence[str]) -> bool:
    """Whether hydra.mode may be set other than by -m: an argument that is not a plain override of ours (a
    hydra key, a config dir, a flag), or a `mode:` line in a config of conf/ (recipes included)."""
    plain = all(a in MULTIRUN_FLAGS or ("=" in a and not a.startswith("-") and "hydra" not in a.partition("=")[0])
                for a in args)
    return not plain or any(MODE_LINE.search(f.read_text()) for f in (PROJECT_ROOT / "conf").rglob("*.yaml"))


@contextlib.contextmanager
def skip_mode_probe(skip: bool):
    """Hydra composes the whole config twice: once only to read hydra.mode (which none of our configs sets; -m
    still makes a sweep), once to run. The first is a third of a dry run's wall time: skipped when `skip`."""
    from hydra._internal.hydra import Hydra

    probe = Hydra.get_mode
    if skip:
        Hydra.get_mode = lambda self, config_name, overrides: None
    try:
        yield
    finally:
        Hydra.get_mode = probe


def main() -> None:
    sys.argv[1:] = quote_comma_lists(quote_numeric_choices(expand_lf_args(sys.argv[1:])))
    unknown = unknown_override_keys(sys.argv[1:])
    if unknown:
        for p in unknown:
            print(p, file=sys.stderr)
        sys.exit(EXIT_USAGE)
    invocation = Invocation()
    try:
        with skip_mode_probe(not mode_may_be_set(sys.argv[1:])):
            hydra_task(invocation)()
    except SystemExit as e:
        # Hydra reports compose errors (unknown key, wrong type, unknown group option) with exit 1
        # before our task runs: those are user mistakes too.
        if e.code == 1 and not invocation.task_started:
            sys.exit(EXIT_USAGE)
        raise
    sys.exit(finish_sweep(invocation.sweep))


if __name__ == "__main__":
    main()
