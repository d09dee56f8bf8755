"""The worker's model building, in process on the tiny model: which parameters train, how many, in which
dtype; peft receives the config's flags; the prefix reaches generate(); prompts render as in training."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from launcher.data.templates import encode, encode_prompt, stop_token_ids
from launcher.worker.adapters.freeze import is_trainable, trainable_layer_ids
from launcher.worker.model import count_parameters, load_base, load_model, load_tokenizer, quantization_kwargs, \
    rope_parameters
from tests.support import compose

# the tiny Llama: 2 layers, hidden 64, 4 heads of 16, 2 kv heads (k/v project to 32), MLP 176
LAYERS, HIDDEN, KV, MLP = 2, 64, 32, 176
LINEARS = {"q_proj": (HIDDEN, HIDDEN), "k_proj": (HIDDEN, KV), "v_proj": (HIDDEN, KV), "o_proj": (HIDDEN, HIDDEN),
           "gate_proj": (HIDDEN, MLP), "up_proj": (HIDDEN, MLP), "down_proj": (MLP, HIDDEN)}


def cfg(*overrides):
    return compose("recipe=tiny_sft_lora", "device=cpu", *overrides)


def trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def lora_count(r: int, modules) -> int:
    return LAYERS * sum(r * (LINEARS[m][0] + LINEARS[m][1]) for m in modules)


@pytest.fixture
def tok(tiny_model):
    return load_tokenizer(cfg())


def test_lora_counts_r_times_in_plus_out_per_targeted_module(tiny_model):
    model = load_model(cfg("adapter.lora_rank=4", "adapter.lora_target='q_proj,k_proj,down_proj'"), "fp32")
    assert count_parameters(model)[0] == lora_count(4, ["q_proj", "k_proj", "down_proj"])


def test_lora_target_all_finds_every_linear_but_the_head(tiny_model):
    base = load_base(cfg(), torch.float32)
    linears = {n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)} - {"lm_head"}
    model = load_model(cfg("adapter.lora_target=all"), "fp32")
    assert set(model.peft_config["default"].target_modules) == linears
    assert len(linears) == LAYERS * len(LINEARS)
    assert count_parameters(model)[0] == lora_count(8, LINEARS)


def test_rslora_dora_and_additional_target_reach_peft(tiny_model):
    model = load_model(cfg("adapter.lora_target=all", "adapter.lora_rank=4", "adapter.lora_alpha=16",
                           "adapter.use_rslora=true", "adapter.use_dora=true", "adapter.additional_target=lm_head"), "fp32")
    pc = model.peft_config["default"]
    assert pc.use_rslora and pc.use_dora and pc.modules_to_save == ["lm_head"]
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(16 / math.sqrt(4))  # rsLoRA: alpha / sqrt(r)
    magnitudes = LAYERS * sum(out for _, out in LINEARS.values())  # DoRA: one magnitude per output feature
    head = HIDDEN * model.config.vocab_size  # lm_head trains fully (a copy saved with the adapter)
    assert count_parameters(model)[0] == lora_count(4, LINEARS) + magnitudes + head
    assert any("lora_magnitude_vector" in n for n in trainable(model))


def test_freeze_layer_choice():
    assert trainable_layer_ids(32, 2) == [30, 31]
    assert trainable_layer_ids(32, -2) == [0, 1]
    assert is_trainable("model.layers.1.mlp.up_proj.weight", "model.layers", [1], ["mlp"], [])
    assert not is_trainable("model.layers.1.self_attn.q_proj.weight", "model.layers", [1], ["mlp"], [])
    assert not is_trainable("model.layers.0.mlp.up_proj.weight", "model.layers", [1], ["all"], [])
    assert is_trainable("model.norm.weight", "model.layers", [1], ["all"], ["norm"])
    assert not is_trainable("model.layers.1.input_layernorm.weight", "model.layers", [0], ["all"], ["norm"])


def test_freeze_trains_only_the_chosen_layers_modules_and_extras(tiny_model):
    model = load_model(cfg("adapter=freeze", "adapter.freeze_trainable_layers=-1",
                           "adapter.freeze_trainable_modules=mlp", "adapter.freeze_extra_modules=lm_head"), "fp32")
    assert set(trainable(model)) == {"model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight",
                                     "model.layers.0.mlp.down_proj.weight", "lm_head.weight"}


def test_freeze_names_an_unknown_module(tiny_model):
    with pytest.raises(ValueError, match="freeze_trainable_modules: no module named 'ffn'"):
        load_model(cfg("adapter=freeze", "adapter.freeze_trainable_modules=ffn"), "fp32")


def prefix_count(pre: int, projection: bool, width: int = HIDDEN) -> int:
    kv = LAYERS * 2 * KV  # a key and a value vector per layer, kv heads only
    if not projection:
        return pre * kv
    return pre * KV + (KV * width + width) + (width * kv + kv)


@pytest.mark.parametrize("projection", [False, True])
def test_prefix_trainable_count(tiny_model, projection):
    model = load_model(cfg("adapter=prefix", "adapter.pre_seq_len=16", f"adapter.prefix_projection={projection}"),
                       "fp32")
    assert count_parameters(model)[0] == prefix_count(16, projection)
    assert all(n.startswith("prompt_encoder.") for n in trainable(model))


def test_prefix_reaches_generate_and_forward_without_the_deprecated_kwarg(tiny_model, tok):
    base = load_base(cfg(), torch.float32)
    ids = tok("the quick brown fox", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_greedy = base.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
    model = load_model(cfg("adapter=prefix", "adapter.pre_seq_len=8"), "fp32").eval()
    torch.manual_seed(0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")
        model.prompt_encoder["default"].embedding.weight.normal_(0, 3.0)  # a prefix that matters
        greedy = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                do_sample=False)
        manual = ids
        for _ in range(6):  # greedy by hand: full forward passes, no generation cache
            nxt = model(input_ids=manual, attention_mask=torch.ones_like(manual)).logits[:, -1].argmax(-1)
            manual = torch.cat([manual, nxt[:, None]], dim=1)
    assert greedy.tolist() == manual.tolist()
    assert greedy.tolist() != base_greedy.tolist()


@pytest.mark.parametrize("projection", [False, True])
def test_a_saved_prefix_continues_training_with_its_vectors(tiny_model, tmp_path, projection):
    """adapter.adapter_name_or_path with adapter=prefix: the saved prefix trains on (peft itself refuses a
    prompt-learning adapter from disk as trainable); a projected one continues as the vectors it saved."""
    from peft import PeftModel

    ids = torch.tensor([[5, 6, 7, 8, 9]])
    saved = load_model(cfg("adapter=prefix", "adapter.pre_seq_len=8", f"adapter.prefix_projection={projection}"),
                       "fp32")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in trainable(saved).values():
            p.normal_(0, 1.0)
    saved.save_pretrained(str(tmp_path / "prefix"))
    model = load_model(cfg("adapter=prefix", f"adapter.adapter_name_or_path={tmp_path / 'prefix'}"), "fp32").eval()
    assert count_parameters(model)[0] == prefix_count(8, False)
    assert all(n.startswith("prompt_encoder.") for n in trainable(model))
    expected = PeftModel.from_pretrained(load_base(cfg(), torch.float32), str(tmp_path / "prefix")).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected(ids).logits)
        assert not torch.allclose(model(ids).logits, load_base(cfg(), torch.float32)(ids).logits, atol=1e-3)


@pytest.mark.parametrize("adapter, precision, trainable_dtype, frozen_dtype", [
    ("full", "bf16", torch.float32, None),
    ("full", "pure_bf16", torch.bfloat16, None),
    ("lora", "bf16", torch.float32, torch.bfloat16),
    ("lora", "pure_bf16", torch.bfloat16, torch.bfloat16),
    ("freeze", "fp16", torch.float32, torch.float16),
    ("prefix", "bf16", torch.float32, torch.bfloat16),
])
def test_weights_dtypes_follow_the_precision(tiny_model, adapter, precision, trainable_dtype, frozen_dtype):
    model = load_model(cfg(f"adapter={adapter}"), precision)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {trainable_dtype}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == ({frozen_dtype} if frozen_dtype else set())


def test_qlora_bitsandbytes_config_is_built_from_the_config():
    from transformers import BitsAndBytesConfig

    kw = quantization_kwargs(cfg("adapter=qlora").adapter, "bf16")
    q = BitsAndBytesConfig(**kw)
    assert q.load_in_4bit and not q.load_in_8bit
    assert (q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == ("nf4", True,
                                                                                               torch.bfloat16)
    kw = quantization_kwargs(cfg("adapter=qlora", "adapter.quantization_type=fp4",
                                 "adapter.double_quantization=false").adapter, "fp16")
    q = BitsAndBytesConfig(**kw)
    assert (q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == ("fp4", False,
                                                                                               torch.float16)
    assert BitsAndBytesConfig(**quantization_kwargs(cfg("adapter=qlora", "adapter.quantization_bit=8").adapter,
                                                    "bf16")).load_in_8bit
    assert quantization_kwargs(cfg("adapter=lora").adapter, "bf16") is None


def test_rope_scaling_factor_and_parameters(tiny_model):
    assert rope_parameters({"rope_theta": 1e4}, "linear", None, 4096, 1024) == {"rope_theta": 1e4,
                                                                                "rope_type": "linear", "factor": 4.0}
    assert rope_parameters({}, "linear", None, 1000, 1024) is None
    assert rope_parameters({}, "yarn", 2, 0, 1024)["original_max_position_embeddings"] == 1024
    plain = load_base(cfg(), torch.float32)
    scaled = load_base(cfg("model.rope_scaling=linear", "data.cutoff_len=2048"), torch.float32)
    assert scaled.config.rope_parameters["rope_type"] == "linear" and scaled.config.rope_parameters["factor"] == 2.0
    # linear scaling (position interpolation) divides the rotary frequencies by the factor
    torch.testing.assert_close(scaled.model.rotary_emb.inv_freq * 2, plain.model.rotary_emb.inv_freq)


def test_attention_kernel_is_the_configs(tiny_model):
    assert load_base(cfg("model.attn=eager"), torch.float32).config._attn_implementation == "eager"
    assert load_base(cfg(), torch.float32).config._attn_implementation == "sdpa"


def _save_trained_lora(path, seed):
    model = load_model(cfg(), "fp32")
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in trainable(model).items():
            p.normal_(0, 0.1)
    model.save_pretrained(str(path))
    return model


def test_continuing_and_merging_adapters(tiny_model, tmp_path):
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    a = _save_trained_lora(tmp_path / "a", 1).eval()
    with torch.no_grad():
        logits_a = a(ids).logits
    # continue: A is loaded trainable, with its weights
    model = load_model(cfg(f"adapter.adapter_name_or_path={tmp_path / 'a'}"), "fp32").eval()
    assert count_parameters(model)[0] == lora_count(8, ["q_proj", "v_proj"])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, logits_a)
    # create_new_adapter: A merged into the base, a fresh (zero-effect) adapter on top
    model = load_model(cfg(f"adapter.adapter_name_or_path={tmp_path / 'a'}", "adapter.create_new_adapter=true",
                           "adapter.lora_target=all"), "fp32").eval()
    assert count_parameters(model)[0] == lora_count(8, LINEARS)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, logits_a, atol=1e-5, rtol=1e-5)
    # two adapters, merged in order: A into the base, B trains on
    from peft import PeftModel

    b = _save_trained_lora(tmp_path / "b", 2)
    model = load_model(cfg(f"adapter.adapter_name_or_path='{tmp_path / 'a'},{tmp_path / 'b'}'"), "fp32").eval()
    assert trainable(model).keys() == trainable(b).keys()
    for name, p in trainable(b).items():
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), p.detach())
    expected = PeftModel.from_pretrained(PeftModel.from_pretrained(load_base(cfg(), torch.float32), tmp_path / "a")
                                         .merge_and_unload(), tmp_path / "b").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected(ids).logits)
        assert not torch.allclose(model(ids).logits, logits_a, atol=1e-3)


def test_chat_prompt_is_the_training_prompt(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 3."},
                {"role": "assistant", "content": "5"}]
    for template in ("auto", "alpaca", "chatml", "llama2"):
        ids, labels = encode(tok, template, messages, cutoff_len=1024)
        prompt = encode_prompt(tok, template, messages[:-1])
        n_prompt = next(i for i, lab in enumerate(labels) if lab != -100)
        assert prompt == ids[:n_prompt], template
    assert tok.decode(encode_prompt(tok, "auto", messages[:-1])).endswith("<|user|>\nAdd 2 and 3.\n<|assistant|>\n")
    assert stop_token_ids(tok, "auto") == [tok.eos_token_id]
