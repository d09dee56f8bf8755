"""Where a cache build's intermediate map results go, and their removal however the build ends.

With caching off (pipeline.build: the result is cached by cache.py), datasets writes each map's result to a
per-process temp dir (`hf_datasets-*` in /tmp) that only a normal interpreter exit removes. A data process
(it ends with os._exit), a rank stopped by a signal, or a killed one left theirs behind, sized like the
tokenized data (185 MB for 60,000 rows), one per run. Here a build's map files go to a dir named for its
process, removed when the build ends; a build that was killed leaves it to a later build on the node.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

PREFIX = "launcher-maps-"
#: a scratch dir of a process that is gone is removed once nothing in it was written for this long
DEAD_AFTER_S = 600


def _idle_s(path: Path) -> float:
    """Seconds since anything in path was written (a map writing its file keeps this near 0)."""
    try:
        newest = max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.iterdir())])
    except OSError:  # removed meanwhile
        return 0.0
    return time.time() - newest


def sweep_dead(tmp: str | None = None) -> list[Path]:
    """Remove the scratch dirs of builds whose process is gone and that nothing wrote to for DEAD_AFTER_S (a pid
    from another pid namespace sharing this /tmp can look gone while its build still writes)."""
    from launcher.facts import pid_alive

    removed = []
    for path in Path(tmp or tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = path.name[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid), None) and _idle_s(path) >= DEAD_AFTER_S:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def map_files(tmp: str | None = None) -> Iterator[Path]:
    """datasets' temp dir for map results while the block runs: ours, removed at its end."""
    from datasets import fingerprint

    sweep_dead(tmp)
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=tmp))
    # datasets reads only `.name` of its session temp dir (fingerprint.get_temporary_cache_files_directory);
    # tests/unit/test_data_scratch.py checks that the maps of a build land here.
    saved = fingerprint._TEMP_DIR_FOR_TEMP_CACHE_FILES
    fingerprint._TEMP_DIR_FOR_TEMP_CACHE_FILES = SimpleNamespace(name=str(path))
    try:
        yield path
    finally:
        fingerprint._TEMP_DIR_FOR_TEMP_CACHE_FILES = saved
        shutil.rmtree(path, ignore_errors=True)
