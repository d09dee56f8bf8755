"""validate() of evaluation while training: the eval split (data.val_size or data.eval_dataset), the eval
keys that need one, accuracy, best-model and early-stopping keys; each mistake names key, value and fix."""
from __future__ import annotations

import pytest

from launcher.validate import validate
from tests.support import compose, facts, run_launch

SFT = ("recipe=tiny_sft_lora", "device=cpu")


def errors(*overrides):
    cfg = compose(*overrides)
    return [p for p in validate(cfg, facts(cfg)) if p.error]


def only_error(*overrides):
    errs = errors(*overrides)
    assert len(errs) == 1, [str(e) for e in errs]
    return errs[0]


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
