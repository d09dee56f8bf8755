"""validate() of evaluation while training: the eval split (data.val_size or data.eval_dataset), the eval
keys that need one, accuracy, best-model and early-stopping keys; each mistake names key, value and fix."""
from __future__ import annotations

import pytest

from tests.support import compose, errors, only_error, problems_of, run_launch

SFT = ("recipe=tiny_sft_lora", "device=cpu")


# ---- the eval split ----------------------------------------------------------------------------------------

def test_eval_dataset_names_from_the_registry_are_an_eval_split():
    assert errors(*SFT, "data.eval_dataset=[identity,sharegpt_demo]", "train.eval_strategy=steps") == []


def test_unknown_eval_dataset_name_lists_the_known_ones():
    e = only_error(*SFT, "data.eval_dataset=[identity,identiti]")
    assert (e.key, e.value) == ("data.eval_dataset", "identiti")
    assert "unknown dataset name" in e.fix and "identity" in e.fix


def test_eval_dataset_of_the_wrong_kind_for_the_stage():
    e = only_error(*SFT, "data.eval_dataset=dpo_demo")
    assert (e.key, e.value) == ("data.eval_dataset", "dpo_demo") and "stage=sft takes" in e.fix


def test_val_size_and_eval_dataset_together_name_both_fixes():
    e = only_error(*SFT, "data.eval_dataset=identity", "data.val_size=0.1")
    assert e.key == "data.eval_dataset" and "data.val_size=0" in e.fix and "data.eval_dataset=null" in e.fix


def test_eval_keys_without_an_eval_split_name_both_ways_to_get_one():
    e = only_error(*SFT, "train.eval_strategy=steps")
    assert e.key == "train.eval_strategy" and "data.val_size" in e.fix and "data.eval_dataset" in e.fix


def test_an_online_stage_refuses_an_eval_dataset():
    problems = errors("recipe=tiny_grpo_lora", "device=cpu", "data.eval_dataset=identity")
    assert any(p.key == "data.eval_dataset" and "evaluates nothing here" in p.fix for p in problems), \
        [str(p) for p in problems]


def test_the_cli_exits_2_and_writes_nothing(tmp_path):
    r = run_launch(*SFT, "data.eval_dataset=identity", "data.val_size=0.1", cwd=tmp_path)
    assert r.returncode == 2 and "data.eval_dataset" in r.stderr + r.stdout
    assert not (tmp_path / "outputs").exists()


# ---- accuracy, best checkpoint, early stopping ---------------------------------------------------------------

SPLIT = (*SFT, "data.val_size=0.1", "train.eval_strategy=steps", "train.eval_steps=10", "train.save_steps=40")


def test_a_good_best_model_and_early_stopping_config_has_no_problem():
    cfg = compose(*SPLIT, "train.compute_accuracy=true", "train.load_best_model_at_end=true",
                  "train.metric_for_best_model=accuracy", "train.early_stopping_steps=3",
                  "train.early_stopping_threshold=0.001")
    assert problems_of(cfg) == []
    cfg = compose("recipe=tiny_pt_lora", "device=cpu", "data.val_size=4", "train.compute_accuracy=true")
    assert problems_of(cfg) == []
    # early stopping alone: the run ends with the stop step's weights
    cfg = compose(*SPLIT, "train.early_stopping_steps=2")
    assert problems_of(cfg) == []


@pytest.mark.parametrize("args, key, fix", [
    (["train.compute_accuracy=true"], "train.compute_accuracy", "no eval split"),
    (["train.load_best_model_at_end=true"], "train.load_best_model_at_end", "no eval split"),
    (["train.early_stopping_steps=2"], "train.early_stopping_steps", "no eval split"),
    (["train.eval_steps=5"], "train.eval_steps", "set data.val_size (e.g. 0.1) or data.eval_dataset"),
])
def test_eval_keys_without_an_eval_split(args, key, fix):
    e = only_error(*SFT, *args)
    assert e.key == key and fix in e.fix, str(e)


@pytest.mark.parametrize("args, key, fix", [
    (["train.load_best_model_at_end=true", "train.eval_strategy=no"], "train.eval_strategy",
     "set train.eval_strategy=steps"),
    (["train.load_best_model_at_end=true", "train.eval_strategy=epoch"], "train.eval_strategy",
     "set train.eval_strategy=steps"),
    (["train.load_best_model_at_end=true", "train.eval_steps=15"], "train.save_steps",
     "a multiple of train.eval_steps=15 (e.g. train.save_steps=30)"),
    (["train.load_best_model_at_end=true", "train.eval_steps=null", "train.logging_steps=3"], "train.save_steps",
     "a multiple of train.eval_steps=3"),
    (["train.load_best_model_at_end=true", "train.metric_for_best_model=accuracy"],
     "train.metric_for_best_model", "train.compute_accuracy=true"),
    (["train.early_stopping_steps=2", "train.metric_for_best_model=bleu"], "train.metric_for_best_model",
     "must be one of eval_loss, loss, eval_perplexity"),
    (["train.early_stopping_steps=0"], "train.early_stopping_steps", "must be >= 1"),
    (["train.early_stopping_steps=2", "train.early_stopping_threshold=-0.1"], "train.early_stopping_threshold",
     "must be >= 0"),
    (["train.early_stopping_steps=2", "train.eval_strategy=no"], "train.early_stopping_steps",
     "set train.eval_strategy=steps"),
])
def test_bad_best_model_and_early_stopping_settings(args, key, fix):
    e = only_error(*SPLIT, *args)
    assert e.key == key and fix in e.fix, str(e)


def test_unused_best_model_keys_are_warnings():
    cfg = compose(*SPLIT, "train.metric_for_best_model=perplexity", "train.early_stopping_threshold=0.1")
    problems = problems_of(cfg)
    assert {p.key for p in problems} == {"train.metric_for_best_model", "train.early_stopping_threshold"}
    assert not any(p.error for p in problems) and "load_best_model_at_end" in problems[0].fix


@pytest.mark.parametrize("recipe, args, key, fix", [
    ("tiny_rm", ["train.compute_accuracy=true"], "train.compute_accuracy", "stage=rm scores whole answers"),
    ("tiny_dpo_lora", ["train.compute_accuracy=true"], "train.compute_accuracy", "stage=dpo compares answer pairs"),
    ("tiny_rm", ["train.load_best_model_at_end=true", "train.metric_for_best_model=perplexity"],
     "train.metric_for_best_model", "use eval_loss"),
    ("tiny_grpo_lora", ["train.early_stopping_steps=2"], "train.early_stopping_steps", "evaluates nothing here"),
])
def test_stages_where_a_key_means_nothing(recipe, args, key, fix):
    split = [] if recipe == "tiny_grpo_lora" else ["data.val_size=0.2", "train.eval_strategy=steps",
                                                  "train.eval_steps=10", "train.save_steps=40"]
    problems = errors(f"recipe={recipe}", "device=cpu", *split, *args)
    assert any(p.key == key and fix in p.fix for p in problems), [str(p) for p in problems]


def test_the_cli_refuses_a_bad_schedule_before_starting(tmp_path):
    r = run_launch(*SPLIT, "train.load_best_model_at_end=true", "train.eval_steps=15", cwd=tmp_path)
    assert r.returncode == 2 and "train.save_steps=40" in r.stderr + r.stdout
    assert not (tmp_path / "outputs").exists()
