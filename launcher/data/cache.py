"""Tokenize once: a cache of tokenized datasets keyed by a hash of everything that decides its content.

    <cache_dir>/<key>/         train/ eval/ meta.json   (appears whole: built in a temp dir, then renamed)
    <cache_dir>/<key>.lock     held by whoever builds <key>
    <cache_dir>/hf/            the datasets library's own cache of the raw files

The key hashes the data files' bytes, the tokenizer (vocabulary, special tokens, chat template), the
template, cutoff_len, packing, stage, max_samples, val_size (or the eval datasets), mixing, masking and the
seed. On each node local rank 0 (or `launch ... prepare_only=true`, before any allocation) builds under the
lock (in a process of its own while it loads its model, where the node has a core to spare: background.py);
the other ranks poll until the cache is there, and give up with a clear message after data.cache_timeout_s
instead of hanging in a collective. A second launch with the same inputs tokenizes nothing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from launcher.data import scratch
from launcher.data.packing import non_pad_share
from launcher.data.registry import DatasetAttr, DataError, resolve_all, split_floats

log = logging.getLogger("launcher.data")

#: bump when the pipeline's output changes for the same inputs
CACHE_VERSION = 2  # 2: sft rows carry prompt_len (predict)
#: how often a waiting rank looks for the finished cache (meta.json): every 50 ms for the first 10 s, since
#: every rank waits for the last one to start, then every second during a long tokenization
POLL_S, POLL_SLOW_AFTER_S, POLL_SLOW_S = 0.05, 10.0, 1.0


@dataclass
class Prepared:
    train: Any
    eval: Optional[Any]
    #: what the run dir records (data.json): the cache used, its inputs and the pipeline's counts
    record: dict


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """Everything about a tokenizer that changes token ids: its serialized model (or vocabulary), special
    tokens and chat template. Works the same for a local directory and a hub download."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())
    parts = {"class": type(tokenizer).__name__, "vocab": vocab, "chat_template": tokenizer.chat_template,
             "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
             "ids": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def dataset_key(attr: DatasetAttr) -> dict:
    """A dataset as the key sees it: its files' bytes and how they are read, not where they lie (moving the
    data keeps the cache); a hub dataset is known by its name, subset and split only."""
    record = attr.record()
    local = attr.source != "hub" or attr.files
    if attr.source == "disk":
        files = sorted(str(p) for p in Path(attr.path).rglob("*") if p.is_file())
    else:
        files = list(attr.files)
    record["digests"] = [file_digest(f) for f in files]
    for k in ("name", "files") + (("path",) if local else ()):
        record.pop(k)
    return record


def key_inputs(d: Any, stage: str, seed: int, attrs: Sequence[DatasetAttr], tokenizer,
               eval_attrs: Sequence[DatasetAttr] = ()) -> dict:
    # eval datasets only when named: the keys of caches without them stay what they were
    evaluation = {"eval_datasets": [dataset_key(a) for a in eval_attrs]} if eval_attrs else {}
    return {
        "version": CACHE_VERSION, "stage": stage, "seed": seed, "template": d.template,
        "cutoff_len": d.cutoff_len, "packing": d.packing, "max_samples": d.max_samples, "val_size": d.val_size,
        "mix_strategy": str(getattr(d.mix_strategy, "value", d.mix_strategy)),
        "interleave_probs": split_floats(d.interleave_probs), "train_on_prompt": d.train_on_prompt,
        "mask_history": d.mask_history, "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_source_length": d.max_source_length, "max_target_length": d.max_target_length,
        "datasets": [dataset_key(a) for a in attrs], **evaluation,
    }


def cache_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def _complete(path: Path) -> Optional[dict]:
    meta = path / "meta.json"
    return json.loads(meta.read_text()) if meta.is_file() else None


def _build_into(path: Path, build, meta: dict) -> dict:
    """build() -> Built, saved to a temp dir next to path, renamed into place (replacing an old one)."""
    root = path.parent
    for stale in root.glob(f".tmp-{path.name}-*"):  # left by a build that was killed: we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{path.name}-{os.getpid()}"
    try:
        with scratch.map_files():  # the maps' intermediate files, gone once saved (launcher.data.scratch)
            built = build()
            built.train.save_to_disk(str(tmp / "train"))
            if built.eval is not None:
                built.eval.save_to_disk(str(tmp / "eval"))
        meta = {**meta, **built.stats, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if path.exists():
            old = root / f".old-{path.name}-{os.getpid()}"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _wait_for(path: Path, timeout_s: float, run_dir: Optional[str], rank: int) -> dict:
    """A rank that does not build polls until the cache is complete (and, with overwrite_cache, rebuilt for
    this run) — a file check, not a collective, so a slow tokenization never trips an NCCL timeout."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        meta = _complete(path)
        if meta is not None and (run_dir is None or meta.get("built_for") == run_dir):
            return meta
        if time.monotonic() > deadline:
            raise DataError(f"rank {rank} waited {timeout_s:.0f} s for local rank 0 to tokenize into {path} "
                            "and gave up; is rank 0 still tokenizing (see logs/rank0.log)? Raise "
                            "data.cache_timeout_s, or tokenize first with `launch ... prepare_only=true`")
        time.sleep(POLL_S if time.monotonic() - started < POLL_SLOW_AFTER_S else POLL_SLOW_S)


@dataclass
class Located:
    """A complete cache entry, and how many rows this rank (or its background process) tokenized into it."""
    path: str
    inputs: dict
    meta: dict
    tokenized_here: int


def _sources(cfg: Any):
    """cfg's datasets, its eval datasets and the cache's root (created)."""
    d = cfg.data
    attrs = resolve_all(d.dataset, d.dataset_dir)
    eval_attrs = resolve_all(d.eval_dataset, d.dataset_dir, "data.eval_dataset")
    root = Path(d.cache_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return attrs, eval_attrs, root


def locate(cfg: Any, tokenizer, *, local_rank: int = 0, rank: int = 0, run_dir: Optional[str] = None) -> Located:
    """The complete cache entry of cfg's data: local rank 0 builds it under the lock when it is missing (or
    overwrite_cache asks for a new one), the other ranks wait for it."""
    from filelock import FileLock, Timeout

    from launcher.data import pipeline

    d, stage = cfg.data, str(getattr(cfg.stage.name, "value", cfg.stage.name))
    attrs, eval_attrs, root = _sources(cfg)
    inputs = key_inputs(d, stage, cfg.seed, attrs, tokenizer, eval_attrs)
    key = cache_key(inputs)
    path = root / key
    if local_rank != 0:
        meta = _wait_for(path, d.cache_timeout_s, run_dir if d.overwrite_cache else None, rank)
        return Located(str(path), inputs, meta, 0)
    tokenized_here = 0
    try:
        with FileLock(str(root / f"{key}.lock"), timeout=d.cache_timeout_s):
            meta = _complete(path)
            if meta is None or (d.overwrite_cache and (run_dir is None or meta.get("built_for") != run_dir)):
                started = time.perf_counter()
                meta = _build_into(path, lambda: pipeline.build(d, stage, cfg.seed, tokenizer, attrs,
                                                                str(root / "hf"), eval_attrs),
                                   {"key": key, "inputs": inputs, "built_for": run_dir})
                tokenized_here = meta["rows_tokenized"]
                log.info("data: tokenized %d rows in %.1f s (%d process%s)", tokenized_here,
                         time.perf_counter() - started, meta["tokenize_processes"],
                         "es" if meta["tokenize_processes"] > 1 else "")
    except Timeout:
        raise DataError(f"waited {d.cache_timeout_s} s for the lock {root / key}.lock held by another "
                        "launch building the same cache; raise data.cache_timeout_s, or remove the lock "
                        "if no launch is running") from None
    return Located(str(path), inputs, meta, tokenized_here)


def prepare(cfg: Any, tokenizer, *, local_rank: int = 0, rank: int = 0, run_dir: Optional[str] = None,
            located: Optional[Located] = None) -> Prepared:
    """The training (and eval) rows of cfg: read from the cache, built first if it is not there (unless
    `located` says where a background process built it: launcher.data.background)."""
    import datasets

    from launcher.data import pipeline

    d, stage = cfg.data, str(getattr(cfg.stage.name, "value", cfg.stage.name))
    if d.streaming:
        attrs, eval_attrs, root = _sources(cfg)
        built = pipeline.stream(d, stage, cfg.seed, tokenizer, attrs, str(root / "hf"), eval_attrs)
        log.info("data: streaming %s (tokenized on the fly, not cached)", ", ".join(a.name for a in attrs))
        return Prepared(built.train, built.eval, {"streaming": True, "cache_path": None, "rows_tokenized_here": None,
                                                   "datasets_resolved": [a.record() for a in attrs]})
    if located is None:
        located = locate(cfg, tokenizer, local_rank=local_rank, rank=rank, run_dir=run_dir)
    path, meta, tokenized_here = Path(located.path), located.meta, located.tokenized_here
    log.info("data: %d rows tokenized on this rank; %s cache %s", tokenized_here,
             "built" if tokenized_here else "read", path)
    train = datasets.load_from_disk(str(path / "train"))
    evaluation = datasets.load_from_disk(str(path / "eval")) if (path / "eval").is_dir() else None
    # padding of the Trainer's batches (pt, sft); TRL's collators pad their own columns. Only rank 0 records it.
    share = non_pad_share(pipeline.lengths_of(train), cfg.train.per_device_train_batch_size, cfg.seed) \
        if stage in ("pt", "sft") and rank == 0 else None
    record = {**{k: v for k, v in meta.items() if k != "inputs"}, "cache_path": str(path),
              "cache_hit": tokenized_here == 0, "rows_tokenized_here": tokenized_here,
              "non_pad_share": round(share, 4) if share is not None else None,
              "inputs": {k: v for k, v in located.inputs.items() if k != "datasets"}}
    return Prepared(train, evaluation, record)
