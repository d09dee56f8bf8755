"""Evaluation while training, for real on one CPU process each: eval metrics (loss, perplexity, next-token
accuracy) at exactly the configured steps, the best checkpoint loaded back into final/ and never rotated away,
and early stopping of a plateaued run at the expected evaluation."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from launcher.rundir import RunDir, read_events
from tests.support import run_launch

pytestmark = pytest.mark.integration

SMALL = ("device=cpu", "gpus=1", "global_batch_size=null", "train.per_device_train_batch_size=2",
         "train.logging_steps=2", "train.warmup_steps=0")


def train(tmp_path_factory, name: str, *args: str) -> Path:
    run = tmp_path_factory.mktemp(name) / "run"
    r = run_launch(*SMALL, f"output_dir={run}", *args, cwd=run.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return run


def evals(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "eval_loss" in r]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def best(tmp_path_factory, tiny_model):
    # greater_is_better=true on eval_loss: the "best" evaluation is the first (the loss falls), so final/ must
    # hold step 2's weights although training went on to step 8; step 2 is no save step (save_steps=4) and
    # save_total_limit=1 would rotate it away. P-Tuning v2 with its prefix MLP: transformers cannot load such a
    # checkpoint back (the launcher copies its adapter instead); LoRA and full models load the transformers way.
    return train(tmp_path_factory, "best", "recipe=tiny_sft_prefix", "data.val_size=16", "train.compute_accuracy=true",
                 "train.eval_strategy=steps", "train.eval_steps=2", "train.save_steps=4", "train.max_steps=8",
                 "train.load_best_model_at_end=true", "train.greater_is_better=true", "train.save_total_limit=1")


def test_eval_loss_perplexity_and_accuracy_at_exactly_the_eval_steps(best):
    rows = evals(best)
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    for r in rows:
        assert r["eval_perplexity"] == pytest.approx(math.exp(r["eval_loss"]))
        assert 0.0 <= r["eval_accuracy"] <= 1.0
    assert rows[-1]["eval_accuracy"] > rows[0]["eval_accuracy"]  # it learns the demo answers' tokens
    assert rows[-1]["eval_loss"] < rows[0]["eval_loss"]


def logits(model_dir: Path, base: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    from launcher.worker.adapters.prefix import load

    model = load(AutoModelForCausalLM.from_pretrained(base), model_dir).eval()
    with torch.no_grad():
        return model(torch.tensor([[1, 20, 30, 40, 50, 60]])).logits


def test_load_best_ends_with_the_best_steps_weights_and_keeps_its_checkpoint(best, tiny_model):
    checkpoints = best / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-8"]
    final = logits(best / "final", tiny_model)
    torch.testing.assert_close(final, logits(checkpoints / "checkpoint-2", tiny_model))
    assert (final - logits(checkpoints / "checkpoint-8", tiny_model)).abs().max() > 1e-4
    s = summary(best)
    assert s["best"] == {"step": 2, "metric": "eval_loss", "value": evals(best)[0]["eval_loss"],
                         "checkpoint": str(checkpoints / "checkpoint-2")}
    assert s["eval_loss"] == evals(best)[0]["eval_loss"] and s["steps"] == 8  # final/'s metrics


def test_early_stopping_stops_a_plateau_at_the_expected_evaluation(tmp_path_factory, tiny_model):
    # a learning rate of 1e-9 leaves eval_loss flat: the first evaluation (step 2) sets the best, the next two
    # improve it by less than the threshold, so patience 2 runs out at the third (step 6) of up to 20 steps
    run = train(tmp_path_factory, "stop", "recipe=tiny_pt_lora", "data.val_size=8", "train.compute_accuracy=true",
                "train.learning_rate=1e-9", "train.eval_strategy=steps", "train.eval_steps=2", "train.max_steps=20",
                "train.early_stopping_steps=2", "train.early_stopping_threshold=0.01")
    assert [r["step"] for r in evals(run)] == [2, 4, 6]
    assert "eval_accuracy" in evals(run)[0]  # pt too
    s = summary(run)
    assert s["early_stopped_at"] == 6 and s["steps"] == 6
    end = [e for e in read_events(RunDir(run)) if e["event"] == "train_end"]
    assert end[-1]["early_stopped_at"] == 6 and end[-1]["outcome"] == "finished"
    assert s["attempts"][-1]["early_stopped_at"] == 6
