#!/usr/bin/env python
"""Benchmark of the data pipeline (not a test): tokenization rows/s and the share of non-pad tokens.

Each case repeats a demo set N times into a temp dir, runs the whole pipeline (load, convert, mix,
tokenize with the chat template, split, pack/chunk; no cache) with the tiny tokenizer, and reports rows,
seconds, rows/s, rows after shaping and the share of real tokens when the rows are batched 4 at a time
in random order and padded to the longest (what the Trainer's sampler and the collator do). A last
case times a cache hit (prepare() of an already built cache).

    python scripts/bench_data.py [--repeat 20] [--workers 1] [--out outputs/bench/data.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = [  # name, stage, datasets, overrides
    ("alpaca_demo sft", "sft", ["demo/alpaca_demo.json"], []),
    ("alpaca_demo sft packed", "sft", ["demo/alpaca_demo.json"], ["data.packing=true"]),
    ("demo_mix sft", "sft", ["alpaca_en_demo.json", "identity.json", "sharegpt_demo.json"], []),
    ("demo_mix sft packed", "sft", ["alpaca_en_demo.json", "identity.json", "sharegpt_demo.json"],
     ["data.packing=true"]),
    ("c4_demo pt", "pt", ["c4_demo.jsonl"], ["data.cutoff_len=128"]),
    ("c4_demo pt packed", "pt", ["c4_demo.jsonl"], ["data.cutoff_len=128", "data.packing=true"]),
]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import launcher.cli  # noqa: F401  (registers the schema and the project_root resolver)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="launch", overrides=overrides)


def repeated(src: Path, dst: Path, times: int) -> Path:
    if src.suffix == ".jsonl":
        dst.write_text(src.read_text() * times)
    else:
        dst.write_text(json.dumps(json.loads(src.read_text()) * times))
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="copies of each demo set (default 20)")
    parser.add_argument("--workers", type=int, default=1, help="data.preprocessing_num_workers")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "data.json"))
    args = parser.parse_args()

    from launcher.data import pipeline
    from launcher.data.cache import prepare
    from launcher.data.packing import non_pad_share
    from launcher.data.registry import resolve_all
    from launcher.worker.model import load_tokenizer

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for warmup, (name, stage, files, overrides) in [(True, CASES[0])] + [(False, c) for c in CASES]:
            paths = [repeated(ROOT / "data" / f, tmp / f"{i}-{Path(f).name}", args.repeat) for i, f in enumerate(files)]
            cfg = compose(["recipe=tiny_pt_lora" if stage == "pt" else "recipe=tiny_sft_lora", "device=cpu",
                           f"data.dataset=[{','.join(map(str, paths))}]", f"data.cache_dir={tmp}/cache",
                           f"data.preprocessing_num_workers={args.workers}", "data.packing=false", *overrides])
            tokenizer = load_tokenizer(cfg)
            attrs = resolve_all(cfg.data.dataset, cfg.data.dataset_dir)
            started = time.perf_counter()
            built = pipeline.build(cfg.data, stage, cfg.seed, tokenizer, attrs, f"{tmp}/cache/hf")
            seconds = time.perf_counter() - started
            lengths = pipeline.lengths_of(built.train)
            if warmup:  # first imports and caches are not the pipeline's speed
                continue
            row = {"case": name, "rows": built.stats["rows_tokenized"], "seconds": round(seconds, 3),
                   "rows_per_s": round(built.stats["rows_tokenized"] / seconds, 1), "train_rows": len(lengths),
                   "tokens": sum(lengths), "cutoff_len": cfg.data.cutoff_len,
                   "non_pad_share_batch4": round(non_pad_share(lengths, 4, cfg.seed), 4)}
            results.append(row)
            print(f"{name:24s} {row['rows']:6d} rows {row['seconds']:7.2f} s {row['rows_per_s']:9.1f} rows/s  "
                  f"{row['train_rows']:5d} train rows  non-pad {row['non_pad_share_batch4']:.1%}", flush=True)
        cfg = compose(["recipe=tiny_sft_lora", "device=cpu", f"data.cache_dir={tmp}/cache",
                       f"data.dataset={repeated(ROOT / 'data/demo/alpaca_demo.json', tmp / 'hit.json', args.repeat)}"])
        prepare(cfg, tokenizer)
        started = time.perf_counter()
        hit = prepare(cfg, tokenizer).record
        results.append({"case": "cache hit (alpaca_demo sft)", "rows_tokenized": hit["rows_tokenized_here"],
                        "seconds": round(time.perf_counter() - started, 3), "train_rows": hit["train_rows"]})
        print(f"{'cache hit':24s} {hit['rows_tokenized_here']} rows tokenized, {results[-1]['seconds']:.2f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                               "repeat": args.repeat, "workers": args.workers, "results": results}, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
