"""The stages' pieces, in process on the tiny model: the reward model's head, TRL's configs built from the
worker's training arguments, score standardisation, adaptive KL, the generation tokenizer, metric rows."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import torch

from launcher.worker.callbacks import MetricsCallback
from launcher.worker.model import count_parameters, load_model, load_tokenizer
from launcher.worker.stages.online import AdaptiveKLCallback, generation_tokenizer, standardise_scores
from tests.support import compose, worker_training_kwargs

HIDDEN = 64


def test_rm_model_is_a_one_output_classifier_whose_new_head_trains_with_lora(tiny_model):
    model = load_model(compose("recipe=tiny_rm", "device=cpu"), "fp32")
    assert type(model.base_model.model).__name__ == "LlamaForSequenceClassification"
    assert model.config.num_labels == 1
    head = [n for n, p in model.named_parameters() if p.requires_grad and "score" in n]
    assert head == ["base_model.model.score.modules_to_save.default.weight"]  # peft saves it with the adapter
    lora = count_parameters(model)[0] - HIDDEN
    assert lora == 2 * 8 * (64 + 64 + 2 * (64 + 32) + 64 + 64 + 3 * (64 + 176))  # every linear layer, r 8


def test_rm_head_trains_with_freeze_too(tiny_model):
    model = load_model(compose("recipe=tiny_rm", "device=cpu", "adapter=freeze", "adapter.freeze_trainable_layers=1"),
                       "fp32")
    assert model.score.weight.requires_grad


def test_trl_configs_take_the_worker_arguments_and_override_trl_defaults(tmp_path):
    from trl import DPOConfig, GRPOConfig, RewardConfig
    from trl.experimental.ppo import PPOConfig

    kwargs = worker_training_kwargs(tmp_path, "recipe=tiny_dpo_lora")
    for config in (DPOConfig, RewardConfig, GRPOConfig, PPOConfig):
        args = config(**kwargs, **({"num_generations": 2} if config is GRPOConfig else {}))
        # TRL's own defaults are bf16=True and gradient_checkpointing=True
        assert (args.bf16, args.fp16, args.gradient_checkpointing) == (False, False, False), config
        assert (args.use_cpu, args.seed, args.learning_rate, args.report_to) == (True, 42, 5e-3, []), config
    assert DPOConfig(**worker_training_kwargs(tmp_path, "recipe=tiny_dpo_lora",
                                       "train.gradient_checkpointing=true")).gradient_checkpointing is True


@torch.no_grad()
def test_score_norm_folds_the_rm_runs_statistics_into_the_head(tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).eval()
    ids = torch.tensor([[1, 20, 30, 40], [1, 50, 60, 70]])
    raw = model(input_ids=ids).logits
    (tmp_path / "config.yaml").write_text("stage: {name: rm}\n")
    (tmp_path / "summary.json").write_text(json.dumps({"reward_mean": 0.5, "reward_std": 2.0}))
    standardise_scores(model, str(tmp_path / "final"))
    torch.testing.assert_close(model(input_ids=ids).logits, (raw - 0.5) / 2.0)


def test_adaptive_kl_moves_kl_coef_towards_the_target():
    callback = AdaptiveKLCallback(target=1.0, episodes_per_update=100, horizon=1000)
    args = SimpleNamespace(kl_coef=0.05)
    logs = {"objective/kl": 3.0}  # far above the target: the error is clipped to +0.2
    callback.on_log(args, None, None, logs=logs)
    assert args.kl_coef == pytest.approx(0.05 * 1.02) and logs["kl_coef"] == args.kl_coef
    callback.on_log(args, None, None, logs={"objective/kl": 0.5})  # below: -0.5 clipped to -0.2
    assert args.kl_coef == pytest.approx(0.05 * 1.02 * 0.98)
    callback.on_log(args, None, None, logs={"loss": 1.0})
    assert args.kl_coef == pytest.approx(0.05 * 1.02 * 0.98)


def test_generation_tokenizer_pads_left_and_adds_no_bos(tiny_model):
    tok = load_tokenizer(compose("recipe=tiny_sft_lora", "device=cpu"))
    tok.add_bos_token = True  # as Llama's tokenizers do
    assert tok("hi")["input_ids"][0] == tok.bos_token_id
    gen = generation_tokenizer(tok)
    assert gen.padding_side == "left" and tok.padding_side == "right"
    assert gen("<s>hi")["input_ids"] == tok("<s>hi", add_special_tokens=False)["input_ids"]  # one bos, the prompt's
    assert tok("hi")["input_ids"][0] == tok.bos_token_id  # the run's own tokenizer is unchanged


def test_metrics_rows_keep_every_number_the_trainer_logs(tmp_path):
    callback = MetricsCallback(tmp_path / "metrics.jsonl")
    state = SimpleNamespace(is_world_process_zero=True, global_step=4, epoch=0.5, num_input_tokens_seen=0)
    callback.on_log(None, state, None, logs={"loss": 0.5, "learning_rate": 1e-3, "rewards/margins": 0.3,
                                             "epoch": 0.5, "note": "text"})
    callback.on_log(None, state, None, logs={"objective/kl": 0.01, "lr": 1e-5})  # PPO names its own
    callback.on_log(None, state, None, logs={"eval_loss": 0.4, "eval_rewards/accuracies": 1.0, "epoch": 0.5})
    callback.on_log(None, state, None, logs={"train_loss": 0.45, "train_runtime": 3.0})  # the end: summary.json's
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(abs(row.pop("time") - time.time()) < 60 for row in rows)  # summary.json splits attempts by it
    assert rows == [{"step": 4, "epoch": 0.5, "lr": 1e-3, "loss": 0.5, "rewards/margins": 0.3},
                    {"step": 4, "epoch": 0.5, "lr": 1e-5, "objective/kl": 0.01},
                    {"step": 4, "epoch": 0.5, "eval_loss": 0.4, "eval_rewards/accuracies": 1.0}]
    assert [{k: v for k, v in h.items() if k != "time"} for h in callback.history] == rows[:2]


def test_pt_and_sft_import_neither_trl_nor_wandb_nor_deepspeed():
    """A stage's module loads by name: plain sft does not pay for TRL (and the wandb it imports); a run
    without DeepSpeed does not import it through accelerate either."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from launcher.worker.stages import stage_of\n"
            "from launcher.worker.train import without_deepspeed\n"
            "stage_of('sft'), stage_of('pt'), without_deepspeed()\n"
            "import accelerate.utils.other, torch\n"
            "accelerate.utils.other.extract_model_from_parallel(torch.nn.Linear(1, 1))\n"
            "print(sorted(m for m in ('trl', 'wandb', 'deepspeed') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
