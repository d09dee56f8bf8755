"""Numeric ranges and names of every key, declared once in the schema (schema.Allowed), checked by validate."""
from __future__ import annotations

import math
from dataclasses import fields
from typing import get_type_hints

import pytest

from launcher import schema
from launcher.validate.ranges import check_ranges, declared_ranges
from tests.support import compose, errors_of, run_launch

#: numeric keys whose accepted values are not an interval (checked elsewhere, against the model)
NOT_AN_INTERVAL = {"adapter.freeze_trainable_layers"}  # n != 0 and |n| <= the model's layers: validate/model.py


def test_every_numeric_key_of_train_data_adapter_stage_declares_its_range():
    ranges = declared_ranges()
    for section in ("train", "data", "adapter", "stage"):
        node = get_type_hints(schema.LaunchConfig)[section]
        hints = get_type_hints(node)
        for f in fields(node):
            key = f"{section}.{f.name}"
            if any(t in str(hints[f.name]) for t in ("int", "float")) and key not in NOT_AN_INTERVAL:
                assert key in ranges, f"{key} declares no schema.Allowed"


def test_every_default_is_in_its_range():
    defaults = compose("recipe=tiny_sft_lora", "device=cpu")
    assert list(check_ranges(defaults)) == []


def test_names_are_transformers_own():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert set(schema.LR_SCHEDULERS) <= {s.value for s in SchedulerType}
    assert set(schema.OPTIMIZERS) <= {o.value for o in OptimizerNames}


@pytest.mark.parametrize("override, key, wanted", [
    ("train.learning_rate=-1e-4", "train.learning_rate", "> 0"),
    ("train.learning_rate=nan", "train.learning_rate", "> 0"),
    ("train.learning_rate=inf", "train.learning_rate", "> 0"),
    ("train.warmup_steps=-5", "train.warmup_steps", ">= 0"),
    ("train.max_steps=0", "train.max_steps", ">= 1 or -1"),
    ("train.max_grad_norm=-1", "train.max_grad_norm", ">= 0"),
    ("train.save_total_limit=0", "train.save_total_limit", ">= 1"),
    ("train.optim=adam", "train.optim", "one of adamw_torch"),
    ("train.lr_scheduler_type=cosin", "train.lr_scheduler_type", "one of linear, cosine"),
    ("adapter.lora_dropout=1.0", "adapter.lora_dropout", "in [0, 1)"),
    ("adapter.lora_alpha=0", "adapter.lora_alpha", ">= 1"),
    ("data.val_size=-0.1", "data.val_size", ">= 0"),
    ("data.cutoff_len=4", "data.cutoff_len", ">= 8"),
    ("stage.top_p=0", "stage.top_p", "in (0, 1]"),
    ("stage.top_p=1.5", "stage.top_p", "in (0, 1]"),
    ("stage.temperature=0", "stage.temperature", "> 0"),
    ("master_port=70000", "master_port", "in [1, 65535]"),
])
def test_out_of_range_value_names_key_value_and_range(override, key, wanted):
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", override)
    errors = errors_of(cfg)
    assert [p.key for p in errors] == [key], [str(p) for p in errors]
    typed = override.partition("=")[2]
    value = errors[0].value
    assert value == typed if isinstance(value, str) else (value == float(typed) or not math.isfinite(value))
    assert str(errors[0]).startswith(f"error: {key}=") and wanted in errors[0].fix


def test_every_problem_at_once_and_each_only_once():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "train.learning_rate=0", "adapter.lora_rank=0",
                  "data.val_size=-1", "train.gradient_accumulation_steps=0", "global_batch_size=null")
    keys = [p.key for p in errors_of(cfg)]
    assert sorted(keys) == sorted(["train.learning_rate", "adapter.lora_rank", "data.val_size",
                                   "train.gradient_accumulation_steps"])


def test_a_value_that_breaks_later_arithmetic_is_reported_not_raised():
    # grpo's group check divides by the batch: per_device 0 must give the range error, not ZeroDivisionError
    cfg = compose("recipe=tiny_grpo_lora", "device=cpu", "train.per_device_train_batch_size=0")
    assert [p.key for p in errors_of(cfg)] == ["train.per_device_train_batch_size"]


def test_cli_exits_2_listing_every_bad_value_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "train.learning_rate=-1", "stage.top_p=2",
                   "adapter.lora_dropout=1.5", f"output_dir={out}")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    for needle in ("train.learning_rate=-1.0: must be > 0", "stage.top_p=2.0: must be in (0, 1]",
                   "adapter.lora_dropout=1.5: must be in [0, 1)", "3 problem(s)"):
        assert needle in r.stderr, r.stderr
    assert not out.exists()
