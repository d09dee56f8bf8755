"""Start, stop and resume runs from the page: `launch ARGS` itself, in a detached process (its own session, so
the run outlives the server), with the server's interpreter and environment, its output in a log file the page
shows. A launch that fails before its run dir exists reports its own message back to the page.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import yaml

from launcher.rundir import RunDir, new_run_dir

#: how long a start waits for `launch` to write the run dir (or to exit with its message)
START_WAIT_S = 90.0
#: the Popen of each launch started here, so ended ones are reaped
_CHILDREN: list[subprocess.Popen] = []


def log_path(output_root: Path, run_dir: Path) -> Path:
    """Where the output of the `launch` processes started for run_dir goes (appended by a resume)."""
    root = output_root.resolve()
    try:
        name = "__".join(run_dir.resolve().relative_to(root).parts)
    except ValueError:
        name = f"{run_dir.name}-{hashlib.sha1(str(run_dir).encode()).hexdigest()[:8]}"
    return root / ".launch-ui" / f"{name}.log"


def with_output_dir(args: Sequence[str], output_root: str, name: str) -> tuple[list[str], Path]:
    """args with output_dir= set: the one typed, else the new run dir `launch` itself would pick (the page
    needs to know it to follow the run)."""
    typed = [a.partition("=")[2] for a in args if a.partition("=")[0].lstrip("+") == "output_dir"]
    if typed and typed[-1] not in ("", "null"):
        return list(args), Path(typed[-1]).expanduser().resolve()
    run = new_run_dir(output_root, name, datetime.now())
    return [*args, f"output_dir={run}"], run


def reap() -> None:
    _CHILDREN[:] = [p for p in _CHILDREN if p.poll() is None]


def start(args: Sequence[str], run_dir: Path, log: Path, cwd: Path) -> dict[str, Any]:
    """`python -m launcher.cli ARGS` detached; waits until it wrote run_dir's config.yaml or exited. ok False
    with `launch`'s own output when it exited non-zero (or could not be started at all)."""
    reap()
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "launcher.cli", *args]
    with log.open("a") as f:
        offset = f.tell()
        f.write(f"$ launch {' '.join(args)}\n")
        f.flush()
        try:
            proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=os.environ.copy())
        except OSError as e:
            return {"ok": False, "error": f"could not start {argv[0]}: {e}", "log": str(log)}
    _CHILDREN.append(proc)
    config = RunDir(run_dir).config
    mtime = config.stat().st_mtime if config.is_file() else None
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None or (config.is_file() and config.stat().st_mtime != mtime):
            break
        time.sleep(0.2)
    output = log.read_text(errors="replace")[offset:]
    if rc is not None and rc != 0:
        return {"ok": False, "error": f"launch exited {rc}:\n{output}", "log": str(log), "run_dir": str(run_dir)}
    return {"ok": True, "run_dir": str(run_dir), "log": str(log), "pid": proc.pid, "exit": rc, "output": output}


def resume_args(run_dir: Path) -> list[str]:
    """The run's own overrides (overrides.yaml: what was typed), with resume=true output_dir=RUN."""
    typed = yaml.safe_load(RunDir(run_dir).overrides.read_text()) or []
    keep = [str(o) for o in typed if str(o).partition("=")[0].lstrip("+") not in ("output_dir", "resume",
                                                                                   "overwrite_output_dir")]
    return [*keep, "resume=true", f"output_dir={run_dir}"]
