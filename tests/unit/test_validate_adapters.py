"""validate() for adapters and precision: each mistake names key, value and fix; the CLI exits 2."""
from __future__ import annotations

import json
import re
import tomllib
from importlib import metadata

import pytest

from launcher import PROJECT_ROOT
from launcher.facts import GpuFacts, parse_gpu_query, read_adapter_type, read_model_config
from tests.support import compose, only_error, problems, run_launch

V100 = (GpuFacts("Tesla V100-SXM2-32GB", 7.0),)
A100 = (GpuFacts("NVIDIA A100-SXM4-80GB", 8.0),)
GPU_STACK = {"transformers": "5.24.0", "peft": "0.21.2", "bitsandbytes": "0.50.2", "flash-attn": "2.8.3"}


@pytest.mark.parametrize("adapter", ["full", "freeze", "lora", "prefix"])
def test_every_adapter_validates_on_cpu(adapter):
    assert problems("recipe=tiny_sft_lora", "device=cpu", f"adapter={adapter}") == []


@pytest.mark.parametrize("adapter", ["full", "freeze", "lora", "qlora", "prefix"])
@pytest.mark.parametrize("precision", ["auto", "fp32", "fp16", "bf16", "pure_bf16"])
def test_every_adapter_and_precision_validate_on_an_ampere_gpu(adapter, precision):
    # the llama2 recipe checkpoints activations, which peft's prefix tuning cannot
    checkpointing = f"train.gradient_checkpointing={adapter != 'prefix'}"
    assert problems("recipe=llama2_sft_lora", "gpus=2", f"adapter={adapter}", f"precision={precision}",
                    checkpointing, gpus=A100 * 2, packages=GPU_STACK) == []


def test_qlora_on_cpu_says_it_needs_cuda_and_what_to_use():
    e = only_error("recipe=tiny_sft_lora", "device=cpu", "adapter=qlora")
    assert (e.key, e.value.value) == ("adapter", "qlora")
    assert "needs a CUDA GPU" in e.fix and "adapter=lora" in e.fix


def test_quantized_lora_on_cpu_says_drop_the_quantization():
    e = only_error("recipe=tiny_sft_lora", "device=cpu", "adapter.quantization_bit=4")
    assert e.key == "adapter.quantization_bit" and "quantization_bit=null" in e.fix


def test_qlora_without_bitsandbytes_is_an_error_and_a_warning_in_dry_run():
    stack = {**GPU_STACK, "bitsandbytes": None}
    e = only_error("recipe=llama2_sft_lora", "adapter=qlora", gpus=A100, packages=stack)
    assert "pip install bitsandbytes" in e.fix
    (w,) = problems("recipe=llama2_sft_lora", "adapter=qlora", "dry_run=true", gpus=A100, packages=stack)
    assert not w.error


@pytest.mark.parametrize("overrides, key, needle", [
    (["adapter=qlora", "adapter.quantization_bit=3"], "adapter.quantization_bit", "4 or 8"),
    (["adapter=qlora", "adapter.quantization_bit=null"], "adapter.quantization_bit", "set 4 or 8"),
    (["adapter=full", "adapter.quantization_bit=4"], "adapter.quantization_bit", "cannot be quantized"),
    (["adapter=qlora", "adapter.adapter_name_or_path='/a,/b'"], "adapter.adapter_name_or_path", "quantized"),
])
def test_quantization_mistakes(overrides, key, needle):
    adapters = {"/a": "LORA", "/b": "LORA"}
    e = only_error("recipe=llama2_sft_lora", *overrides, gpus=A100, packages=GPU_STACK, adapters=adapters)
    assert e.key == key and needle in e.fix


def test_quantization_type_is_typed_at_compose():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose("adapter=qlora", "adapter.quantization_type=int3")


@pytest.mark.parametrize("precision", ["bf16", "pure_bf16"])
def test_bf16_on_a_pre_ampere_gpu_names_the_gpu_and_the_fix(precision):
    e = only_error("recipe=llama2_sft_lora", f"precision={precision}", gpus=V100)
    assert e.key == "precision" and "Tesla V100" in e.fix and "compute capability 7.0" in e.fix
    assert "precision=fp16" in e.fix


def test_auto_and_fp16_are_fine_on_a_pre_ampere_gpu():
    for precision in ("auto", "fp16"):
        assert problems("recipe=llama2_sft_lora", f"precision={precision}", gpus=V100) == []


def test_bf16_is_not_judged_without_gpu_facts():
    # a login node: no nvidia-smi, so nothing is known and nothing is refused
    assert problems("recipe=llama2_sft_lora", "precision=bf16", "dry_run=true", gpus=()) == []


@pytest.mark.parametrize("overrides, facts_kw, needle", [
    (["device=cpu", "recipe=tiny_sft_lora"], {}, "CUDA GPUs only"),
    (["recipe=llama2_sft_lora", "precision=fp16"], {"gpus": V100, "packages": GPU_STACK}, "Ampere"),
    (["recipe=llama2_sft_lora", "precision=fp32"], {"gpus": A100, "packages": GPU_STACK}, "fp16/bf16"),
    (["recipe=llama2_sft_lora"], {"gpus": A100, "packages": {**GPU_STACK, "flash-attn": None}}, "pip install flash-attn"),
])
def test_flash_attention_2_is_checked(overrides, facts_kw, needle):
    e = only_error(*overrides, "model.attn=flash_attention_2", **facts_kw)
    assert e.key == "model.attn" and needle in e.fix and "model.attn=sdpa" in e.fix


def test_flash_attention_2_on_an_ampere_gpu_with_flash_attn_is_fine():
    assert problems("recipe=llama2_sft_lora", "model.attn=flash_attention_2", gpus=A100, packages=GPU_STACK) == []


def test_rope_scaling():
    e = only_error("recipe=tiny_sft_lora", "device=cpu", "model.rope_scaling=linear", "model.rope_factor=0.5")
    assert e.key == "model.rope_factor"
    (w,) = problems("recipe=tiny_sft_lora", "device=cpu", "model.rope_scaling=linear",
                    model_config={"max_position_embeddings": 1024})
    assert not w.error and "not scaled" in w.fix
    assert problems("recipe=tiny_sft_lora", "device=cpu", "model.rope_scaling=dynamic", "data.cutoff_len=4096",
                    model_config={"max_position_embeddings": 1024}) == []


@pytest.mark.parametrize("layers, ok", [(0, False), (2, True), (-2, True), (3, False), (-3, False)])
def test_freeze_trainable_layers_within_the_model(layers, ok):
    found = [p for p in problems("recipe=tiny_sft_lora", "device=cpu", "adapter=freeze",
                                 f"adapter.freeze_trainable_layers={layers}",
                                 model_config={"num_hidden_layers": 2}) if p.error]
    assert (found == []) == ok
    if not ok:
        assert found[0].key == "adapter.freeze_trainable_layers" and found[0].value == layers


def test_prefix_checks():
    e = only_error("recipe=tiny_sft_lora", "device=cpu", "adapter=prefix", "train.gradient_checkpointing=true")
    assert e.key == "train.gradient_checkpointing" and "gradient_checkpointing=false" in e.fix
    e = only_error("recipe=tiny_sft_lora", "device=cpu", "adapter=prefix", "adapter.pre_seq_len=0")
    assert e.key == "adapter.pre_seq_len"


def test_prefix_needs_transformers_below_5_40_as_pyproject_pins():
    e = only_error("recipe=tiny_sft_lora", "device=cpu", "adapter=prefix",
                   packages={"transformers": "5.40.0.dev0"})
    assert e.key == "adapter" and "transformers<5.40" in e.fix
    assert problems("recipe=tiny_sft_lora", "device=cpu", "adapter=prefix", packages={"transformers": "5.39.2"}) == []
    pins = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.fullmatch(r"transformers>=[\d.]+,<5\.40", p) for p in pins)
    major, minor = map(int, metadata.version("transformers").split(".")[:2])
    assert (major, minor) < (5, 40)


@pytest.mark.parametrize("adapter, paths, types, needle", [
    ("lora", "/runs/a/final", {"/runs/a/final": None}, "no adapter_config.json"),
    ("lora", "/runs/a/final", {"/runs/a/final": "PREFIX_TUNING"}, "PREFIX_TUNING adapter"),
    ("prefix", "/p1,/p2", {"/p1": "PREFIX_TUNING", "/p2": "PREFIX_TUNING"}, "one prefix adapter"),
    ("full", "/runs/a/final", {"/runs/a/final": "LORA"}, "launch-export"),
])
def test_adapter_name_or_path(adapter, paths, types, needle):
    e = only_error("recipe=tiny_sft_lora", "device=cpu", f"adapter={adapter}",
                   f"adapter.adapter_name_or_path='{paths}'", adapters=types)
    assert e.key == "adapter.adapter_name_or_path" and needle in e.fix


def test_continuing_from_two_lora_adapters_is_fine():
    assert problems("recipe=tiny_sft_lora", "device=cpu", "adapter.adapter_name_or_path='/a,/b'",
                    adapters={"/a": "LORA", "/b": "LORA"}) == []


@pytest.mark.parametrize("args, key", [
    (["adapter=qlora"], "adapter=qlora"),
    (["precision=fp16"], "precision=fp16"),
    (["adapter=prefix", "train.gradient_checkpointing=true"], "train.gradient_checkpointing=True"),
    (["model.attn=flash_attention_2"], "model.attn=flash_attention_2"),
    (["adapter.adapter_name_or_path=/nonexistent/adapter"], "adapter.adapter_name_or_path=/nonexistent/adapter"),
])
def test_cli_exits_2_on_cpu_mistakes(tmp_path, args, key):
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", *args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"error: {key}:" in r.stderr and "nothing was started" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_gpu_query_is_parsed_and_filtered_by_cuda_visible_devices():
    out = "0, NVIDIA A100-SXM4-80GB, 8.0\n1, Tesla V100-SXM2-32GB, 7.0\n"
    assert parse_gpu_query(out) == (GpuFacts("NVIDIA A100-SXM4-80GB", 8.0), GpuFacts("Tesla V100-SXM2-32GB", 7.0))
    assert parse_gpu_query(out, "1") == (GpuFacts("Tesla V100-SXM2-32GB", 7.0),)
    assert parse_gpu_query(out, "GPU-8f3c") == parse_gpu_query(out)
    assert parse_gpu_query("garbage\n") == ()


def test_model_config_and_adapter_type_are_read_from_disk(tmp_path, tiny_model):
    assert read_model_config(str(tiny_model)) == {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
                                                  "max_position_embeddings": 1024}
    assert read_model_config(str(tmp_path)) == {}
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    assert read_adapter_type(str(tmp_path)) == "LORA"
    assert read_adapter_type(str(tmp_path / "nope")) is None
