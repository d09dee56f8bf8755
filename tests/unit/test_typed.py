"""A key typed on the command line is never silently overridden or ignored (launcher/typed.py, validate/typed.py)."""
from __future__ import annotations

import json

from launcher.topology import plan_batch
from launcher.typed import settle_typed, typed_keys
from launcher.validate import validate
from tests.support import compose, facts, run_launch


def settled(*overrides):
    cfg = compose(*overrides)
    typed = typed_keys(overrides)
    cfg, notes = settle_typed(cfg, typed)
    return cfg, notes, validate(cfg, facts(cfg), typed)


def test_typed_keys_strip_plus_and_skip_removals():
    assert typed_keys(["+a.b=1", "train.x=2", "~c", "adapter=full", "recipe=r"]) == \
        {"a.b", "train.x", "adapter", "recipe"}


def test_typed_grad_accum_wins_over_the_recipes_global_batch_with_a_note():
    # tiny_sft_lora sets global_batch_size=8 with per_device 4: grad accum would be derived as 1 (on 2 ranks)
    cfg, notes, problems = settled("recipe=tiny_sft_lora", "device=cpu", "gpus=2",
                                   "train.gradient_accumulation_steps=3")
    batch = plan_batch(cfg)
    assert (batch.gradient_accumulation_steps, batch.global_batch_size, batch.derived) == (3, 24, False)
    assert cfg.global_batch_size is None
    [note] = notes
    assert not note.error and note.key == "train.gradient_accumulation_steps" and "global_batch_size=8" in note.fix
    assert not [p for p in problems if p.error]


def test_both_typed_and_disagreeing_is_an_error_naming_both():
    _, notes, problems = settled("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "global_batch_size=16",
                                 "train.gradient_accumulation_steps=3")
    [e] = [p for p in problems if p.error]
    assert notes == [] and e.key == "global_batch_size" and "train.gradient_accumulation_steps=3" in e.fix


def test_both_typed_and_agreeing_is_fine():
    cfg, notes, problems = settled("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "global_batch_size=16",
                                   "train.gradient_accumulation_steps=2")
    assert plan_batch(cfg).gradient_accumulation_steps == 2 and notes == [] and problems == []


def test_untyped_grad_accum_is_still_derived_from_global_batch():
    cfg, notes, _ = settled("recipe=tiny_sft_lora", "device=cpu", "gpus=1")
    assert notes == [] and plan_batch(cfg).derived and plan_batch(cfg).gradient_accumulation_steps == 2


def test_typed_model_lora_target_wins_over_the_recipes_adapter_lora_target():
    cfg, notes, _ = settled("recipe=tiny_dpo_lora", "device=cpu", "model.lora_target=q_proj")
    assert cfg.adapter.lora_target == "q_proj" and notes[0].key == "model.lora_target"
    cfg, notes, _ = settled("recipe=tiny_dpo_lora", "device=cpu", "model.lora_target=q_proj",
                            "adapter.lora_target=v_proj")
    assert cfg.adapter.lora_target == "v_proj" and notes == []


def test_typed_keys_the_run_does_not_read_are_warned():
    _, _, problems = settled("recipe=tiny_sft_lora", "device=cpu", "adapter=full", "adapter.lora_rank=16",
                             "cluster.partition=gpu", "logger.project=mine")
    assert {(p.key, p.error) for p in problems} == {("adapter.lora_rank", False), ("cluster.partition", False),
                                                    ("logger.project", False)}


def test_typed_master_port_on_slurm_is_an_error():
    _, _, problems = settled("recipe=tiny_sft_lora", "cluster=slurm", "master_port=1234", "dry_run=true")
    assert [p.key for p in problems if p.error] == ["master_port"]


def test_cli_runs_with_the_typed_grad_accum_and_says_so(tmp_path):
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "train.gradient_accumulation_steps=3",
                   "dry_run=true", f"output_dir={tmp_path}/run")
    assert r.returncode == 0, r.stderr
    assert "gradient_accumulation_steps 3 x world size 2 = global batch 24" in r.stdout
    assert "wins over global_batch_size=8" in r.stderr


def test_typed_optim_that_the_ds_configs_optimizer_replaces_is_warned(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto",
                              "gradient_accumulation_steps": "auto",
                              "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}))
    _, _, problems = settled("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "zero=custom", f"zero.config={ds}",
                             "train.optim=sgd")
    [w] = [p for p in problems if p.key == "train.optim"]
    assert not w.error and "own optimizer section" in w.fix
    _, _, problems = settled("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "zero=2", "train.optim=sgd")
    assert not [p for p in problems if p.key == "train.optim"]
