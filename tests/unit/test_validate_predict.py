"""validate() for predict with generation, the generation keys, ChatGLM2's lengths and remote code: pure, on
composed configs and hand-made Facts."""
from __future__ import annotations

import json
from functools import partial

import pytest

from launcher.facts import ModelDirFacts, scan_model_dir
from tests import support
from tests.support import compose, run_launch

ADGEN = ("recipe=tiny_adgen_ptuning",)
BASE = ("device=cpu", "gpus=2")
problems = partial(support.problems, base=BASE)
errors = partial(support.errors, base=BASE)
warnings = partial(support.warnings, base=BASE)
only_error = partial(support.only_error, base=BASE)


def test_tiny_adgen_recipe_validates():
    assert problems(*ADGEN) == []


@pytest.mark.parametrize("stage,why", [("rm", "does not generate"), ("dpo", "chosen and a rejected"),
                                       ("kto", "labelled good or bad"), ("ppo", "prompts")])
def test_predict_on_other_stages_is_refused_with_the_reason(stage, why):
    p = next(p for p in errors(f"stage={stage}", "train.do_predict=true", "data.val_size=0.1")
             if p.key == "train.do_predict")
    assert f"stage={stage} cannot predict" in p.fix and why in p.fix and "stage=sft" in p.fix


def test_predict_after_training_needs_eval_rows():
    p = only_error("train.do_predict=true")
    assert p.key == "train.do_predict" and "data.eval_dataset" in p.fix and "data.val_size" in p.fix
    assert errors("train.do_predict=true", "data.val_size=0.1") == []


def test_nothing_to_do():
    p = only_error("train.do_train=false")
    assert p.key == "train.do_train" and "train.do_predict=true" in p.fix


def test_predict_only_prefix_needs_its_adapter_and_lora_warns():
    p = only_error(*ADGEN, "train.do_train=false")
    assert p.key == "adapter.adapter_name_or_path" and "RUN_DIR/final" in p.fix
    w = [p for p in warnings("train.do_train=false", "train.do_predict=true")
         if p.key == "adapter.adapter_name_or_path"]
    assert w and "base model predicts" in w[0].fix


def test_predict_only_refuses_zero():
    p = next(p for p in errors("train.do_train=false", "train.do_predict=true", "zero=3") if p.key == "zero")
    assert "zero=none" in p.fix


def test_predict_refuses_packing():
    p = next(p for p in errors("train.do_predict=true", "data.val_size=0.1", "data.packing=true")
             if "packing joins rows" in p.fix)
    assert p.key == "data.packing" and "data.packing=false" in p.fix


def test_beams_with_sampling_conflict():
    p = only_error(*ADGEN, "generation.num_beams=4", "generation.do_sample=true")
    assert p.key == "generation.num_beams" and "do_sample=false" in p.fix and "num_beams=1" in p.fix
    assert errors(*ADGEN, "generation.num_beams=4") == []


def test_unused_generation_keys_warn():
    w = warnings(*ADGEN, "generation.temperature=0.5", "generation.length_penalty=2.0")
    assert {p.key for p in w} == {"generation.temperature", "generation.length_penalty"}
    assert "do_sample=true" in w[0].fix or "do_sample=true" in w[1].fix
    w = warnings("generation.max_new_tokens=8")
    assert [p.key for p in w] == ["generation.max_new_tokens"] and "train.do_predict=true" in w[0].fix


def test_generation_ranges():
    p = only_error(*ADGEN, "generation.top_p=1.5")
    assert p.key == "generation.top_p"
    assert only_error(*ADGEN, "generation.max_new_tokens=0").key == "generation.max_new_tokens"


def test_source_and_target_lengths_against_cutoff_len():
    w = warnings(*ADGEN, "data.cutoff_len=100")
    assert [p.key for p in w] == ["data.cutoff_len"] and "raise data.cutoff_len to 128" in w[0].fix
    w = warnings("stage=dpo", "data=dpo_demo", "data.max_source_length=64")
    assert any(p.key == "data.max_source_length" and "only stage=sft" in p.fix for p in w)


def chatglm_dir(tmp_path):
    config = {"model_type": "chatglm", "auto_map": {
        "AutoConfig": "configuration_chatglm.ChatGLMConfig",
        "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_model_dir_facts_name_the_remote_code(tmp_path):
    assert scan_model_dir(str(chatglm_dir(tmp_path))).remote_code == ("configuration_chatglm.py",
                                                                       "modeling_chatglm.py")


def test_chatglm_remote_code_on_new_transformers(tmp_path):
    d = ModelDirFacts(config=True, tokenizer=("tokenizer.model",), weights=("pytorch_model.bin",),
                      remote_code=("configuration_chatglm.py", "modeling_chatglm.py"))
    kw = dict(model_dir=d, model_config={"model_type": "chatglm"})
    args = ("model=chatglm2_6b", f"model.model_name_or_path={tmp_path}", "device=cuda", "precision=fp16")
    p = next(p for p in errors(*args, packages={"transformers": "5.25.0"}, **kw)
             if p.key == "model.model_name_or_path")
    assert "modeling_chatglm.py" in p.fix and "transformers 5.25.0" in p.fix
    assert "_extract_past_from_model_output" in p.fix and "4.30-4.41" in p.fix
    assert not [p for p in problems(*args, packages={"transformers": "4.30.2"}, **kw)
                if p.key == "model.model_name_or_path"]


def test_chatglm_hub_id_warns_and_the_recipe_dry_runs():
    ps = [p for p in problems("recipe=chatglm2_ptuning", "device=cuda", packages={"transformers": "5.25.0"})
          if p.key == "model.model_name_or_path"]
    assert [p.error for p in ps] == [False] and "not checked" in ps[0].fix


def test_chatglm2_recipe_reproduces_the_seed():
    cfg = compose("recipe=chatglm2_ptuning")
    assert (cfg.gpus, cfg.adapter.name.value, cfg.adapter.pre_seq_len, cfg.adapter.quantization_bit) == \
        (2, "prefix", 128, 4)
    assert (cfg.train.learning_rate, cfg.train.per_device_train_batch_size, cfg.train.gradient_accumulation_steps,
            cfg.train.max_steps, cfg.train.do_predict) == (2e-2, 1, 16, 3000, True)
    assert (cfg.data.max_source_length, cfg.data.max_target_length, cfg.data.dataset, cfg.data.eval_dataset) == \
        (64, 128, "adgen_train", "adgen_eval")
    assert (cfg.model.model_name_or_path, cfg.model.trust_remote_code, cfg.data.template) == \
        ("THUDM/chatglm2-6b", True, "chatglm2")


def test_cli_refuses_predict_on_an_rm_run_and_starts_nothing(tmp_path):
    r = run_launch("recipe=tiny_rm", "device=cpu", "train.do_predict=true", "data.val_size=0.1",
                   f"output_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 2 and "error: train.do_predict=True: stage=rm cannot predict" in r.stderr
    assert not (tmp_path / "run").exists()
