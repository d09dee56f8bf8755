"""The TRL stages for real: 2 gloo ranks train the tiny model with rm, dpo, kto, ppo, grpo and rloo through
`launch`, chained through run dirs (sft -> rm -> ppo, sft -> dpo). One run per stage, shared by its assertions."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.support import run_launch, run_module

pytestmark = pytest.mark.integration


def train(tmp_path_factory, name: str, *args: str) -> Path:
    run = tmp_path_factory.mktemp(name) / "run"
    r = run_launch("device=cpu", "gpus=2", f"output_dir={run}", *args, cwd=run.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return run


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def logged(run: Path, metric: str) -> list[float]:
    return [r[metric] for r in rows(run) if metric in r]


@pytest.fixture(scope="module")
def sft(tmp_path_factory, tiny_model):
    return train(tmp_path_factory, "sft", "recipe=tiny_sft_lora", "adapter.lora_target=all", "train.max_steps=8",
                 "train.save_steps=1000")


@pytest.fixture(scope="module")
def rm(tmp_path_factory, sft):
    return train(tmp_path_factory, "rm", "recipe=tiny_rm", f"adapter.adapter_name_or_path={sft}/final",
                 "adapter.create_new_adapter=true")


@pytest.fixture(scope="module")
def dpo(tmp_path_factory, sft):
    return train(tmp_path_factory, "dpo", "recipe=tiny_dpo_lora", f"adapter.adapter_name_or_path={sft}/final",
                 "stage.dpo_ftx=0.5", "logger=tensorboard")


@pytest.fixture(scope="module")
def kto(tmp_path_factory, tiny_model):
    return train(tmp_path_factory, "kto", "recipe=tiny_kto_lora", "adapter=full", "train.learning_rate=1e-3")


@pytest.fixture(scope="module")
def ppo(tmp_path_factory, sft, rm):
    return train(tmp_path_factory, "ppo", "recipe=tiny_ppo_lora", f"stage.reward_model={rm}",
                 f"adapter.adapter_name_or_path={sft}/final", "stage.ppo_score_norm=true", "stage.ppo_target=0.5")


@pytest.fixture(scope="module")
def grpo(tmp_path_factory, tiny_model):
    return train(tmp_path_factory, "grpo", "recipe=tiny_grpo_lora")


@pytest.fixture(scope="module")
def rloo(tmp_path_factory, rm):
    return train(tmp_path_factory, "rloo", "recipe=tiny_grpo_lora", "stage=rloo", "stage.reward_funcs=[match]",
                 f"stage.reward_model={rm}", "train.learning_rate=1e-2", "train.max_steps=4")


def test_rm_after_sft_learns_to_rank_chosen_above_rejected(rm, sft):
    s = summary(rm)
    assert (s["stage"], s["world_size"], s["steps"]) == ("rm", 2, 16)
    accuracy = logged(rm, "accuracy")
    assert accuracy[0] <= 0.5 and accuracy[-1] == 1.0 and s["metrics"]["accuracy"]["last"] == 1.0
    assert s["metrics"]["margin"]["last"] > s["metrics"]["margin"]["first"] + 1.0
    assert s["reward_std"] > 0 and math.isfinite(s["reward_mean"])  # what ppo_score_norm standardises with
    config = json.loads((rm / "final/adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    assert f"lora: merged adapter {sft}/final into the base" in (rm / "logs/rank0.log").read_text()


def test_dpo_after_sft_raises_margins_and_accuracy(dpo, sft):
    s = summary(dpo)
    assert (s["stage"], s["world_size"], s["steps"]) == ("dpo", 2, 16)
    margins, accuracy = logged(dpo, "rewards/margins"), logged(dpo, "rewards/accuracies")
    assert margins[0] == 0.0 and margins[-1] > 0.5 and margins[-1] > max(margins[:2])
    assert accuracy[0] <= 0.5 and accuracy[-1] == 1.0
    assert s["metrics"]["rewards/chosen"]["last"] > s["metrics"]["rewards/rejected"]["last"]
    log = (dpo / "logs/rank0.log").read_text()
    assert f"continuing to train adapter {sft}/final" in log
    # rank 0 alone reports; TensorBoard gets the stage's metrics
    events = list((dpo / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(events) == 1 and b"train/rewards/margins" in events[0].read_bytes()
    assert (dpo / "final/adapter_model.safetensors").is_file()
    assert {"training_loss.png", "rewards_margins.png", "rewards_accuracies.png"} <= {p.name for p in dpo.glob("*.png")}


def test_kto_full_fine_tuning_separates_desirable_from_undesirable(kto):
    s = summary(kto)
    assert (s["stage"], s["adapter"], s["steps"]) == ("kto", "full", 16)
    assert s["trainable_params"] == s["total_params"]
    chosen, rejected = s["metrics"]["rewards/chosen"], s["metrics"]["rewards/rejected"]
    assert chosen["last"] > chosen["first"] and rejected["last"] < rejected["first"]
    assert logged(kto, "kl") and (kto / "final/model.safetensors").is_file()


def test_ppo_after_sft_and_rm_completes_updates_with_finite_kl(ppo):
    s = summary(ppo)
    assert (s["stage"], s["world_size"], s["steps"]) == ("ppo", 2, 4)
    kl = logged(ppo, "objective/kl")
    assert len(kl) == 4 and all(math.isfinite(k) for k in kl)
    assert all(math.isfinite(x) for x in logged(ppo, "objective/scores"))
    kl_coef = logged(ppo, "kl_coef")  # adaptive: kl below the target of 0.5 lowers it from TRL's 0.05
    assert len(kl_coef) == 4 and kl_coef[-1] < kl_coef[0] < 0.05
    log = (ppo / "logs/rank0.log").read_text()
    assert "ppo_score_norm: scores standardised" in log and "continuing to train adapter" in log
    assert (ppo / "final/adapter_model.safetensors").is_file() and (ppo / "logs/rank1.log").is_file()


def test_grpo_with_a_dense_reward_raises_the_mean_reward(grpo):
    s = summary(grpo)
    assert (s["stage"], s["world_size"], s["steps"]) == ("grpo", 2, 10)
    reward = logged(grpo, "reward")
    assert len(reward) == 10 and reward[-1] > reward[0] + 0.3
    assert logged(grpo, "rewards/digit_ratio/mean") == reward  # the only reward function


def test_rloo_sums_a_reward_function_and_an_rm_run(rloo):
    s = summary(rloo)
    assert (s["stage"], s["steps"]) == ("rloo", 4)
    last = rows(rloo)[-1]
    # TRL names a reward model after its base model
    assert {"rewards/match/mean", "rewards/tiny_llama/mean", "reward", "kl"} <= set(last)
    assert all(math.isfinite(r["reward"]) for r in rows(rloo))


def test_a_dpo_run_chats_and_an_rm_run_exports_but_does_not_chat(dpo, rm, tmp_path):
    r = run_module("launcher.chat", str(dpo), "--prompt", "Please explain how rain forms.", "--temperature", "0",
                   "--max_new_tokens", "8")
    assert r.returncode == 0 and r.stdout, r.stderr[-3000:]  # 8 tokens (the tiny model writes newlines)
    r = run_module("launcher.chat", str(rm), "--prompt", "hi")
    assert r.returncode == 2 and "is a reward model (stage=rm)" in r.stderr and "Traceback" not in r.stderr
    r = run_module("launcher.export", str(rm), "--export_dir", str(tmp_path / "rm"))
    assert r.returncode == 0, r.stderr[-3000:]
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tmp_path / "rm")
    assert config.architectures == ["LlamaForSequenceClassification"] and config.num_labels == 1
