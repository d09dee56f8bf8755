"""Data: datasets, their formats and rows for the stage, the template, shaping and mixing."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

from launcher.data.formats import KIND_NAMES, STAGE_KINDS, RowError, convert
from launcher.data.registry import DataError, DatasetAttr, dataset_names, detect, resolve, split_floats
from launcher.data.templates import TEMPLATE_NAMES
from launcher.facts import DataFileFacts, Facts
from launcher.schema import MixStrategy
from launcher.validate.problem import Problem, show

EVAL_STRATEGIES = ("no", "steps", "epoch")


def check_data(cfg: Any, facts: Facts) -> Iterator[Problem]:
    d, stage = cfg.data, show(cfg.stage.name)
    if stage == "eval":  # benchmarks read their tasks' rows (validate/benchmark.py), not data.*
        return
    names = dataset_names(d.dataset) if d.dataset is not None else []
    if not names:
        yield Problem("data.dataset", d.dataset, "name at least one dataset: a name from dataset_info.json, a "
                      "data file or a directory; several as 'a,b' (quoted) or [a,b]")
    if d.template not in TEMPLATE_NAMES:
        yield Problem("data.template", d.template, f"unknown template; use one of {', '.join(TEMPLATE_NAMES)}")
    missing = [t for t, held in facts.template_tokens.items() if not held]
    if missing:
        yield Problem("data.template", d.template, f"writes special tokens the tokenizer of "
                      f"{cfg.model.model_name_or_path} lacks: {', '.join(missing)} (they would be split into pieces "
                      "and generation would not stop at the end of a turn); use the model's own template "
                      "(data.template=auto) or one its tokenizer has the tokens of")
    yield from _check_data_numbers(cfg, len(names))
    if facts.data.registry_error:
        yield Problem("data.dataset_dir", d.dataset_dir, f"{facts.data.registry_error}; fix the file")
        return
    rows: list[Optional[int]] = []
    yield from _check_datasets("data.dataset", names, cfg, facts, rows)
    total_rows = None if None in rows else sum(rows)
    if total_rows and d.val_size >= 1 and d.val_size >= total_rows and d.mix_strategy == MixStrategy.concat:
        yield Problem("data.val_size", d.val_size, f"leaves no training row: the datasets hold {total_rows} "
                      "rows; use a fraction like 0.1 or a smaller count")
    if d.eval_dataset is not None:
        yield from _check_datasets("data.eval_dataset", dataset_names(d.eval_dataset), cfg, facts, [])


def _check_datasets(key: str, names: list[str], cfg: Any, facts: Facts, rows: list) -> Iterator[Problem]:
    """Each name of data.dataset (or data.eval_dataset) resolved and scanned; rows gets each one's row count
    taken (None: not known before loading)."""
    d = cfg.data
    for name in names:
        try:
            attr = resolve(name, facts.data.registry, d.dataset_dir, facts.data.paths)
        except DataError as e:
            yield Problem(key, name, str(e))
            rows.append(None)
            continue
        problems, n = _check_dataset(attr, show(cfg.stage.name), facts)
        yield from (Problem(key, name, p) for p in problems)
        rows.append(None if n is None else min(n, d.max_samples) if d.max_samples is not None else n)


def _check_dataset(attr: DatasetAttr, stage: str, facts: Facts) -> tuple[list[str], Optional[int]]:
    """Problems of one resolved dataset, and its row count (None when not known before loading)."""
    if attr.source not in ("file",) and not attr.files:
        return [], None  # a hub or save_to_disk dataset: read by the worker only
    scans = [(f, facts.data.files.get(f, DataFileFacts(False))) for f in attr.files]
    problems = [f"{f}: no such file" if not s.exists else s.error for f, s in scans if not s.exists or s.error]
    if problems:
        return problems, None
    rows = sum(s.rows for _, s in scans)
    if rows == 0:
        return [f"{attr.path} holds no rows; add rows or pick another dataset"], 0
    attr = detect(attr, scans[0][1].sample[0])
    if attr.kind not in STAGE_KINDS[stage]:
        wanted = " or ".join(KIND_NAMES[k] for k in STAGE_KINDS[stage])
        return [f"{attr.path} holds {KIND_NAMES[attr.kind]}; stage={stage} takes {wanted}: pick such a dataset "
                "(or map its columns in dataset_info.json: ranking + chosen/rejected for pairwise, kto_tag for kto)"], \
            rows
    bad, kept, scanned = [], 0, 0
    for f, scan in scans:
        for i, row in enumerate(scan.sample):
            scanned += 1
            try:
                kept += convert(row, attr, stage) is not None
            except RowError as e:
                bad.append(f"{Path(f).name} row {i} {e}" if len(scans) > 1 else f"row {i} {e}")
    if bad:
        more = f" (and {len(bad) - 5} more rows)" if len(bad) > 5 else ""
        how = "map its columns in dataset_info.json" if attr.formatting == "alpaca" else \
            "map its columns and tags in dataset_info.json"
        return [f"{attr.formatting} rows: {'; '.join(bad[:5])}{more}; fix those rows, or {how}"], rows
    if kept == 0 and scanned == rows:
        what = "text" if stage == "pt" else "response"
        return [f"empty after filtering: all {rows} rows have an empty {what}"], 0
    return [], rows


def _check_data_numbers(cfg: Any, n_datasets: int) -> Iterator[Problem]:
    d, t = cfg.data, cfg.train
    # ranges (cutoff_len, max_samples, val_size >= 0, ...): the schema's, checked by validate/ranges.py
    if d.val_size >= 1 and d.val_size != int(d.val_size):
        yield Problem("data.val_size", d.val_size, "use a fraction in [0, 1) or a whole row count, e.g. 0.1 or 50")
    yield from _check_mixing(d, n_datasets)
    if d.streaming:
        if d.packing:
            yield Problem("data.packing", True, "cannot pack a streamed dataset; set data.streaming=false to pack")
        if t.max_steps <= 0:
            yield Problem("data.streaming", True, "a stream has no length; set train.max_steps (e.g. 1000)")
        if 0 < d.val_size < 1:
            yield Problem("data.val_size", d.val_size, "a stream has no length; give a row count, e.g. 100")
    if d.eval_dataset is not None:
        if not dataset_names(d.eval_dataset):
            yield Problem("data.eval_dataset", d.eval_dataset, "name at least one dataset, as in data.dataset "
                          "(e.g. data.eval_dataset=alpaca_demo), or null for none")
        if d.val_size:
            yield Problem("data.eval_dataset", d.eval_dataset, f"and data.val_size={d.val_size:g} both make an "
                          "eval split; keep one: data.val_size=0 (evaluate on eval_dataset) or "
                          "data.eval_dataset=null (split val_size off the training data)")
    if t.eval_strategy not in EVAL_STRATEGIES:
        yield Problem("train.eval_strategy", t.eval_strategy, f"use one of {', '.join(EVAL_STRATEGIES)}")
    elif t.eval_strategy != "no" and not has_eval_split(d):
        yield Problem("train.eval_strategy", t.eval_strategy, "there is no eval split; set data.val_size "
                      "(e.g. 0.1) or data.eval_dataset (e.g. alpaca_demo), or train.eval_strategy=no")


def has_eval_split(d: Any) -> bool:
    return bool(d.val_size) or d.eval_dataset is not None


def _check_mixing(d: Any, n_datasets: int) -> Iterator[Problem]:
    try:
        probs = split_floats(d.interleave_probs)
    except ValueError:
        yield Problem("data.interleave_probs", d.interleave_probs, "give numbers, e.g. '0.7,0.3' or [0.7,0.3]")
        return
    if not probs:
        return
    if d.mix_strategy == MixStrategy.concat:
        yield Problem("data.interleave_probs", d.interleave_probs, "only used when interleaving; set "
                      "data.mix_strategy=interleave_under (or interleave_over), or drop interleave_probs")
    elif len(probs) != n_datasets:
        yield Problem("data.interleave_probs", d.interleave_probs, f"{len(probs)} probabilities for {n_datasets} "
                      "datasets; give one per dataset")
    elif min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
        yield Problem("data.interleave_probs", d.interleave_probs, f"must be >= 0 and sum to 1 (they sum to "
                      f"{sum(probs):g})")
