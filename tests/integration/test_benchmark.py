"""stage=eval for real: launch-eval scores the shipped tiny_mmlu task through lm-evaluation-harness on gloo ranks.

Why the scores are deterministic. Every letter is the answer of exactly a quarter of tiny_mmlu's rows. The
untrained tiny model (random weights, built from a fixed seed by scripts/make_tiny_model.py) prefers one letter
token whatever the prompt, so it answers that letter on every row and scores exactly 25%: chance. The trained
model is the same tiny model fully fine-tuned (the project's own sft, fixed seed) on the task's own prompts, as
the harness renders them (taken from the untrained run's eval_samples.jsonl), each followed by its correct
letter: it has memorised every row and scores 100%. Zero-shot and the first 20 rows keep the runs short.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import TINY_MODEL, run_module

pytestmark = pytest.mark.integration

ROWS = ("task=tiny_mmlu", "n_shot=0", "limit=20", "log_samples=true", "device=cpu")


def launch_eval(out: Path, target: str | Path, *args: str) -> dict:
    r = run_module("launcher.benchmark", str(target), *ROWS, f"output_dir={out}", *args, cwd=out.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "| tiny_mmlu | 0 | 20 |" in r.stdout  # the table printed at the end
    return json.loads((out / "eval_results.json").read_text())


def samples(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "eval_samples.jsonl").read_text().splitlines()]


def chosen(row: dict) -> int:
    return max(range(len(row["responses"])), key=lambda i: row["responses"][i][0])


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("untrained") / "eval"
    launch_eval(out, TINY_MODEL, "gpus=1")
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, untrained) -> Path:
    """The tiny model trained on the task's prompts -> correct letter (template `empty`: the prompt as written); on
    2 ranks, each with one thread, which on a busy 2-core machine is several times faster than 1 rank with 2."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "tiny_mmlu_sft.jsonl"
    data.write_text("".join(json.dumps({"instruction": s["prompt"], "output": s["continuations"][s["target"]]}) + "\n"
                            for s in samples(untrained)))
    r = run_module("launcher.cli", "adapter=full", f"data.dataset={data}", "data.template=empty", "device=cpu",
                   "gpus=2", f"output_dir={root / 'run'}", "train.max_steps=40", "global_batch_size=20",
                   "train.per_device_train_batch_size=10", "train.learning_rate=3e-3",
                   "train.lr_scheduler_type=constant", "train.save_steps=1000", cwd=root, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root / "run"


def test_untrained_model_scores_chance(untrained):
    result = json.loads((untrained / "eval_results.json").read_text())
    rows = samples(untrained)
    assert len(rows) == 20 and sorted(r["doc_id"] for r in rows) == list(range(20))
    assert {chosen(r) for r in rows} == {chosen(rows[0])}, "a random model answers one letter whatever the prompt"
    assert result["tasks"]["tiny_mmlu"]["acc"] == result["average"]["acc"] == 0.25
    assert result["n_shot"] == 0 and result["tasks"]["tiny_mmlu"]["acc_stderr"] > 0
    summary = json.loads((untrained / "summary.json").read_text())
    assert (summary["stage"], summary["world_size"], summary["eval"]["tasks"]) == ("eval", 1, result["tasks"])


def test_trained_model_scores_100_and_two_ranks_agree_with_one(tmp_path, trained):
    one = launch_eval(tmp_path / "one", trained, "gpus=1")
    two = launch_eval(tmp_path / "two", trained, "gpus=2")
    assert one["tasks"]["tiny_mmlu"]["acc"] == 1.0 and one["world_size"] == 1
    assert two["tasks"] == one["tasks"] and two["world_size"] == 2
    # each rank scored its own rows (a row scored twice would appear twice), gathered back whole on rank 0
    rows1, rows2 = samples(tmp_path / "one"), samples(tmp_path / "two")
    assert [r["doc_id"] for r in rows2] == [r["doc_id"] for r in rows1] == list(range(20))
    for a, b in zip(rows1, rows2):
        assert (a["prompt"], a["target"], a["acc"], chosen(a)) == (b["prompt"], b["target"], b["acc"], chosen(b))
        assert [x[0] for x in a["responses"]] == pytest.approx([x[0] for x in b["responses"]], abs=1e-4)
