"""launcher.data.scratch: a cache build's intermediate map files live in a dir of its own and are gone when it
ends, also in the data process (which ends with os._exit); a killed build's dir goes with a later build."""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import datasets
import pytest
from datasets import Dataset

from launcher.data import background, scratch
from launcher.data.cache import prepare
from tests.unit.test_data_pipeline import config, tokenizer  # noqa: F401 - a fixture


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """The system temp dir, for this process and its forks: where datasets and scratch put temp files."""
    for var in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path / "tmp"


def temp_files(tmp) -> list[str]:
    return sorted(p.name for p in tmp.iterdir())


def test_maps_write_into_the_scratch_dir_which_goes_at_the_end(tmp, tmp_path):
    Dataset.from_list([{"x": i} for i in range(10)]).save_to_disk(str(tmp_path / "saved"))
    on_disk = datasets.load_from_disk(str(tmp_path / "saved"))  # maps of an in-memory one stay in memory
    was = datasets.is_caching_enabled()
    datasets.disable_caching()  # as pipeline.build does: maps then write to datasets' temp dir, here ours
    try:
        with scratch.map_files() as d:
            mapped = on_disk.map(lambda r: {"y": r["x"] + 1})
            assert [Path(f["filename"]).parent for f in mapped.cache_files] == [d]
            assert d.parent == tmp and d.name.startswith(scratch.PREFIX)
    finally:
        if was:
            datasets.enable_caching()
    assert temp_files(tmp) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_build_in_the_data_process_leaves_no_temp_file(tmp, tmp_path, tokenizer, workers):
    cfg = config(tmp_path, "data=demo_mix", f"data.preprocessing_num_workers={workers}")
    located = background.start(cfg, tokenizer, rank=0, run_dir=None).located()  # the child ends with os._exit
    assert located.tokenized_here > 0
    assert temp_files(tmp) == []  # before: hf_datasets-* of the child's maps, never removed
    assert prepare(cfg, tokenizer, located=located).record["train_rows"] > 0


def test_a_dead_builds_idle_scratch_goes_with_the_next_build_and_a_live_ones_stays(tmp, tmp_path, tokenizer):
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead = tmp / f"{scratch.PREFIX}{proc.pid}-abc"
    live = tmp / f"{scratch.PREFIX}{os.getpid()}-def"
    other = tmp / "launcher-maps-notapid-x"
    recent = tmp / f"{scratch.PREFIX}{proc.pid}-ghi"  # its pid is gone, but it was written to a minute ago
    for d in (dead, live, other, recent):
        d.mkdir()
        (d / "cache-1.arrow").write_bytes(b"x" * 100)
    for d in (dead, live, other):
        old = time.time() - scratch.DEAD_AFTER_S - 1
        for path in (d / "cache-1.arrow", d):
            os.utime(path, (old, old))
    os.utime(recent / "cache-1.arrow", (time.time() - 60,) * 2)
    prepare(config(tmp_path), tokenizer)
    assert temp_files(tmp) == sorted([live.name, other.name, recent.name])
