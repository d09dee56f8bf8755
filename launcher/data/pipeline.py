"""Rows -> tokenized training (and eval) rows, with the datasets library.

    per dataset: load -> first max_samples rows -> convert to the stage's shape (formats.py)
    -> mix (concat | interleave_under | interleave_over, interleave_probs) -> row ids
    -> tokenize with the chat template (preprocessing_num_workers processes; unset: one per 10,000 rows, at
       most one per core) -> eval split (val_size), or
       the eval datasets (data.eval_dataset) through the same steps, concatenated
    -> shape: sft rows as they are, or packed (packing=true); pt documents concatenated and chunked

The TRL stages get rows in their trainers' tokenized formats (STAGE_COLUMNS), tokenized here with the run's
template, so `data.template` and cutoff_len mean the same in every stage and no rank tokenizes again;
grpo/rloo prompts stay text (TRL tokenizes them as it generates), rendered with the same template.

build() returns materialized datasets for the cache (cache.py); stream() returns an IterableDataset that
does the same lazily (streaming=true), nothing cached. Only the worker and `prepare_only` import this.
"""
from __future__ import annotations

import gc
import logging
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from launcher.data.formats import KIND_NAMES, STAGE_KINDS, RowError, convert
from launcher.data.packing import MAX_TABLE_TOKENS, best_fit_bins, chunk_table, pack_rows
from launcher.data.registry import DATA_SUFFIXES, DataError, DatasetAttr, detect, split_floats
from launcher.data.templates import IGNORE_INDEX, TemplateError, encode_answers_many, encode_ids, \
    prompt_segments_many, render_many, token_ids_grouped

log = logging.getLogger("launcher.data")

#: rows per batch for the datasets-library maps
MAP_BATCH = 256
#: rows that pay for one more tokenizing process (starting one, and gathering its rows, cost about as much as
#: tokenizing 10,000 rows in this one: 2 processes are 1.15x faster than one on 20,000 rows, slower on 2,000)
ROWS_PER_WORKER = 10_000
MAX_AUTO_WORKERS = 8
#: the columns of a stage's converted rows (formats.py) and of its tokenized rows (what its trainer reads)
CONVERTED_COLUMNS = {"pt": ("text",), "sft": ("messages",), "rm": ("prompt", "chosen", "rejected"),
                     "dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label"),
                     "ppo": ("prompt", "answer"), "grpo": ("prompt", "answer"), "rloo": ("prompt", "answer")}
STAGE_COLUMNS = {"pt": ("input_ids", "labels"), "sft": ("input_ids", "labels"), "rm": ("chosen_ids", "rejected_ids"),
                 "dpo": ("prompt_ids", "chosen_ids", "rejected_ids"), "kto": ("prompt_ids", "completion_ids", "label"),
                 "ppo": ("input_ids",), "grpo": ("prompt", "answer"), "rloo": ("prompt", "answer")}
#: columns holding token ids (their lengths are a row's tokens)
TOKEN_COLUMNS = ("input_ids", "prompt_ids", "chosen_ids", "rejected_ids", "completion_ids")


@dataclass
class Built:
    train: Any
    eval: Optional[Any]
    stats: dict = field(default_factory=dict)


def load_raw(attr: DatasetAttr, hf_cache: str, streaming: bool = False):
    import datasets

    if attr.source == "disk":
        ds = datasets.load_from_disk(attr.path)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[attr.split]
        return ds.to_iterable_dataset() if streaming else ds
    if attr.source == "file":
        builder = DATA_SUFFIXES[Path(attr.files[0]).suffix]
        return datasets.load_dataset(builder, data_files=list(attr.files), split="train", cache_dir=hf_cache,
                                     streaming=streaming)
    return datasets.load_dataset(attr.path, name=attr.subset, split=attr.split, cache_dir=hf_cache,
                                 streaming=streaming)


def _convert_batch(batch: dict, indices: list[int], attr: DatasetAttr, stage: str, source: int) -> dict:
    out: dict[str, list] = {}
    n = len(indices)
    for j in range(n):
        row = {k: v[j] for k, v in batch.items()}
        try:
            shaped = convert(row, attr, stage)
        except RowError as e:
            raise DataError(f"dataset {attr.name}: row {indices[j]} {e}") from None
        if shaped is None:
            continue
        for k, v in {**shaped, "source": source}.items():
            out.setdefault(k, []).append(v)
    return out or {k: [] for k in CONVERTED_COLUMNS[stage] + ("source",)}


def converted(attr: DatasetAttr, ds, stage: str, source: int, max_samples: Optional[int], num_proc: Optional[int]):
    """One dataset's rows in the stage's shape (first max_samples rows; empty rows filtered out)."""
    from datasets import Dataset

    materialized = isinstance(ds, Dataset)  # else a stream (IterableDataset)
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds)))) if materialized else ds.take(max_samples)
    first = next(iter(ds), None)
    if first is None:
        raise DataError(f"dataset {attr.name} holds no rows")
    attr = detect(attr, first)
    if attr.kind not in STAGE_KINDS[stage]:  # validate saw local files; a hub dataset is seen only here
        raise DataError(f"dataset {attr.name} is {KIND_NAMES[attr.kind]}; stage={stage} takes "
                        f"{' or '.join(KIND_NAMES[k] for k in STAGE_KINDS[stage])}")
    kwargs = dict(batched=True, batch_size=MAP_BATCH, with_indices=True, remove_columns=list(first),
                  fn_kwargs={"attr": attr, "stage": stage, "source": source})
    if materialized:  # in parallel, and without the datasets library's own cache (ours is cache.py)
        kwargs |= dict(num_proc=several(num_proc), load_from_cache_file=False, desc=f"convert {attr.name}")
    return ds.map(_convert_batch, **kwargs), attr


def mix(parts: Sequence, strategy: str, probs: Any, seed: int):
    import datasets

    if len(parts) == 1:
        return parts[0]
    if strategy == "concat":
        return datasets.concatenate_datasets(list(parts))
    stopping = "first_exhausted" if strategy == "interleave_under" else "all_exhausted"
    return datasets.interleave_datasets(list(parts), probabilities=split_floats(probs) or None, seed=seed,
                                        stopping_strategy=stopping)


def _tokenize_batch(batch: dict, indices: list[int], tokenizer, stage: str, template: str, cutoff_len: int,
                    train_on_prompt: bool, mask_history: bool, max_source_length: Optional[int] = None,
                    max_target_length: Optional[int] = None) -> dict:
    """A batch of rows in one tokenizer call (the ids are those of one call per row or segment).

    Python's cyclic garbage collector is paused meanwhile: a batch allocates a few hundred thousand lists
    of ids at once, which would set off full collections over every object of the process (0.2 s each
    with transformers loaded, as long as tokenizing 2,000 rows); the lists hold no cycles and are freed
    by reference counting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _tokenize_rows(batch, indices, tokenizer, stage, template, cutoff_len, train_on_prompt, mask_history,
                              max_source_length, max_target_length)
    finally:
        if enabled:
            gc.enable()


def _tokenize_rows(batch: dict, indices: list[int], tokenizer, stage: str, template: str, cutoff_len: int,
                   train_on_prompt: bool, mask_history: bool, max_source_length: Optional[int],
                   max_target_length: Optional[int]) -> dict:
    if stage not in ("pt", "sft"):
        return _tokenize_trl_batch(batch, indices, tokenizer, stage, template, cutoff_len)
    out: dict[str, list] = {"input_ids": [], "labels": [], "row_id": []}
    if stage == "pt":
        eos = tokenizer.eos_token_id
        for ids, row_id in zip(tokenizer(list(batch["text"]))["input_ids"], indices):
            ids = ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids
            out["input_ids"].append(ids)
            out["labels"].append(ids)
            out["row_id"].append(row_id)
        return out
    conversations = batch["messages"]
    segments = _rendered(lambda rows: render_many(template, tokenizer, rows), conversations, indices)
    grouped = token_ids_grouped(tokenizer, [[text for text, _ in segs] for segs in segments])
    # prompt_len: where the last answer starts (predict generates from input_ids[:prompt_len])
    out["prompt_len"] = []
    for segment_ids, row_id in zip(grouped, indices):
        ids, labels, prompt_len = encode_ids(segment_ids, cutoff_len, train_on_prompt, mask_history,
                                             max_source_length, max_target_length)
        if all(lab == IGNORE_INDEX for lab in labels):
            continue  # nothing left to learn after truncation
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["row_id"].append(row_id)
        out["prompt_len"].append(prompt_len)
    return out


def _rendered(render, rows: list, indices: list[int]) -> list:
    """render(rows); on a TemplateError, the first row that fails alone is named, as one call per row would."""
    try:
        return render(rows)
    except TemplateError:
        for row, row_id in zip(rows, indices):
            try:
                render([row])
            except TemplateError as e:
                raise DataError(f"row {row_id} of the mixture: {e}") from None
        raise


def _trl_rows(rows: list[dict], tokenizer, stage: str, template: str, cutoff_len: int) -> list[Optional[dict]]:
    """Converted rows in their TRL trainer's tokenized format; None for a prompt longer than cutoff_len."""
    prompts = [row["prompt"] for row in rows]
    if stage in ("rm", "dpo"):
        answers = [[row["chosen"][0]["content"], row["rejected"][0]["content"]] for row in rows]
        encoded = encode_answers_many(tokenizer, template, prompts, answers, cutoff_len)
        if stage == "rm":  # RewardTrainer scores whole sequences
            return [{"chosen_ids": p + chosen, "rejected_ids": p + rejected} for p, (chosen, rejected) in encoded]
        return [{"prompt_ids": p, "chosen_ids": chosen, "rejected_ids": rejected} for p, (chosen, rejected) in encoded]
    if stage == "kto":
        encoded = encode_answers_many(tokenizer, template, prompts, [[row["completion"][0]["content"]] for row in rows],
                                      cutoff_len)
        return [{"prompt_ids": p, "completion_ids": completion, "label": row["label"]}
                for (p, (completion,)), row in zip(encoded, rows)]
    texts = prompt_segments_many(tokenizer, template, prompts)
    out: list[Optional[dict]] = []
    for segs, seg_ids, row in zip(texts, token_ids_grouped(tokenizer, texts), rows):
        ids = [i for seg in seg_ids for i in seg]
        if len(ids) > cutoff_len:  # cutting a prompt would cut the header that asks for the answer
            out.append(None)
        elif stage == "ppo":
            out.append({"input_ids": ids})
        else:
            out.append({"prompt": "".join(segs), "answer": row["answer"]})
    return out


def _tokenize_trl_batch(batch: dict, indices: list[int], tokenizer, stage: str, template: str,
                        cutoff_len: int) -> dict:
    out: dict[str, list] = {k: [] for k in STAGE_COLUMNS[stage] + ("row_id",)}
    rows = [{k: v[j] for k, v in batch.items()} for j in range(len(indices))]
    shaped_rows = _rendered(lambda some: _trl_rows(some, tokenizer, stage, template, cutoff_len), rows, indices)
    for shaped, row_id in zip(shaped_rows, indices):
        if shaped is not None:
            for k, v in {**shaped, "row_id": row_id}.items():
                out[k].append(v)
    return out


def tokenize_kwargs(d: Any, stage: str, tokenizer) -> dict:
    return {"tokenizer": tokenizer, "stage": stage, "template": d.template, "cutoff_len": d.cutoff_len,
            "train_on_prompt": d.train_on_prompt, "mask_history": d.mask_history,
            "max_source_length": d.max_source_length, "max_target_length": d.max_target_length}


def lengths_of(ds) -> list[int]:
    """Tokens of each row: the lengths of its token columns summed ([] for rows of text)."""
    import pyarrow.compute as pc

    arrow = ds.with_format("arrow")
    lengths = [pc.list_value_length(arrow[c]).to_numpy() for c in TOKEN_COLUMNS if c in ds.column_names]
    return [int(n) for n in sum(lengths)] if lengths else []


def shape(ds, stage: str, packing: bool, cutoff_len: int):
    """sft: rows as they are, or packed into rows of cutoff_len; pt: chunked (isolated when packing)."""
    from datasets import Dataset

    if stage != "pt" and (stage != "sft" or not packing):
        return ds
    lengths = lengths_of(ds)
    if sum(lengths) > MAX_TABLE_TOKENS:
        key, fix = ("stage=pt", "") if stage == "pt" else ("data.packing=true", "data.packing=false, ")
        raise DataError(f"{key}: the tokenized rows hold {sum(lengths):,} tokens, more than one packed table holds "
                        f"({MAX_TABLE_TOKENS:,}); use {fix}data.streaming=true (read lazily, not cached) or fewer "
                        "rows (data.max_samples)")
    if stage == "pt":
        return Dataset(chunk_table(ds.select_columns(["input_ids", "row_id"]).with_format("arrow")[:], cutoff_len,
                                   isolate=packing))
    bins = best_fit_bins(lengths, cutoff_len)
    bins.sort(key=lambda b: b[0])  # rows in dataset order of their first example
    return Dataset(pack_rows(ds.select_columns(["input_ids", "labels", "row_id"]).with_format("arrow")[:], bins))


def build(d: Any, stage: str, seed: int, tokenizer, attrs: Sequence[DatasetAttr], hf_cache: str,
          eval_attrs: Sequence[DatasetAttr] = ()) -> Built:
    """Every step of the pipeline on map-style datasets; stats record what happened at each. eval_attrs
    (data.eval_dataset) go through the same steps, concatenated, as the eval set instead of a val_size split."""
    import datasets

    datasets.disable_caching()  # the result is cached by cache.py, keyed by content
    datasets.disable_progress_bars()  # rank logs get one line per step instead
    tokenized, resolved, stats = _tokenized(d, stage, seed, tokenizer, attrs, hf_cache, d.mix_strategy, "data.dataset")
    if eval_attrs:  # all of each eval dataset counts (no interleaving: its probabilities are the training mix's)
        evaluation, eval_resolved, eval_stats = _tokenized(d, stage, seed, tokenizer, eval_attrs, hf_cache, "concat",
                                                           "data.eval_dataset")
        train = tokenized
        stats |= {"eval_datasets": eval_stats["datasets"],
                  "eval_datasets_resolved": [a.record() for a in eval_resolved],
                  "rows_tokenized": stats["rows_tokenized"] + eval_stats["rows_tokenized"]}
    else:
        train, evaluation = split_eval(tokenized, d.val_size, seed)
    train = shape(train, stage, d.packing, d.cutoff_len)
    evaluation = shape(evaluation, stage, d.packing, d.cutoff_len) if evaluation is not None else None
    lengths = lengths_of(train)
    stats |= {"datasets_resolved": [a.record() for a in resolved], "train_rows": len(train),
              "eval_rows": len(evaluation) if evaluation is not None else 0,
              "train_tokens": sum(lengths) if lengths else None, "longest_row": max(lengths) if lengths else None}
    return Built(train, evaluation, stats)


def _tokenized(d: Any, stage: str, seed: int, tokenizer, attrs: Sequence[DatasetAttr], hf_cache: str,
               strategy: str, key: str):
    """Load, convert, mix and tokenize the datasets named by `key`: (tokenized rows, resolved attrs, stats)."""
    parts, resolved, stats = [], [], {"datasets": {}}
    for i, attr in enumerate(attrs):
        raw = load_raw(attr, hf_cache)
        part, attr = converted(attr, raw, stage, i, d.max_samples, d.preprocessing_num_workers)
        taken = min(len(raw), d.max_samples) if d.max_samples is not None else len(raw)
        stats["datasets"][attr.name] = {"rows": len(raw), "taken": taken, "filtered": taken - len(part)}
        parts.append(part)
        resolved.append(attr)
    mixed = mix(parts, strategy, d.interleave_probs, seed)
    counts = Counter(mixed.with_format("arrow")["source"].to_pylist())  # a plain column: no per-row formatting
    for i, attr in enumerate(resolved):
        stats["datasets"][attr.name]["in_mixture"] = int(counts.get(i, 0))
    if len(mixed) == 0:
        raise DataError(f"the datasets of {key} hold no row after filtering (empty text or response); check the "
                        "data and data.max_samples")
    workers = several(d.preprocessing_num_workers or auto_workers(len(mixed)))
    with tokenizer_threads(workers):
        tokenized = mixed.map(_tokenize_batch, batched=True, batch_size=MAP_BATCH, with_indices=True,
                              remove_columns=mixed.column_names, fn_kwargs=tokenize_kwargs(d, stage, tokenizer),
                              num_proc=workers, load_from_cache_file=False, desc="tokenize")
    stats |= {"rows_tokenized": len(mixed), "dropped_by_cutoff": len(mixed) - len(tokenized),
              "tokenize_processes": workers or 1}
    if len(tokenized) == 0:
        what = "prompt fits" if stage in ("ppo", "grpo", "rloo") else "row keeps a response token"
        raise DataError(f"{key}: no {what} within data.cutoff_len={d.cutoff_len}; raise it")
    return tokenized, resolved, stats


def several(num_proc: Optional[int]) -> Optional[int]:
    """num_proc for a datasets map: None for one process. datasets treats num_proc=1 as a pool of one: it
    turns the tokenizer's threads off for "forked processes" (there are none) and says so on every map."""
    return num_proc if num_proc is not None and num_proc > 1 else None


def auto_workers(rows: int) -> Optional[int]:
    """Tokenizing processes when data.preprocessing_num_workers is unset: one per ROWS_PER_WORKER rows, at most
    one per usable core (and MAX_AUTO_WORKERS); None (this process alone) below two."""
    n = min(len(os.sched_getaffinity(0)), rows // ROWS_PER_WORKER, MAX_AUTO_WORKERS)
    return n if n > 1 else None


@contextmanager
def tokenizer_threads(num_proc: Optional[int]):
    """The Rust tokenizer's own threads for the batches of one process (a batch's texts encode in parallel:
    1.6x on 2 cores). Ranks run with TOKENIZERS_PARALLELISM=false (plan.py), which the tokenizer reads at each
    call, because DataLoader workers fork later; it is false again before anything forks. Not with
    preprocessing_num_workers: those processes fork from this one, and a fork after the threads ran can hang."""
    if several(num_proc):
        yield
        return
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def split_eval(ds, val_size: float, seed: int):
    if not val_size:
        return ds, None
    test_size = int(val_size) if val_size >= 1 else val_size
    if (test_size if isinstance(test_size, int) else max(1, round(test_size * len(ds)))) >= len(ds):
        raise DataError(f"data.val_size={val_size} leaves no training row out of {len(ds)}; lower it")
    parts = ds.train_test_split(test_size=test_size, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def stream(d: Any, stage: str, seed: int, tokenizer, attrs: Sequence[DatasetAttr], hf_cache: str,
           eval_attrs: Sequence[DatasetAttr] = ()):
    """streaming=true: the same steps lazily, as an IterableDataset; the first val_size rows (a count), or the
    eval datasets read whole, become a materialized eval set. Nothing is cached and nothing is packed."""
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()
    parts = []
    for i, attr in enumerate(attrs):
        part, _ = converted(attr, load_raw(attr, hf_cache, streaming=True), stage, i, d.max_samples, None)
        parts.append(part)
    mixed = mix(parts, d.mix_strategy, d.interleave_probs, seed)
    columns = ["text", "source"] if stage == "pt" else ["messages", "source"]
    tokenized = mixed.map(_tokenize_batch, batched=True, batch_size=MAP_BATCH, with_indices=True,
                          remove_columns=columns, fn_kwargs=tokenize_kwargs(d, stage, tokenizer))
    evaluation = None
    if eval_attrs:
        evaluation = _tokenized(d, stage, seed, tokenizer, eval_attrs, hf_cache, "concat", "data.eval_dataset")[0]
    elif d.val_size:
        evaluation = Dataset.from_list(list(tokenized.take(int(d.val_size))))
        tokenized = tokenized.skip(int(d.val_size))
    train = tokenized.shuffle(seed=seed, buffer_size=d.buffer_size)
    if stage == "pt":
        train = train.map(_chunk_batch, batched=True, batch_size=MAP_BATCH, fn_kwargs={"block": d.cutoff_len})
        if evaluation is not None:
            evaluation = shape(evaluation, stage, False, d.cutoff_len)
    return Built(one_stream(train), evaluation, {"streaming": True})


def one_stream(ds):
    """A datasets stream as a plain torch IterableDataset. accelerate then gives each rank its own slice
    of every global batch of one ordered stream (IterableDatasetShard); handed a datasets stream, it
    would shard it by file instead, splitting the datasets unevenly across ranks and restarting row ids.
    Every rank reads and tokenizes the whole stream: the price of not caching."""
    import torch.utils.data

    class _OneStream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(ds)

        def set_epoch(self, epoch: int) -> None:  # a new shuffle order each epoch, the same on every rank
            ds.set_epoch(epoch)

    return _OneStream()


def _chunk_batch(batch: dict, block: int) -> dict:
    import pyarrow as pa

    docs = pa.table({"input_ids": batch["input_ids"], "row_id": batch["row_id"]})
    return chunk_table(docs, block, isolate=False).to_pydict()

