"""Predict with generation for real: recipe=tiny_adgen_ptuning trains a prefix (P-Tuning v2) on 2 gloo ranks, then
predicts its held-out rows and scores them in the same launch; launch-predict on 1 rank, with no training, gives
the same greedy answers from the run's saved prefix, row for row in the data's order."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import PROJECT_ROOT
from tests.support import run_launch, run_module

pytestmark = pytest.mark.integration

METRICS = {"predict_rouge-1", "predict_rouge-2", "predict_rouge-l", "predict_bleu-4"}


def predictions(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "generated_predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    run = tmp_path_factory.mktemp("adgen") / "run"
    # 8 eval rows over 2 ranks in batches of 3: each rank pads its last batch (a repeated row, dropped)
    r = run_launch("recipe=tiny_adgen_ptuning", "device=cpu", "gpus=2", f"output_dir={run}", "train.max_steps=6",
                   "train.per_device_eval_batch_size=3", "generation.max_new_tokens=8", cwd=run.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return run


def test_train_then_predict_in_one_launch(trained):
    rows = predictions(trained)
    dev = json.loads((PROJECT_ROOT / "data" / "adgen_demo_dev.json").read_text())
    assert [r["label"].strip() for r in rows] == [d["summary"] for d in dev]  # one row per eval row, in order
    assert all(d["content"] in r["prompt"] for r, d in zip(rows, dev))
    assert all(set(r) == {"prompt", "predict", "label"} for r in rows)
    results = json.loads((trained / "predict_results.json").read_text())
    assert METRICS <= set(results) and results["predict_rows"] == 8 and results["predict_runtime"] > 0
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["predict"] == results and summary["world_size"] == 2 and summary["steps"] == 6


def test_launch_predict_on_one_rank_gives_the_same_answers(trained):
    r = run_module("launcher.predict", str(trained), "gpus=1", "device=cpu", "train.per_device_eval_batch_size=5",
                   cwd=trained.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = trained / "predict"
    assert predictions(out) == predictions(trained)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "predict" and summary["world_size"] == 1
    assert summary["adapter_name_or_path"] == str(trained / "final") and not (out / "final").exists()
