#!/usr/bin/env python
"""GPU checks with our own `launch` on one GPU, figures into docs/benchmarks.md (run by scripts/gpu_check.sh).

Models with random weights built on the GPU (no download) and the tiny local tokenizer:
- LoRA SFT of a Llama-2-7B-shaped model (6.7B), packing, sdpa, `precision=auto` (the check that it picks bf16);
  the same with flash_attention_2 where flash-attn imports;
- QLoRA (4-bit nf4 base, bitsandbytes) of the same model;
- full fine-tuning of a ~1.1B-shaped Llama (TinyLlama's shape) under ZeRO-3 and ZeRO-3 with CPU offload.
For each: tokens/s, peak GPU memory (max_memory_allocated), MFU = 6 x parameters x tokens/s / the device's
peak dense bf16 FLOP/s (a table by device name; --peak-tflops for others). Global batch 8 rows of 2,048 tokens.

    scripts/gpu_check.sh                   # installs from the wheelhouse, then runs this (under 8 min on an H100/H200)
    python scripts/gpu_check.py --dry-run  # prints what it would run; needs no GPU
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXIT_USAGE = 2  # launcher.exitcodes.EXIT_USAGE (not imported: --dry-run runs without the package's deps)
# Llama-2-7B and TinyLlama-1.1B shapes; vocab 32,000 (the tiny tokenizer's ids are a subset)
SHAPES = {
    "llama7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 32},
    "llama1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
                "num_key_value_heads": 4},
}
# peak dense bf16 tensor FLOP/s (vendor data sheets, without sparsity); matched by substring, first hit wins
PEAK_BF16 = [("GH200", 989e12), ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("H800", 989e12),
             ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12),
             ("A6000", 155e12), ("A10G", 70e12), ("A10", 125e12), ("L4", 121e12), ("4090", 165e12)]
# name, model, extra overrides, what must import first
CASES = [
    ("LoRA, sdpa, precision=auto", "llama7b", ["adapter=lora", "adapter.lora_target=all", "model.attn=sdpa"], None),
    ("LoRA, flash_attention_2", "llama7b", ["adapter=lora", "adapter.lora_target=all",
                                            "model.attn=flash_attention_2"], "flash_attn"),
    ("QLoRA 4-bit nf4, sdpa", "llama7b", ["adapter=qlora", "adapter.lora_target=all", "model.attn=sdpa"],
     "bitsandbytes"),
    ("full, ZeRO-3", "llama1b", ["adapter=full", "zero=3"], None),
    ("full, ZeRO-3 offload", "llama1b", ["adapter=full", "zero=3_offload"], None),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--dry-run", action="store_true", help="print the commands it would run and exit 0 (no GPU)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (default 8)")
    parser.add_argument("--micro-batch", type=int, default=2, choices=[1, 2, 4, 8],
                        help="rows per device per step (global batch 8; default 2)")
    parser.add_argument("--work", type=Path, default=Path("~/.cache/launcher-gpu-check").expanduser(),
                        help="models, data and runs (default ~/.cache/launcher-gpu-check; the 7B model takes 13.5 GB)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks.md",
                        help="report whose '## GPU' section is replaced (default docs/benchmarks.md)")
    parser.add_argument("--budget-min", type=float, default=8.0,
                        help="start no further case after this many minutes (default 8; the report says which)")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak dense bf16 TFLOP/s, if not in the table")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def params_of(shape: dict, vocab: int = 32000) -> int:
    h, i, n = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    return n * (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h) + 2 * vocab * h + h


def launch_cmd(case: tuple, args: argparse.Namespace) -> list[str]:
    name, model, extra, _ = case
    slug = "_".join(o.split("=")[1] for o in extra if o.split("=")[0] in ("adapter", "model.attn", "zero"))
    return [sys.executable, "-m", "launcher.cli", "recipe=tiny_sft_lora", "device=cuda", "gpus=1",
            f"model.model_name_or_path={args.work / model}", "precision=auto", *extra,
            f"data.dataset=[{args.work / 'data/alpaca_gpu.json'}]", "data.cutoff_len=2048", "data.packing=true",
            f"data.cache_dir={args.work / 'cache'}", "global_batch_size=8",
            f"train.per_device_train_batch_size={args.micro_batch}", f"train.max_steps={args.steps}",
            "train.learning_rate=1e-4", "train.logging_steps=1", "train.save_steps=100000",
            f"output_dir={args.work / 'runs' / slug}"]


def build_cmd(args: argparse.Namespace) -> list[str]:
    return [sys.executable, str(Path(__file__)), "--build-models", str(args.work)]


def build_models(work: Path) -> None:
    """Random-weight models built on the GPU in bf16 (no download), the tiny tokenizer, and the data."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_vs_llamafactory import alpaca_rows

    tiny = ROOT / "assets/tiny_llama"
    if not (tiny / "tokenizer.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts/make_tiny_model.py")], check=True)
    tok = AutoTokenizer.from_pretrained(tiny)
    (work / "data").mkdir(parents=True, exist_ok=True)
    data = work / "data/alpaca_gpu.json"
    if not data.is_file():
        data.write_text(json.dumps(alpaca_rows(4000)))
    for name, shape in SHAPES.items():
        out = work / name
        if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
            continue
        started = time.perf_counter()
        config = LlamaConfig(vocab_size=32000, max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
                             **shape)
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)  # initialized in bf16 directly: no fp32 copy of 7B on the GPU
        try:
            with torch.device("cuda"):
                model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(torch.float32)
        model.save_pretrained(out, max_shard_size="5GB")
        tok.save_pretrained(out)
        del model
        torch.cuda.empty_cache()
        print(f"built {out} ({params_of(shape) / 1e9:.2f}B parameters) in {time.perf_counter() - started:.0f} s",
              flush=True)


def peak_flops(device: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    return next((flops for key, flops in PEAK_BF16 if key.lower() in device.lower()), None)


def importable(module: str | None) -> bool:
    if module is None:
        return True
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    return r.returncode == 0


def run_case(case: tuple, args: argparse.Namespace, flops: float | None) -> dict:
    name, model, _, needs = case
    row = {"case": name, "model": model, "params": params_of(SHAPES[model])}
    if not importable(needs):
        return {**row, "skipped": f"{needs} does not import"}
    cmd = launch_cmd(case, args)
    run = Path(cmd[-1].split("=", 1)[1])
    print("+", shlex.join(cmd), flush=True)
    started = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    row["wall_s"] = round(time.perf_counter() - started, 1)
    if r.returncode or not (run / "summary.json").is_file():
        return {**row, "failed": f"exit {r.returncode}; see {run}/logs"}
    s = json.loads((run / "summary.json").read_text())
    # steady state: the median logged step after the first (model load and warm-up are not training speed)
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()[1:]]
    rates = sorted(m["tokens_per_s"] for m in steps if m.get("tokens_per_s")) or [s["tokens_per_s"]]
    row.update(precision=s["precision"], tokens_per_s=rates[len(rates) // 2],
               peak_memory_gib=max(s["peak_memory_mb_per_rank"]) / 1024, peak_memory_kind=s["peak_memory_kind"],
               trained_tokens=s["trained_tokens"], steps=s["steps"], final_loss=s["final_loss"])
    row["mfu"] = 6 * row["params"] * row["tokens_per_s"] / flops if flops else None
    return row


def render(rows: list[dict], meta: dict) -> str:
    lines = ["## GPU", "",
             f"Measured {meta['date']} on {meta['device']} (peak dense bf16 {meta['peak']}), torch {meta['torch']}, "
             f"CUDA {meta['cuda']}, launcher at `{meta['git']}`. {meta['steps']} steps of global batch 8 rows x 2,048 "
             f"tokens (packing, micro-batch {meta['micro_batch']}), random weights, one GPU; `precision=auto` picked "
             f"**{meta['auto_precision']}**. tokens/s: the median logged step after the first; MFU = 6 x parameters "
             f"x tokens/s / peak. Command: `scripts/gpu_check.sh` ({meta['wall_min']:.1f} min in all).", "",
             "| run | model | tokens/s | peak memory (GiB) | MFU | final loss |", "|---|---|---|---|---|---|"]
    for r in rows:
        what = f"{r['model']} ({r['params'] / 1e9:.2f}B)"
        if "skipped" in r or "failed" in r:
            lines.append(f"| {r['case']} | {what} | {r.get('skipped') or r.get('failed')} | | | |")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        lines.append(f"| {r['case']} | {what} | {r['tokens_per_s']:,.0f} | {r['peak_memory_gib']:.1f} | {mfu} | "
                     f"{r['final_loss']:.3f} |")
    return "\n".join(lines) + "\n"


def write_section(out: Path, section: str) -> None:
    """Replace the '## GPU' section of out (the CPU sections above it stay)."""
    text = out.read_text() if out.is_file() else "# Benchmarks\n"
    head = text[:text.index("\n## GPU")] if "\n## GPU" in text else text.rstrip("\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(head.rstrip("\n") + "\n\n" + section)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--build-models"]:
        build_models(Path(argv[1]))
        return 0
    args = parse_args(argv)
    if args.dry_run:
        print("# would run (one GPU):")
        print(shlex.join(build_cmd(args)))
        for case in CASES:
            prefix = f"# if `import {case[3]}` works:\n" if case[3] else ""
            print(prefix + shlex.join(launch_cmd(case, args)))
        print(f"# then write the figures into {args.out} (section '## GPU')")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); run it on a GPU machine, "
              "or pass --dry-run to print the commands", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    device = torch.cuda.get_device_name(0)
    flops = peak_flops(device, args.peak_tflops)
    subprocess.run(build_cmd(args), check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    rows = []
    for case in CASES:
        if time.perf_counter() - started > args.budget_min * 60:
            rows.append({"case": case[0], "model": case[1], "params": params_of(SHAPES[case[1]]),
                         "skipped": f"not started: past the {args.budget_min:g}-minute budget"})
            continue
        rows.append(run_case(case, args, flops))
    auto = rows[0].get("precision", "n/a")
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": device,
            "peak": f"{flops / 1e12:,.0f} TFLOP/s" if flops else "unknown: pass --peak-tflops",
            "torch": torch.__version__, "cuda": torch.version.cuda, "git": git, "steps": args.steps,
            "micro_batch": args.micro_batch, "auto_precision": auto, "wall_min": (time.perf_counter() - started) / 60}
    write_section(args.out, render(rows, meta))
    args.out.with_name("benchmarks_gpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(render(rows, meta))
    failed = [r["case"] for r in rows if "failed" in r] + ([] if auto == "bf16" else ["precision=auto -> " + auto])
    if failed:
        print("gpu_check: failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
