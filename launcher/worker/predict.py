"""Predict with generation (train.do_predict): an answer generated for every eval row, on every rank.

Rank r generates rows r, r+W, r+2W, ... in batches of per_device_eval_batch_size, LEFT-padded (generation
appends on the right); rank 0 gathers them back into the rows' order, writes generated_predictions.jsonl
(LLaMA-Factory's fields: prompt, predict, label; special tokens skipped) and predict_results.json (ROUGE/BLEU,
launcher/metrics/similarity.py, and throughput). Every rank runs the same number of generate() calls (a short
shard repeats its last row, dropped after), and under ZeRO-3 generate(synced_gpus=True) keeps the ranks
stepping together until the longest answer is done: each forward gathers parameters from all of them.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Optional

log = logging.getLogger("launcher.predict")


@dataclass(frozen=True)
class Row:
    index: int
    prompt: list[int]
    label: list[int]


def rows_of(dataset) -> list[Row]:
    """Tokenized sft rows (input_ids, prompt_len) -> prompt and label ids, in the dataset's order."""
    return [Row(i, list(ids[:n]), list(ids[n:])) for i, (ids, n) in
            enumerate(zip(dataset["input_ids"], dataset["prompt_len"]))]


def shard(rows: list[Row], rank: int, world: int, batch: int) -> list[list[Row]]:
    """This rank's batches: rows rank, rank+world, ...; every rank gets the same number of full batches (the
    last row repeated), so collective steps inside generate() line up across ranks."""
    mine = rows[rank::world]
    per_rank = math.ceil(len(rows) / world)
    n_batches = math.ceil(per_rank / batch) if per_rank else 0
    padded = mine + [mine[-1] if mine else rows[0]] * (n_batches * batch - len(mine))
    return [padded[i:i + batch] for i in range(0, len(padded), batch)]


def left_pad(prompts: list[list[int]], pad_id: int):
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def generate_kwargs(g: Any, stop_ids: list[int], pad_id: int, synced: bool) -> dict:
    """transformers generate() kwargs from the generation node: sampling keys only when sampling, length_penalty
    only with beams (transformers warns about unused ones)."""
    kw: dict[str, Any] = {"max_new_tokens": g.max_new_tokens, "do_sample": bool(g.do_sample), "num_beams": g.num_beams,
                          "repetition_penalty": g.repetition_penalty, "eos_token_id": stop_ids,
                          "pad_token_id": pad_id, "use_cache": True, "synced_gpus": synced}
    if g.do_sample:
        kw |= {"temperature": g.temperature, "top_p": g.top_p, "top_k": g.top_k}
    else:  # greedy: the model's generation_config may carry sampling values it would warn about
        kw |= {"temperature": None, "top_p": None, "top_k": None}
    if g.num_beams > 1:
        kw["length_penalty"] = g.length_penalty
    return kw


def predict(model, tokenizer, cfg: Any, dataset, *, rank: int, world: int, device, precision: str,
            zero3: bool, gather) -> Optional[dict]:
    """Generate for every row of dataset; rank 0 returns the rows (dicts) and metrics, the others None."""
    import torch

    from launcher.data.templates import stop_token_ids

    rows = rows_of(dataset)
    batches = shard(rows, rank, world, cfg.train.per_device_eval_batch_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = generate_kwargs(cfg.generation, stop_token_ids(tokenizer, cfg.data.template), pad_id, zero3)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16) \
        if device.type == "cuda" and precision in ("bf16", "fp16") else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    mine: dict[int, str] = {}
    with torch.no_grad(), autocast:
        for n, batch in enumerate(batches):
            ids, mask = left_pad([r.prompt for r in batch], pad_id)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
            for r, seq in zip(batch, out[:, ids.shape[1]:].tolist()):
                mine.setdefault(r.index, tokenizer.decode(seq, skip_special_tokens=True))
            log.info("predict: batch %d/%d", n + 1, len(batches))
    runtime = time.perf_counter() - started
    model.train(was_training)
    everyone = gather(mine)
    if rank != 0:
        return None
    answers = {i: text for part in everyone for i, text in part.items()}
    from launcher.metrics.similarity import score_rows

    out_rows = [{"prompt": tokenizer.decode(r.prompt, skip_special_tokens=True), "predict": answers[r.index],
                 "label": tokenizer.decode(r.label, skip_special_tokens=True)} for r in rows]
    metrics = score_rows([r["predict"] for r in out_rows], [r["label"] for r in out_rows])
    metrics |= {"predict_rows": len(rows), "predict_runtime": round(runtime, 4),
                "predict_samples_per_second": round(len(rows) / runtime, 3) if runtime else None,
                "predict_steps_per_second": round(len(batches) / runtime, 3) if runtime else None}
    return {"rows": out_rows, "metrics": metrics}


def write(run, result: dict) -> None:
    """generated_predictions.jsonl and predict_results.json in the run dir; the metrics into summary.json."""
    with open(run.predictions, "w", encoding="utf-8") as f:
        for row in result["rows"]:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    run.predict_results.write_text(json.dumps(result["metrics"], indent=2) + "\n")
    summary = json.loads(run.summary.read_text()) if run.summary.is_file() else {}
    summary["predict"] = result["metrics"]
    run.summary.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("predict: %s", json.dumps(result["metrics"]))
