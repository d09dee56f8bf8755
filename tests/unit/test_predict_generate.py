"""Predict's pieces on the tiny model in this process: shards cover every row once with equal batch counts,
left-padded batched generation equals generating each row alone, and a prefix (P-Tuning v2) adapter changes
what is generated, consistently with its forward pass."""
from __future__ import annotations

import pytest
import torch

from launcher.worker.predict import Row, generate_kwargs, left_pad, shard
from tests.support import TINY_MODEL, compose

pytestmark = pytest.mark.skipif(not (TINY_MODEL / "config.json").is_file(), reason="python scripts/make_tiny_model.py")


@pytest.mark.parametrize("n,world,batch", [(8, 2, 3), (5, 2, 2), (1, 2, 4), (7, 3, 1)])
def test_shards_cover_rows_once_with_equal_batches(n, world, batch):
    rows = [Row(i, [i], []) for i in range(n)]
    shards = [shard(rows, r, world, batch) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and all(len(b) == batch for s in shards for b in s)
    seen = {r.index for s in shards for b in s for r in b}
    assert seen == set(range(n))


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def _model(adapter: str):
    from launcher.worker.model import load_model, load_tokenizer

    cfg = compose("device=cpu", f"adapter={adapter}", "adapter.pre_seq_len=4", "adapter.prefix_projection=true")
    torch.manual_seed(0)
    model = load_model(cfg, "fp32").eval()
    if adapter == "prefix":  # a trained prefix is not zero: give it weights that change the answers
        with torch.no_grad():
            for p in model.prompt_encoder.parameters():
                p.normal_(0, 1.0)
    return cfg, load_tokenizer(cfg), model


def _generate(model, tokenizer, cfg, prompts):
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    kw = generate_kwargs(compose("train.do_predict=true").generation, [tokenizer.eos_token_id],
                         tokenizer.pad_token_id, synced=False) | {"max_new_tokens": 6}
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, **kw)
    return out[:, ids.shape[1]:].tolist()


@pytest.mark.parametrize("adapter", ["lora", "prefix"])
def test_batched_left_padded_generation_equals_one_by_one(adapter):
    cfg, tok, model = _model(adapter)
    prompts = [tok("hello there, how are you")["input_ids"], tok("hi")["input_ids"]]
    together = _generate(model, tok, cfg, prompts)
    alone = [_generate(model, tok, cfg, [p])[0] for p in prompts]
    strip = lambda seq: [t for t in seq if t != tok.pad_token_id]  # noqa: E731 (a row done early is padded)
    assert [strip(s) for s in together] == [strip(s) for s in alone]


def test_prefix_changes_generation_as_its_forward_does():
    cfg, tok, model = _model("prefix")
    prompt = tok("hello there, how are you")["input_ids"]
    generated = _generate(model, tok, cfg, [prompt])[0]
    with torch.no_grad():
        first = model(input_ids=torch.tensor([prompt])).logits[0, -1].argmax().item()
        with model.disable_adapter():
            base = _generate(model, tok, cfg, [prompt])[0]
    assert generated[0] == first  # generate() saw the prefix the forward pass uses
    assert generated != base
