"""`launch`: compose (Hydra) -> validate -> plan -> run dir -> execute.

A thin shell over pure steps: launch_run(cfg) does the work, so tests call it with a composed config.
User mistakes (bad keys, bad values) exit 2 with one message per problem, before anything starts.
"""
from __future__ import annotations

import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from launcher import PROJECT_ROOT, schema
from launcher.facts import gather_facts
from launcher.plan import build_plan
from launcher.rundir import RunDir, clear_run_dir, new_run_dir, write_run_dir
from launcher.validate import validate

EXIT_USAGE = 2

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
schema.register()


def launch_run(cfg: DictConfig, overrides: Sequence[str] = (), now: datetime | None = None) -> int:
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
    script = plan.to_shell(cwd=os.getcwd())
    if cfg.dry_run:
        print(f"# dry run: nothing started, {run_root} not created")
        print(script, end="")
        return 0

    from launcher.backends.local import execute
    from launcher.envinfo import env_info

    run = RunDir(run_root)
    if cfg.overwrite_output_dir and run.root.exists():
        clear_run_dir(run)
    write_run_dir(run, config=plan.config, overrides=overrides, plan=plan.to_dict(), launch_sh=script,
                  env=env_info(facts.visible_gpus, plan.ranks[0].device),
                  ds_config=plan.zero.ds_config if plan.zero else None)
    print(script, end="", flush=True)
    rc = execute(run.launch_sh, str(plan.node_rank))
    print(f"launch: run dir {run.root} (exit {rc})", file=sys.stderr)
    return rc


_task_started = False


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="launch")
def _hydra_main(cfg: DictConfig) -> None:
    global _task_started
    _task_started = True
    rc = launch_run(cfg, overrides=HydraConfig.get().overrides.task)
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
    try:
        _hydra_main()
    except SystemExit as e:
        # Hydra reports compose errors (unknown key, wrong type, unknown group option) with exit 1
        # before our task runs: those are user mistakes too.
        if e.code == 1 and not _task_started:
            sys.exit(EXIT_USAGE)
        raise


if __name__ == "__main__":
    main()
