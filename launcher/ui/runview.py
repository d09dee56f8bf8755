"""What the page shows of the runs under the output root: launcher.runs' table rows (plus the Slurm job's state),
metrics.jsonl read from a byte cursor, and the tails of a run's logs. Reads run dirs only.
"""
from __future__ import annotations

import json
import shlex
import socket
from pathlib import Path
from typing import Any, Optional

from launcher.backends import slurm
from launcher.rundir import RunDir
from launcher.runs import find_runs, read_run

#: metrics.jsonl keys the curve draws
SERIES = ("loss", "eval_loss", "reward")
#: at most this many bytes of metrics.jsonl per request: a long run's history arrives in pieces
CHUNK = 256 * 1024
#: Slurm states shown instead of "running"
SLURM_STATUS = {"PENDING": "queued", "REQUEUED": "requeued", "REQUEUE_HOLD": "requeued", "REQUEUE_FED": "requeued",
                "CONFIGURING": "queued"}


class RunNotFound(LookupError):
    pass


def resolve_run(output_root: Path, run_id: str) -> Path:
    """A run id (its path under the output root) -> the run dir; refuses anything outside the output root."""
    root = output_root.resolve()
    path = (root / run_id).resolve()
    if (path != root and root not in path.parents) or not RunDir(path).config.is_file():
        raise RunNotFound(f"no run dir {run_id!r} under {root}")
    return path


def slurm_job(run: RunDir) -> Optional[str]:
    return run.job_ids.read_text().split()[-1] if run.job_ids.is_file() else None


def slurm_status(job: str) -> tuple[Optional[str], str]:
    """(status word or None, Slurm's state line) of a job; Slurm's error when it cannot be asked."""
    try:
        states = slurm.job_states(job)
    except slurm.SlurmError as e:
        return None, f"job {job}: {e}"
    s = states[0]
    word = "requeued" if s.restarts and s.state in ("PENDING", "REQUEUED") else SLURM_STATUS.get(s.state)
    return word, f"job {job}: {s.state}" + (f" (restarts {s.restarts})" if s.restarts else "")


def commands(root: Path) -> dict[str, str]:
    """What to type next with this run dir."""
    q = shlex.quote(str(root))
    return {"chat": f"launch-chat {q}", "export": f"launch-export {q} --export_dir {shlex.quote(str(root / 'export'))}",
            "plot": f"launch-plot {q}", "status": f"launch-status {q}"}


def list_runs(output_root: Path) -> list[dict[str, Any]]:
    root = output_root.resolve()
    hostname = socket.gethostname()
    out = []
    for path in find_runs(root):
        row = read_run(path, hostname)
        run = RunDir(path)
        job = slurm_job(run)
        status, detail = row.status, ""
        if job and status in ("running", "unknown"):
            word, detail = slurm_status(job)
            status = word or status
        out.append({"id": str(path.relative_to(root)), "name": row.name, "stage": row.stage, "adapter": row.adapter,
                    "status": status, "detail": detail, "steps": row.steps, "final_loss": row.final_loss,
                    "wall": None if row.wall_s is None else row.cells()[6], "root": str(path),
                    "slurm_job": job, "commands": commands(path)})
    return out


def metrics_since(run_dir: Path, offset: int) -> dict[str, Any]:
    """Complete metrics.jsonl lines from byte `offset` on (a half-written last line waits for the next call), and
    the offset to ask from next. A file shorter than offset (a run dir started over) is read from 0."""
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return {"rows": [], "offset": 0, "reset": offset > 0}
    reset = path.stat().st_size < offset
    start = 0 if reset else offset
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(CHUNK)
    end = data.rfind(b"\n") + 1
    rows = []
    for line in data[:end].splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append({k: row[k] for k in ("step", *SERIES) if isinstance(row.get(k), (int, float))})
    return {"rows": rows, "offset": start + end, "reset": reset, "more": start + end < path.stat().st_size}


def tail(path: Path, lines: int = 60, max_bytes: int = 64 * 1024) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - max_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def log_tails(run_dir: Path, launch_log: Optional[Path]) -> list[dict[str, str]]:
    """The run's logs, most useful first: what `launch` printed (started from the page), rank 0, the node's
    launcher log, the Slurm job's output."""
    run = RunDir(run_dir)
    paths = [p for p in (launch_log, run.rank_log(0), run.logs / "launcher.node0.log") if p is not None]
    paths += sorted((run_dir / "slurm").glob("*.out"))[-1:]
    return [{"name": str(p.relative_to(run_dir)) if run_dir in p.parents else "launch output", "text": tail(p)}
            for p in paths if p.is_file()]
