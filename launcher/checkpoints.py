"""Which checkpoints of a run count: only complete ones.

A checkpoint-N directory is complete once its marker is there. Rank 0 writes the marker last, after every
rank has written its part (weights, optimizer and scheduler state, RNG state, ZeRO shards), so a directory
left half-written by a kill, a node failure or a full disk is never resumed from. Pure file logic without
torch: the worker, validate's facts and the backends all read it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

PREFIX = "checkpoint-"
#: written last into checkpoint-N/ (atomically), after every rank's files
MARKER = "launcher_complete.json"
_STEP = re.compile(rf"^{PREFIX}(\d+)$")


def checkpoint_step(path: str | Path) -> Optional[int]:
    """N of a checkpoint-N directory name, else None."""
    m = _STEP.match(Path(path).name)
    return int(m.group(1)) if m else None


def all_checkpoints(checkpoints_dir: str | Path) -> list[Path]:
    """Every checkpoint-N directory, complete or not, oldest step first."""
    d = Path(checkpoints_dir)
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def is_complete(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def complete_checkpoints(checkpoints_dir: str | Path) -> list[Path]:
    return [p for p in all_checkpoints(checkpoints_dir) if is_complete(p)]


def last_complete_checkpoint(checkpoints_dir: str | Path) -> Optional[Path]:
    """The newest complete checkpoint (what resume and requeue continue from), or None."""
    done = complete_checkpoints(checkpoints_dir)
    return done[-1] if done else None


def mark_complete(path: str | Path, info: Mapping[str, Any]) -> None:
    """Write the marker whole or not at all (temporary name, fsync, rename)."""
    path = Path(path)
    tmp = path / f".{MARKER}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(dict(info), indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / MARKER)


def to_rotate(checkpoints_dir: str | Path, keep: Optional[int], best: Optional[str | Path] = None) -> list[Path]:
    """What rotation deletes once a checkpoint is marked complete: complete ones beyond the newest `keep`
    (None: keep all), and incomplete ones older than the newest complete one (a save that died). Never the
    newest complete one, never `best` (load_best_model_at_end ends with its weights), and never a newer
    incomplete one (what a later save may still be writing)."""
    done = complete_checkpoints(checkpoints_dir)
    if not done:
        return []
    newest = checkpoint_step(done[-1])
    best_step = checkpoint_step(best) if best is not None else None
    old_done = [p for p in done[:-max(keep, 1)] if checkpoint_step(p) != best_step] if keep is not None else []
    half = [p for p in all_checkpoints(checkpoints_dir) if not is_complete(p) and checkpoint_step(p) < newest]
    return sorted(old_done + half, key=checkpoint_step)
