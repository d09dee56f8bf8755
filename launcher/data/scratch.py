"""Where a cache build's intermediate map results go, and their removal however the build ends.

With caching off (pipeline.build: the result is cached by cache.py), datasets writes each map's result to a
per-process temp dir (`hf_datasets-*` in /tmp) that only a normal interpreter exit removes. A data process
(it ends with os._exit), a rank stopped by a signal, or a killed one left theirs behind, sized like the
tokenized data (185 MB for 60,000 rows), one per run. Here a build's map files go to a dir named for its
process, removed when the build ends; a build that was killed leaves it to the next build on the node.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

PREFIX = "launcher-maps-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_dead(tmp: str | None = None) -> list[Path]:
    """Remove the scratch dirs of builds whose process is gone."""
    removed = []
    for path in Path(tmp or tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = path.name[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
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
