"""Every adapter for real: 2 gloo ranks train the tiny model with full, freeze, LoRA (all targets, rsLoRA,
continued) and P-Tuning v2; then launch-export and launch-chat read the run dirs. One run per adapter,
shared by its assertions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.support import run_launch, run_module

pytestmark = pytest.mark.integration

# the tiny Llama: 2 layers, hidden 64, k/v project to 32 (2 kv heads), MLP 176; 190,528 parameters
LAYERS, HIDDEN, KV, MLP, TOTAL = 2, 64, 32, 176, 190_528
PROMPT = "Translate the color into French.\nwhite"


def train(tmp_path_factory, name: str, *args: str) -> Path:
    run = tmp_path_factory.mktemp(name) / "run"
    r = run_launch("device=cpu", "gpus=2", f"output_dir={run}", "train.logging_steps=2", "train.save_steps=1000",
                   *args, cwd=run.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return run


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def chat(run: Path, *args: str):
    return run_module("launcher.chat", str(run), "--prompt", PROMPT, "--temperature", "0", "--max_new_tokens", "16",
                      "--show_prompt", *args)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()


@pytest.fixture(scope="module")
def lora(tmp_path_factory, tiny_model):
    return train(tmp_path_factory, "lora", "recipe=tiny_sft_lora", "adapter.lora_target=all",
                 "adapter.use_rslora=true", "data.template=alpaca", "train.max_steps=20")


@pytest.fixture(scope="module")
def full(tmp_path_factory, tiny_model):
    return train(tmp_path_factory, "full", "recipe=tiny_sft_lora", "adapter=full", "precision=pure_bf16",
                 "train.learning_rate=3e-3", "train.max_steps=30")


@pytest.fixture(scope="module")
def freeze(tmp_path_factory, tiny_model):
    return train(tmp_path_factory, "freeze", "recipe=tiny_sft_lora", "adapter=freeze",
                 "adapter.freeze_trainable_layers=1", "adapter.freeze_trainable_modules=mlp",
                 "adapter.freeze_extra_modules=norm", "train.gradient_checkpointing=true",
                 "train.learning_rate=3e-3", "train.max_steps=12")


@pytest.fixture(scope="module")
def prefix(tmp_path_factory, tiny_model):
    return train(tmp_path_factory, "prefix", "recipe=tiny_sft_prefix", "precision=bf16", "train.max_steps=20")


def test_lora_all_targets_trains_with_rslora(lora):
    s = summary(lora)
    assert (s["adapter"], s["world_size"], s["steps"]) == ("lora", 2, 20)
    assert losses(lora)[-1] < losses(lora)[0] - 0.2
    # r x (in + out) for every linear layer but the head: q, k, v, o, gate, up, down
    per_layer = 8 * ((HIDDEN + HIDDEN) + 2 * (HIDDEN + KV) + (HIDDEN + HIDDEN) + 3 * (HIDDEN + MLP))
    assert s["trainable_params"] == LAYERS * per_layer == 18_688
    assert s["total_params"] == TOTAL + s["trainable_params"]
    config = json.loads((lora / "final/adapter_config.json").read_text())
    assert config["use_rslora"] is True and config["r"] == 8
    assert {t.rsplit(".", 1)[-1] for t in config["target_modules"]} == {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                         "gate_proj", "up_proj", "down_proj"}
    assert f"trainable params: 18688 / {TOTAL + 18_688}" in (lora / "logs/rank0.log").read_text()


def test_lora_continues_from_its_adapter(lora, tmp_path_factory):
    run = train(tmp_path_factory, "lora_continue", "recipe=tiny_sft_lora", "data.template=alpaca",
                "train.max_steps=6", f"adapter.adapter_name_or_path={lora}/final")
    first = losses(run)[0]
    assert first < losses(lora)[0] - 0.2  # starts where the first run ended, not from scratch
    assert abs(first - losses(lora)[-1]) < 0.3
    assert summary(run)["trainable_params"] == summary(lora)["trainable_params"]
    assert json.loads((run / "final/adapter_config.json").read_text())["use_rslora"] is True
    assert f"continuing to train adapter {lora}/final" in (run / "logs/rank0.log").read_text()


def test_full_pure_bf16_trains_every_parameter_in_bf16(full):
    s = summary(full)
    assert (s["adapter"], s["precision"]) == ("full", "pure_bf16")
    assert s["trainable_params"] == s["total_params"] == TOTAL
    assert losses(full)[-1] < losses(full)[0] - 1.0
    weights = load_file(full / "final/model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}


def test_freeze_changes_only_the_chosen_layer_modules_and_norm(freeze, tiny_model):
    s = summary(freeze)
    assert s["trainable_params"] == 3 * HIDDEN * MLP + HIDDEN  # layer 1's mlp + the final norm
    assert losses(freeze)[-1] < losses(freeze)[0]
    before, after = load_file(tiny_model / "model.safetensors"), load_file(freeze / "final/model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
                       "model.layers.1.mlp.down_proj.weight", "model.norm.weight"}


def test_prefix_tuning_trains_and_saves_a_peft_prefix(prefix):
    s = summary(prefix)
    assert (s["adapter"], s["precision"], s["world_size"]) == ("prefix", "bf16", 2)
    assert losses(prefix)[-1] < losses(prefix)[0] - 0.1
    # reparameterised: Embedding(16, 32) -> Linear(32, 64) -> tanh -> Linear(64, 2 layers x (k, v) x 32)
    kv = LAYERS * 2 * KV
    assert s["trainable_params"] == 16 * KV + (KV * HIDDEN + HIDDEN) + (HIDDEN * kv + kv) == 10_944
    config = json.loads((prefix / "final/adapter_config.json").read_text())
    assert (config["peft_type"], config["num_virtual_tokens"], config["prefix_projection"]) == \
        ("PREFIX_TUNING", 16, True)
    log = (prefix / "logs/rank0.log").read_text()
    assert "trainable params: 10944 /" in log and "past_key_values` is deprecated" not in log


def test_export_merges_lora_into_a_plain_model_with_the_same_logits(lora, tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    r = run_module("launcher.export", str(lora), "--export_dir", str(out), "--export_size", "0.0003",
                   "--export_dtype", "fp32")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    assert (out / "tokenizer.json").is_file() and not (out / "adapter_config.json").exists()
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), lora / "final").eval()
    torch.testing.assert_close(logits(merged, ids), logits(adapted, ids), atol=1e-4, rtol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    assert (logits(merged, ids) - logits(base, ids)).abs().max() > 1e-3


def test_export_saves_a_prefix_in_peft_format(prefix, tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from launcher.worker.adapters.prefix import load

    out = tmp_path / "prefix"
    r = run_module("launcher.export", str(prefix), "--export_dir", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("model*.safetensors"))
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    exported = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out).eval()
    trained = load(AutoModelForCausalLM.from_pretrained(tiny_model), prefix / "final").eval()
    torch.testing.assert_close(logits(exported, ids), logits(trained, ids))
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    assert (logits(exported, ids) - logits(base, ids)).abs().max() > 1e-3


def test_export_of_a_full_run_keeps_its_dtype(full, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    assert run_module("launcher.export", str(full), "--export_dir", str(out)).returncode == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    trained = load_file(full / "final/model.safetensors")
    torch.testing.assert_close(model.state_dict()["model.norm.weight"], trained["model.norm.weight"])


def test_chat_answers_with_the_runs_template(full):
    r = chat(full)
    assert r.returncode == 0, r.stderr[-3000:]
    # the tokenizer's own chat template (template=auto), as in training
    assert f"<|user|>\n{PROMPT}\n<|assistant|>\n" in r.stderr
    assert len(r.stdout.split()) >= 2  # the trained model answers in words


def test_chat_renders_a_named_template(lora):
    r = chat(lora)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"### Instruction:\n{PROMPT}\n\n### Response:\n" in r.stderr


def test_chat_with_a_prefix_run(prefix):
    r = chat(prefix)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"<|user|>\n{PROMPT}\n<|assistant|>\n" in r.stderr


def test_export_and_chat_refuse_a_bad_run_dir(lora, tmp_path):
    r = run_module("launcher.chat", str(tmp_path), "--prompt", "hi")
    assert r.returncode == 2 and "not a run dir" in r.stderr and "Traceback" not in r.stderr
    r = run_module("launcher.export", str(lora), "--checkpoint", "7")
    assert r.returncode == 2 and "checkpoint-7 does not exist" in r.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    r = run_module("launcher.export", str(lora), "--export_dir", str(tmp_path / "taken"))
    assert r.returncode == 2 and "not empty" in r.stderr
