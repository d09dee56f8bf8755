#!/usr/bin/env python
"""Build the tiny Llama-architecture model + BPE tokenizer used by the demo and the tests.

Deterministic (fixed seed, fixed corpus): the same files on every machine, no hub download. The
result is a real LlamaForCausalLM and a fast BPE tokenizer with a chat template, loaded by the same
AutoModel/AutoTokenizer code a 7B model goes through.

    python scripts/make_tiny_model.py [OUT_DIR]      # default: assets/tiny_llama
    python scripts/make_tiny_model.py OUT --vocab 4000 --hidden 256 --layers 4 --corpus rows.json
                                                     # a bigger one (the LLaMA-Factory benchmark's 5.2M)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
# A Zephyr-like template: the launcher's `template=auto` reads it from the tokenizer.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>\n{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}<|user|>\n{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def corpus(rows_file: Path = ROOT / "data/demo/alpaca_demo.json") -> list[str]:
    rows = json.loads(rows_file.read_text())
    texts = [" ".join(str(v) for v in r.values()) for r in rows]
    # Enough general English and digits that other small data sets tokenize into sensible pieces.
    texts += ["the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9 10 100"] * 4
    return texts


def build_tokenizer(out: Path, vocab: int = 1024, rows_file: Path | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(rows_file) if rows_file else corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=SPECIALS[4:], model_max_length=1024,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_model(out: Path, tokenizer, hidden: int = 64, intermediate: int = 176, layers: int = 2, heads: int = 4,
                kv_heads: int = 2) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "assets/tiny_llama")
    parser.add_argument("--vocab", type=int, default=1024, help="BPE vocabulary size to train (at most)")
    parser.add_argument("--corpus", type=Path,
                        help="alpaca json rows to train the tokenizer on (default: the demo set)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--intermediate", type=int, default=176)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out, args.vocab, args.corpus)
    params = build_model(out, tokenizer, args.hidden, args.intermediate, args.layers, args.heads, args.kv_heads)
    n = sum(p.stat().st_size for p in out.iterdir())
    print(f"model + tokenizer written to {out} ({n / 1e6:.1f} MB, vocab {len(tokenizer)}, {params:,} parameters)")


if __name__ == "__main__":
    main()
