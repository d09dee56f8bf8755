"""A local model directory: its files, and the module names adapter keys refer to, checked on the meta device."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import partial

import pytest

from launcher.facts import gather_facts, scan_model_dir
from launcher.meta_model import cache_dir
from tests import support
from tests.support import run_launch


# this machine's real facts: the model directory's files and modules are what is checked
errors = partial(support.errors, base=("recipe=tiny_sft_lora", "device=cpu"), gather=gather_facts)


@pytest.fixture
def partial_model(tiny_model, tmp_path):
    """A copy of the tiny model without tokenizer and weights."""
    d = tmp_path / "partial_model"
    shutil.copytree(tiny_model, d)
    for name in ("tokenizer.json", "model.safetensors"):
        (d / name).unlink()
    return d


def test_the_tiny_model_has_every_file(tiny_model):
    d = scan_model_dir(str(tiny_model))
    assert d.config and "tokenizer.json" in d.tokenizer and "model.safetensors" in d.weights


def test_each_missing_file_is_named(partial_model):
    (partial_model / "config.json").unlink()
    fixes = {p.fix.split(" (")[0].split(";")[0] for p in errors(f"model.model_name_or_path={partial_model}")}
    assert fixes == {"has no config.json", "has no tokenizer files", "has no weights"}


def test_missing_weight_shards_are_named(tiny_model, tmp_path):
    d = tmp_path / "sharded"
    shutil.copytree(tiny_model, d)
    (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    [e] = errors(f"model.model_name_or_path={d}")
    assert "model-00002-of-00002.safetensors" in e.fix and "model-00001" not in e.fix


def test_unknown_lora_targets_name_the_bad_and_the_available(tiny_model):
    [e] = errors("adapter.lora_target='q_proj,qkv_proj,o_proj'")
    assert e.key == "adapter.lora_target" and e.value == "qkv_proj"
    assert "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj" in e.fix


def test_a_lora_target_that_is_not_a_layer_names_the_layers_inside_it(tiny_model):
    [e] = errors("adapter.lora_target=mlp")
    assert e.value == "mlp" and "gate_proj,up_proj,down_proj" in e.fix


def test_qualified_lora_targets_match_as_peft_matches_them(tiny_model):
    assert errors("adapter.lora_target='self_attn.q_proj,mlp.down_proj'") == []
    assert errors("adapter.lora_target=all") == []


def test_additional_target_must_exist(tiny_model):
    [e] = errors("adapter.additional_target='lm_head,score'")
    assert e.key == "adapter.additional_target" and e.value == "score" and "lm_head" in e.fix


def test_freeze_modules_and_layers_are_checked_against_the_model(tiny_model):
    found = {(e.key, e.value) for e in errors("adapter=freeze", "adapter.freeze_trainable_layers=3",
                                             "adapter.freeze_trainable_modules='mlp,attention'",
                                             "adapter.freeze_extra_modules='embed_tokens,final_norm'")}
    assert found == {("adapter.freeze_trainable_layers", 3), ("adapter.freeze_trainable_modules", "attention"),
                     ("adapter.freeze_extra_modules", "final_norm")}
    assert errors("adapter=freeze", "adapter.freeze_trainable_modules='mlp,self_attn'",
                  "adapter.freeze_extra_modules='norm,lm_head'") == []


def test_module_names_are_cached_and_a_cached_dry_run_imports_no_torch(tiny_model):
    errors("adapter.lora_target=q_proj")  # builds (or finds) the cache entry
    assert list(cache_dir().glob("*.json"))
    code = ("import sys; from tests.support import compose; from launcher.facts import gather_facts; "
            "cfg = compose('recipe=tiny_sft_lora', 'device=cpu', 'adapter.lora_target=q_proj'); "
            "f = gather_facts(cfg); assert f.model_modules.modules and f.model_modules.error is None; "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr


def test_cli_refuses_a_model_dir_without_tokenizer_and_weights(partial_model, tmp_path):
    out = tmp_path / "run"
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", f"model.model_name_or_path={partial_model}",
                   f"output_dir={out}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "has no tokenizer files" in r.stderr and "has no weights" in r.stderr and "2 problem(s)" in r.stderr
    assert not out.exists()


def test_cli_refuses_unknown_lora_targets(tiny_model, tmp_path):
    out = tmp_path / "run"
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "adapter.lora_target='q_proj,wq'", f"output_dir={out}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "adapter.lora_target=wq: no such module" in r.stderr and not out.exists()
