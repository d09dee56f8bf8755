"""What `launch ARGS` would say, computed in this process through launcher.cli's own functions: the live
validate messages (cli.check_config) and the preview (cli.launch_run with dry_run=true: the dry run itself).

Hydra's compose state and the captured stdout/stderr are per process, so one lock serialises these calls.
"""
from __future__ import annotations

import io
import threading
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from omegaconf import OmegaConf

from launcher import cli
from launcher.validate import unknown_override_keys

_LOCK = threading.Lock()


@dataclass
class Outcome:
    """One in-process `launch`: its exit status and output, or the compose error Hydra raised."""
    rc: int = 0
    out: str = ""
    err: str = ""
    compose_error: Optional[str] = None
    result: Any = None


def _run(args: Sequence[str], step: Callable[[Any, list[str]], Any]) -> Outcome:
    out, err, outcome = io.StringIO(), io.StringIO(), Outcome()
    with _LOCK, redirect_stdout(out), redirect_stderr(err):
        try:
            hydra_args = cli.command_args(args)  # lf=FILE may print and exit 2
            unknown = unknown_override_keys(hydra_args)
            if unknown:
                outcome.rc, outcome.compose_error = 2, "\n".join(map(str, unknown))
            else:
                outcome.result = step(cli.compose(hydra_args), hydra_args)
        except SystemExit as e:
            outcome.rc = e.code if isinstance(e.code, int) else 2
        except Exception as e:  # Hydra's compose errors: unknown key or group option, wrong type
            outcome.rc, outcome.compose_error = 2, str(e).split("\nConfig search path:")[0].strip()
    outcome.out, outcome.err = out.getvalue(), err.getvalue()
    if outcome.compose_error is None and outcome.rc and not outcome.result:
        outcome.compose_error = outcome.err.strip() or f"exit {outcome.rc}"
    return outcome


def check(args: Sequence[str], keys: Sequence[str]) -> dict[str, Any]:
    """The validate messages of `launch ARGS`, the composed value of each form key, and the datasets of
    data.dataset_dir's dataset_info.json (its parse error when it is invalid)."""

    def step(cfg, hydra_args):
        cfg, facts, problems = cli.check_config(cfg, hydra_args)
        values = {}
        for k in keys:
            try:
                v = OmegaConf.select(cfg, k, throw_on_missing=False)
            except Exception:  # an interpolation that cannot resolve: shown unresolved
                v = OmegaConf.select(cfg, k, throw_on_resolution_failure=False)
            values[k] = OmegaConf.to_container(v) if OmegaConf.is_config(v) else getattr(v, "value", v)
        data = facts.data
        return {"problems": [{"key": p.key, "error": p.error, "text": str(p)} for p in problems],
                "values": values,
                "datasets": {"names": sorted(data.registry or {}), "error": data.registry_error,
                             "dir": str(cfg.data.dataset_dir)},
                "output_root": str(cfg.output_root), "name": str(cfg.name)}

    o = _run(args, step)
    if o.compose_error is not None:
        return {"compose_error": o.compose_error, "problems": [], "values": {}, "datasets": None}
    return {"compose_error": None, **o.result}


def preview(args: Sequence[str]) -> dict[str, Any]:
    """`launch ARGS dry_run=true` exactly: its stdout (command, batch arithmetic, launch.sh, sbatch.sh) and
    stderr (the validate messages), and its exit status."""
    o = _run([*args, "dry_run=true"], lambda cfg, hydra_args: cli.launch_run(cfg, overrides=hydra_args))
    rc = o.result if isinstance(o.result, int) else o.rc
    return {"rc": rc, "stdout": o.out, "stderr": o.err if o.compose_error is None else o.compose_error}
