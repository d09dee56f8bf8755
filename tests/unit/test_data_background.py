"""Local rank 0's data process (launcher.data.background), for real: a forked child builds the cache while the
test (the rank) goes on; its result, its errors, its death and its cancellation reach the rank."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.data import background
from launcher.data.cache import cache_key, key_inputs, prepare
from launcher.data.registry import DataError, resolve_all
from tests.unit.test_data_pipeline import config, tokenizer  # noqa: F401 - a fixture


def lock_of(cfg, tokenizer) -> str:
    """The lock a build of cfg's cache takes: held here, it keeps the child waiting."""
    d = cfg.data
    inputs = key_inputs(d, "sft", cfg.seed, resolve_all(d.dataset, d.dataset_dir), tokenizer)
    return str(Path(d.cache_dir) / f"{cache_key(inputs)}.lock")


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by whoever inherited it, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_data_process_needs_a_core_no_rank_of_the_node_uses():
    cores = len(os.sched_getaffinity(0))
    assert background.spare_core(cores - 1) and not background.spare_core(cores)


def test_the_child_builds_the_cache_that_the_rank_reads(tmp_path, tokenizer):
    cfg = config(tmp_path)
    job = background.start(cfg, tokenizer, rank=0, run_dir=None)
    assert job.pid != os.getpid()
    located = job.located()
    assert os.WIFEXITED(job.status) and os.WEXITSTATUS(job.status) == 0 and not alive(job.pid)
    data = prepare(cfg, tokenizer, located=located)
    assert data.record["rows_tokenized_here"] == located.tokenized_here == data.record["train_rows"] > 0
    assert not data.record["cache_hit"] and Path(located.path, "meta.json").is_file()
    # the same rows as this process reads from the cache on its own
    again = prepare(cfg, tokenizer)
    assert again.record["cache_hit"] and again.record["cache_path"] == located.path
    assert data.train["input_ids"] == again.train["input_ids"] and data.train["labels"] == again.train["labels"]
    # a second start finds the cache complete and tokenizes nothing
    assert background.start(cfg, tokenizer, rank=0, run_dir=None).located().tokenized_here == 0


def test_a_data_error_in_the_child_is_the_ranks_data_error(tmp_path, tokenizer):
    rows = [{"instruction": "q", "output": "a"}] * 3 + [{"instruction": "q"}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    cfg = config(tmp_path, f"data.dataset={tmp_path}/rows.json")
    with pytest.raises(DataError, match="row 3 lacks output"):
        background.start(cfg, tokenizer, rank=0, run_dir=None).located()


def test_a_killed_child_is_reported_and_publishes_nothing(tmp_path, tokenizer):
    from filelock import FileLock

    cfg = config(tmp_path)
    with FileLock(lock_of(cfg, tokenizer)):  # the child waits for it
        job = background.start(cfg, tokenizer, rank=0, run_dir=None)
        os.kill(job.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match=f"data process {job.pid} ended \\(killed by SIGKILL\\) before it "
                                               "reported"):
            job.located()
    assert not list((tmp_path / "cache").glob("*/meta.json"))


def test_cancel_ends_a_child_still_at_work(tmp_path, tokenizer):
    from filelock import FileLock

    cfg = config(tmp_path)
    with FileLock(lock_of(cfg, tokenizer)):
        job = background.start(cfg, tokenizer, rank=0, run_dir=None)
        time.sleep(0.2)
        assert alive(job.pid)
        job.cancel()
        assert not alive(job.pid) and os.WIFSIGNALED(job.status) and os.WTERMSIG(job.status) == signal.SIGTERM
        job.cancel()  # twice: nothing left to do


CHILD_OF_A_RANK = """
import sys, time
from filelock import FileLock
from launcher.data import background
from launcher.worker.model import load_tokenizer
from tests.support import compose
from tests.unit.test_data_pipeline import config, tokenizer  # noqa: F401 - a fixture
from tests.unit.test_data_background import lock_of
cfg = compose("recipe=tiny_sft_lora", "device=cpu", f"data.cache_dir={sys.argv[1]}")
tok = load_tokenizer(cfg)
lock = FileLock(lock_of(cfg, tok)); lock.acquire()  # the child waits for it as long as this process lives
print(background.start(cfg, tok, rank=0, run_dir=None).pid, flush=True)
time.sleep(120)
"""


def test_the_child_dies_with_its_rank(tmp_path, tiny_model):
    from launcher import PROJECT_ROOT

    rank = subprocess.Popen([sys.executable, "-c", CHILD_OF_A_RANK, str(tmp_path / "cache")], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    try:
        child = int(rank.stdout.readline())
        assert alive(child)
        rank.kill()  # SIGKILL: no handler, no cleanup in the rank
        rank.wait()
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        rank.kill()
