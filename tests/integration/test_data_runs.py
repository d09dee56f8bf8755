"""Data for real: 2 gloo ranks train on a packed mixture (with an eval split), on plain text (stage=pt)
and on a stream; tokenization happens once, on one rank, and a second launch tokenizes nothing."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support import run_launch

pytestmark = pytest.mark.integration

TOKENIZED = re.compile(r"rank(\d) INFO launcher\.data: data: (\d+) rows tokenized on this rank; (\w+) cache (\S+)")
ROWS = re.compile(r"launcher\.rows: rows (\[.*\])")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tokenized_per_rank(run: Path) -> dict[int, tuple[int, str]]:
    """rank -> (rows it tokenized, cache path), from the rank logs."""
    out = {}
    for rank in (0, 1):
        for m in TOKENIZED.finditer((run / f"logs/rank{rank}.log").read_text()):
            out[int(m.group(1))] = (int(m.group(2)), m.group(4))
    return out


def rows_per_rank(run: Path) -> list[list[list]]:
    return [[json.loads(m) for m in ROWS.findall((run / f"logs/rank{r}.log").read_text())] for r in (0, 1)]


def flat(batch: list) -> list[int]:
    return [i for row in batch for i in (row if isinstance(row, list) else [row])]


@pytest.fixture(scope="module")
def sft(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("data_sft")
    args = ("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "data=demo_mix", "data.packing=true",
            "data.val_size=0.1", "train.eval_strategy=steps", "train.eval_steps=2", "train.max_steps=4",
            "train.logging_steps=1", f"data.cache_dir={base}/cache")
    r = run_launch(*args, f"output_dir={base}/run", cwd=base)
    return r, base / "run", args, base


def test_packed_mixture_trains_on_2_ranks_and_evaluates(sft):
    r, run, _, _ = sft
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]
    assert [m["step"] for m in metrics if "eval_loss" in m] == [2, 4]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_loss"] == metrics[-1]["eval_loss"] and summary["steps"] == 4
    data = json.loads((run / "data.json").read_text())
    assert data["cache_path"] == summary["data_cache"] and Path(data["cache_path"], "meta.json").is_file()
    assert data["rows_tokenized"] == 100 and data["inputs"]["packing"] is True
    assert {k: v["in_mixture"] for k, v in data["datasets"].items()} == \
        {"alpaca_en_demo": 58, "identity": 12, "sharegpt_demo": 30}
    assert data["eval_rows"] >= 1 and data["train_rows"] >= 8


def test_tokenization_happens_once_across_ranks(sft):
    _, run, _, base = sft
    counts = tokenized_per_rank(run)
    assert counts[0][0] == 100 and counts[1][0] == 0  # rank 0 built, rank 1 read what it built
    assert counts[0][1] == counts[1][1] and counts[0][1].startswith(str(base / "cache"))


def test_packed_rows_are_logged_as_lists_and_ranks_get_other_rows(sft):
    _, run, _, _ = sft
    rank0, rank1 = rows_per_rank(run)
    assert len(rank0) >= 4 and len(rank1) >= 4
    assert all(isinstance(row, list) and row for batch in rank0 + rank1 for row in batch)
    first0, first1 = flat(rank0[0]), flat(rank1[0])
    assert len(set(first0)) == len(first0) and set(first0).isdisjoint(first1)


def test_a_second_launch_tokenizes_nothing(sft):
    _, run, args, base = sft
    r = run_launch(*args, "prepare_only=true", cwd=base)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((run / "data.json").read_text())
    assert f"data cache: {data['cache_path']}" in r.stdout and "rows tokenized: 0;" in r.stdout


def test_prepare_only_then_pt_on_2_ranks_reads_the_cache(tmp_path, tiny_model):
    args = ("recipe=tiny_pt_lora", "device=cpu", "gpus=2", "train.max_steps=4", "train.logging_steps=1",
            f"data.cache_dir={tmp_path}/cache")
    r = run_launch(*args, "prepare_only=true", cwd=tmp_path)
    assert r.returncode == 0 and "rows tokenized: 60;" in r.stdout, r.stderr[-3000:]
    (prepared,) = re.findall(r"^data cache: (\S+)$", r.stdout, re.M)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no run dir, no rank started
    r = run_launch(*args, f"output_dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert tokenized_per_rank(tmp_path / "run") == {0: (0, prepared), 1: (0, prepared)}
    data = json.loads((tmp_path / "run/data.json").read_text())
    assert data["cache_hit"] and data["cache_path"] == prepared
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["stage"] == "pt" and summary["steps"] == 4
    # 8 rows of 128 tokens per step; only the last chunk of the text is shorter
    assert 4 * 8 * 128 - 128 < summary["trained_tokens"] <= 4 * 8 * 128
    rank0, rank1 = rows_per_rank(tmp_path / "run")
    assert all(0 <= doc < 60 for batch in rank0 + rank1 for doc in flat(batch))


def test_streaming_on_2_ranks(tmp_path, tiny_model):
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "data.streaming=true", "data.val_size=4",
                   "train.max_steps=3", "train.logging_steps=1", f"output_dir={tmp_path}/run",
                   f"data.cache_dir={tmp_path}/cache", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "run"
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl") if "loss" in m] == [1, 2, 3]
    assert json.loads((run / "summary.json").read_text())["eval_loss"] is not None
    assert json.loads((run / "data.json").read_text())["streaming"] is True
    rank0, rank1 = rows_per_rank(run)
    for step in range(3):  # one ordered stream, each rank its own slice of every global batch
        assert set(rank0[step]).isdisjoint(rank1[step]) and min(rank0[step] + rank1[step]) >= 4
    assert not list((tmp_path / "cache").glob("*/meta.json"))
