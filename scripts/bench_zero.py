#!/usr/bin/env python
"""DDP vs ZeRO-2 vs ZeRO-3 on the same work: peak memory per rank and tokens/s, written to a file.

Each variant is one `launch` of the same full fine-tuning run (same model, data, seed, batch, steps), so
only the sharding differs; the numbers come from each run's summary.json and metrics.jsonl (peak memory
while training: the accelerator's max_memory_allocated on GPU, each rank's resident-set high-water mark
on CPU; tokens/s: the median logged step). The model is a Llama of the chosen size with
random weights and the tiny model's tokenizer, built once under assets/.

    python scripts/bench_zero.py                          # CPU, 2 ranks, fp32 -> bench/zero_cpu_fp32.{json,md}
    python scripts/bench_zero.py --device cuda --gpus 8 --precision bf16 --hidden 2048 --layers 16
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"DDP": ("zero=none",), "ZeRO-2": ("zero=2",), "ZeRO-3": ("zero=3",)}


def build_model(out: Path, hidden: int, layers: int) -> int:
    """A random-weight Llama with the tiny model's tokenizer; returns its parameter count."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(ROOT / "assets/tiny_llama")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                         max_position_embeddings=1024, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    if not (out / "model.safetensors").is_file():
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(out)
        tok.save_pretrained(out)
    return sum(p.numel() for p in LlamaForCausalLM(config).parameters())


def run_variant(name: str, args: argparse.Namespace, model: Path, work: Path) -> dict:
    run = work / name
    cmd = [sys.executable, "-m", "launcher.cli", "recipe=tiny_sft_lora", f"device={args.device}", f"gpus={args.gpus}",
           "adapter=full", f"precision={args.precision}", f"model.model_name_or_path={model}",
           f"train.max_steps={args.steps}",
           "train.learning_rate=1e-4", "train.logging_steps=1", "train.save_steps=100000",
           "train.dataloader_drop_last=true", f"output_dir={run}", *VARIANTS[name]]
    print("+", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode:
        raise SystemExit(f"{name} failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    s = json.loads((run / "summary.json").read_text())
    # steady state: the logged intervals after the first step (engine setup is not training speed)
    rates = sorted(m["tokens_per_s"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()[1:]))
    return {"variant": name, "zero_stage": s["zero_stage"], "peak_memory_mb_per_rank": s["peak_memory_mb_per_rank"],
            "peak_memory_kind": s["peak_memory_kind"], "tokens_per_s": rates[len(rates) // 2],
            "trained_tokens": s["trained_tokens"], "train_runtime_s": s["train_runtime_s"],
            "first_loss": s["first_loss"], "final_loss": s["final_loss"]}


def table(results: list[dict], meta: dict) -> str:
    lines = [f"# DDP vs ZeRO-2 vs ZeRO-3 ({meta['device']}, {meta['gpus']} ranks)", "",
             f"Full fine-tuning of a {meta['params'] / 1e6:.1f}M-parameter Llama (hidden {meta['hidden']}, "
             f"{meta['layers']} layers), {meta['precision']}, {meta['steps']} steps of global batch 8, same data and "
             "seed. "
             f"Peak memory: {results[0]['peak_memory_kind']}. Command: `{meta['command']}`.", "",
             "| variant | peak memory per rank (MiB) | tokens/s (median step) | train time (s) | loss first -> last |",
             "|---|---|---|---|---|"]
    for r in results:
        mem = " / ".join(f"{m:,.0f}" for m in r["peak_memory_mb_per_rank"])
        lines.append(f"| {r['variant']} | {mem} | {r['tokens_per_s']:,.0f} | {r['train_runtime_s']:.1f} | "
                     f"{r['first_loss']:.3f} -> {r['final_loss']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--gpus", type=int, default=2, help="ranks (processes) on this node")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--out", type=Path, help="default: bench/zero_<device>.json (and .md)")
    args = parser.parse_args()
    out = args.out or ROOT / f"bench/zero_{args.device}_{args.precision}.json"
    model = ROOT / f"assets/bench_llama_h{args.hidden}_l{args.layers}"
    params = build_model(model, args.hidden, args.layers)
    work = Path(tempfile.mkdtemp(prefix="bench_zero_"))
    try:
        results = [run_variant(name, args, model, work) for name in VARIANTS]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = {"device": args.device, "gpus": args.gpus, "hidden": args.hidden, "layers": args.layers,
            "precision": args.precision,
            "steps": args.steps, "params": params, "command": " ".join(["python scripts/bench_zero.py", *sys.argv[1:]])}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    out.with_suffix(".md").write_text(table(results, meta))
    print(table(results, meta), end="")
    print(f"written: {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
