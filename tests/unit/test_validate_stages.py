"""validate() for the TRL stages and stage chaining: each mistake names key, value and fix; the CLI exits 2."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import yaml

from launcher.facts import RunDirFacts, RunRefFacts, scan_run_ref
from tests import support
from tests.support import TINY_MODEL, run_launch

RM_RUN = "/runs/rm"
SFT_RUN = "/runs/sft"


def rm_run(base: str = str(TINY_MODEL), **kw) -> RunRefFacts:
    return RunRefFacts(**{"exists": True, "run_dir": RM_RUN, "stage": "rm", "adapter": "lora", "base_model": base,
                          "has_final": True, "reward_stats": True, **kw})


BASE = ("device=cpu", "gpus=2")
problems = partial(support.problems, base=BASE)
errors = partial(support.errors, base=BASE)
only_error = partial(support.only_error, base=BASE)


@pytest.mark.parametrize("recipe", ["tiny_rm", "tiny_dpo_lora", "tiny_kto_lora", "tiny_grpo_lora"])
def test_tiny_stage_recipes_validate(recipe):
    assert problems(f"recipe={recipe}") == []


def test_ppo_with_an_rm_run_validates():
    assert problems("recipe=tiny_ppo_lora", f"stage.reward_model={RM_RUN}", runs={RM_RUN: rm_run()}) == []


def test_stages_compose_with_adapters_and_precisions():
    for adapter in ("full", "freeze", "lora"):
        for precision in ("fp32", "bf16", "pure_bf16"):
            assert errors("recipe=tiny_dpo_lora", f"adapter={adapter}", f"precision={precision}") == []


def test_ppo_without_reward_model():
    e = only_error("recipe=tiny_ppo_lora")
    assert e.key == "stage.reward_model" and "stage=rm run" in e.fix


@pytest.mark.parametrize("run, needle", [
    (RunRefFacts(), "no such directory"),
    (RunRefFacts(exists=True), "not a run dir"),
    (rm_run(stage="sft"), "a stage=sft run, not a reward model"),
    (rm_run(has_final=False), "has no final/"),
    (rm_run(base="meta-llama/Llama-2-7b-hf"), "that run trained on meta-llama/Llama-2-7b-hf"),
])
def test_reward_model_must_be_a_finished_rm_run_on_the_same_base(run, needle):
    e = only_error("recipe=tiny_ppo_lora", f"stage.reward_model={RM_RUN}", runs={RM_RUN: run})
    assert e.key == "stage.reward_model" and e.value == RM_RUN and needle in e.fix


def test_score_norm_needs_the_rm_runs_statistics():
    e = only_error("recipe=tiny_ppo_lora", f"stage.reward_model={RM_RUN}", "stage.ppo_score_norm=true",
                   runs={RM_RUN: rm_run(reward_stats=False)})
    assert e.key == "stage.ppo_score_norm" and "reward_mean/reward_std" in e.fix


def test_grpo_needs_a_reward_and_known_functions():
    e = only_error("recipe=tiny_grpo_lora", "stage.reward_funcs=[]")
    assert e.key == "stage.reward_funcs" and "digit_ratio" in e.fix and "stage.reward_model" in e.fix
    e = only_error("recipe=tiny_grpo_lora", "stage.reward_funcs=[digits]")
    assert e.value == "digits" and "registered: digit_ratio, distinct_words, match" in e.fix
    assert errors("recipe=tiny_grpo_lora", "stage.reward_funcs=[my_pkg.rewards:polite]") == []
    assert errors("recipe=tiny_grpo_lora", "stage.reward_funcs=[]", f"stage.reward_model={RM_RUN}",
                  runs={RM_RUN: rm_run()}) == []


def test_generation_batch_must_hold_whole_groups():
    # 8 per device x 2 ranks x 1 = 16 completions a step: groups of 3 do not fit
    e = only_error("recipe=tiny_grpo_lora", "stage.num_generations=3")
    assert e.key == "stage.num_generations" and "= 16" in e.fix
    assert only_error("recipe=tiny_grpo_lora", "stage=rloo", "stage.num_generations=1").key == "stage.num_generations"


@pytest.mark.parametrize("recipe, data", [("tiny_dpo_lora", "alpaca_demo"), ("tiny_rm", "kto_demo"),
                                          ("tiny_kto_lora", "polite_demo"), ("tiny_grpo_lora", "polite_demo")])
def test_stage_on_data_of_another_format_names_the_dataset_and_its_format(recipe, data):
    e = only_error(f"recipe={recipe}", f"data.dataset={data}")
    assert e.key == "data.dataset" and e.value == data
    assert f"{data}.json holds " in e.fix and " takes " in e.fix


def test_prefix_adapter_is_for_pt_and_sft_only():
    e = only_error("recipe=tiny_rm", "adapter=prefix")
    assert e.key == "adapter" and "sequence-classification head" in e.fix and "adapter=lora" in e.fix


def test_rm_continuing_an_adapter_needs_a_new_one(tmp_path):
    adapter = str(tmp_path)
    e = only_error("recipe=tiny_rm", f"adapter.adapter_name_or_path={adapter}", adapters={adapter: "LORA"})
    assert e.key == "adapter.create_new_adapter" and "create_new_adapter=true" in e.fix
    assert errors("recipe=tiny_rm", f"adapter.adapter_name_or_path={adapter}", "adapter.create_new_adapter=true",
                  adapters={adapter: "LORA"}) == []


def test_chained_adapter_of_a_run_on_another_base():
    path = f"{SFT_RUN}/final"
    run = RunRefFacts(True, SFT_RUN, "sft", "lora", "meta-llama/Llama-2-7b-hf", True)
    e = only_error("recipe=tiny_dpo_lora", f"adapter.adapter_name_or_path={path}", adapters={path: "LORA"},
                   runs={path: run})
    assert e.key == "adapter.adapter_name_or_path" and e.value == path
    assert "that run trained on meta-llama/Llama-2-7b-hf" in e.fix and "model.model_name_or_path=" in e.fix


def test_a_run_dir_given_for_an_adapter_points_at_its_final():
    run = RunRefFacts(True, SFT_RUN, "sft", "lora", str(TINY_MODEL), True)
    e = only_error("recipe=tiny_dpo_lora", f"adapter.adapter_name_or_path={SFT_RUN}", adapters={SFT_RUN: None},
                   runs={SFT_RUN: run})
    assert f"adapter.adapter_name_or_path={SFT_RUN}/final" in e.fix


@pytest.mark.parametrize("args, key", [
    (["recipe=tiny_dpo_lora", "stage.dpo_loss=sigmod"], "stage.dpo_loss"),
    (["recipe=tiny_dpo_lora", "stage.dpo_beta=0"], "stage.dpo_beta"),
    (["recipe=tiny_dpo_lora", "stage.dpo_ftx=-1"], "stage.dpo_ftx"),
    (["recipe=tiny_kto_lora", "stage.kto_rejected_weight=0"], "stage.kto_rejected_weight"),
    (["recipe=tiny_kto_lora", "train.per_device_train_batch_size=1"], "train.per_device_train_batch_size"),
    (["recipe=tiny_dpo_lora", "data.packing=true"], "data.packing"),
    (["recipe=tiny_dpo_lora", "data.streaming=true", "train.max_steps=4"], "data.streaming"),
    (["recipe=tiny_grpo_lora", "data.val_size=0.1"], "data.val_size"),
    (["recipe=tiny_grpo_lora", "stage.top_p=0"], "stage.top_p"),
    (["recipe=tiny_grpo_lora", "stage.temperature=0"], "stage.temperature"),
    (["recipe=tiny_grpo_lora", "stage.kl_coef=-0.1"], "stage.kl_coef"),
    (["recipe=tiny_ppo_lora", f"stage.reward_model={RM_RUN}", "stage.ppo_num_mini_batches=3"], "stage.ppo_num_mini_batches"),
    (["recipe=tiny_ppo_lora", f"stage.reward_model={RM_RUN}", "stage.ppo_whiten_rewards=true"],
     "stage.ppo_whiten_rewards"),
    (["recipe=tiny_ppo_lora", f"stage.reward_model={RM_RUN}", "stage.ppo_target=0"], "stage.ppo_target"),
    (["recipe=tiny_dpo_lora", "stage.ref_model=/no/such/model"], "stage.ref_model"),
])
def test_stage_settings(args, key):
    assert only_error(*args, runs={RM_RUN: rm_run(), "/no/such/model": RunRefFacts()}).key == key


def test_ppo_cannot_resume():
    ckpt = RunDirFacts(exists=True, has_checkpoints=True, last_checkpoint="/runs/ppo/checkpoints/checkpoint-4")
    e = only_error("recipe=tiny_ppo_lora", f"stage.reward_model={RM_RUN}", "resume=true", "output_dir=/runs/ppo",
                   runs={RM_RUN: rm_run()}, output_dir=ckpt)
    assert e.key == "resume" and "PPOTrainer cannot resume" in e.fix


def test_a_key_the_stage_does_not_read_is_a_warning():
    found = problems("recipe=tiny_dpo_lora", "stage.num_generations=4", "stage.dpo_ftx=0.5")
    assert [(p.key, p.error) for p in found] == [("stage.num_generations", False)]
    assert "stage=dpo does not read it (only grpo, rloo)" in found[0].fix


def test_scan_run_ref_reads_an_earlier_run(tmp_path):
    run = tmp_path / "rm"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"stage": {"name": "rm"}, "adapter": {"name": "lora"},
                                                     "model": {"model_name_or_path": "/m"}}))
    (run / "summary.json").write_text('{"reward_mean": 0.1, "reward_std": 2.0}')
    expected = RunRefFacts(True, str(run), "rm", "lora", "/m", True, True)
    assert scan_run_ref(str(run)) == scan_run_ref(str(run / "final")) == expected
    assert scan_run_ref(str(tmp_path)) == RunRefFacts(exists=True)
    assert scan_run_ref(str(tmp_path / "nothing")) == RunRefFacts()


def write_run(root: Path, stage: str, base: str) -> Path:
    (root / "final").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"stage": {"name": stage}, "adapter": {"name": "lora"},
                                                      "model": {"model_name_or_path": base}}))
    return root


@pytest.mark.parametrize("args, needle", [
    (["recipe=tiny_ppo_lora"], "error: stage.reward_model=None: stage=ppo scores its samples with a reward model"),
    (["recipe=tiny_ppo_lora", "stage.reward_model={sft}"], "a stage=sft run, not a reward model"),
    (["recipe=tiny_dpo_lora", "data.dataset=alpaca_demo"], "error: data.dataset=alpaca_demo: "),
    (["recipe=tiny_rm", "adapter=prefix"], "error: adapter=prefix: "),
    (["recipe=tiny_dpo_lora", "stage.ref_model={other}"], "that run trained on /elsewhere/model"),
])
def test_cli_stage_mistakes_exit_2_starting_nothing(tmp_path, args, needle):
    runs = tmp_path / "runs"
    sft, other = write_run(runs / "sft", "sft", str(TINY_MODEL)), write_run(runs / "other", "sft", "/elsewhere/model")
    out = tmp_path / "out"
    out.mkdir()
    r = run_launch("device=cpu", "gpus=2", *[a.format(sft=sft, other=other) for a in args], cwd=out)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "nothing was started" in r.stderr and "Traceback" not in r.stderr
    assert list(out.iterdir()) == []
