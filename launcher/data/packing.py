"""Packing: several examples per row, each attending only to itself.

A packed row concatenates examples and restarts position_ids at 0 for each one; transformers reads the
restarts as sequence boundaries (masking_utils.find_packed_sequence_indices for sdpa/eager, varlen
flash-attention), so no token attends across examples, and the first token of each example carries no
label (in an unpacked row nothing predicts it either). Loss per token is then the same as unpacked.
Pure python (no torch): the pipeline calls it, the tests check it directly.
"""
from __future__ import annotations

import bisect
import random
from typing import Iterable, Iterator, Sequence

from launcher.data.templates import IGNORE_INDEX


def best_fit_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of total length <= capacity: best-fit decreasing (longest first, each
    into the fullest bin it fits). Within a bin, indices keep their dataset order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (room left, bin index)
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example {i} has {n} tokens, more than the row capacity {capacity}")
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            room, b = free.pop(at)
            bins[b].append(i)
            if room - n > 0:
                bisect.insort(free, (room - n, b))
        else:
            bins.append([i])
            if capacity - n > 0:
                bisect.insort(free, (capacity - n, len(bins) - 1))
    return [sorted(b) for b in bins]


def packed_row(examples: Sequence[dict]) -> dict:
    """One row from examples with input_ids, labels and row_id: position_ids restart per example."""
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for ex in examples:
        n = len(ex["input_ids"])
        ids += ex["input_ids"]
        labels += [IGNORE_INDEX] + list(ex["labels"][1:])
        positions += range(n)
    return {"input_ids": ids, "labels": labels, "position_ids": positions,
            "row_id": [ex["row_id"] for ex in examples]}


def chunk_documents(docs: Iterable[dict], block: int, isolate: bool) -> Iterator[dict]:
    """Continued pretraining: documents (input_ids, row_id) concatenated and cut into rows of `block`
    tokens (the last one shorter). isolate: every document piece restarts its position_ids and its first
    token has no label, so attention stays inside documents (packing=true); else documents see their
    predecessors, as in classic pretraining."""
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    row_ids: list[int] = []

    def flush() -> dict:
        row = {"input_ids": ids[:], "labels": labels[:], "row_id": row_ids[:]}
        if isolate:
            row["position_ids"] = positions[:]
        ids.clear(), labels.clear(), positions.clear(), row_ids.clear()
        return row

    for doc in docs:
        tokens = list(doc["input_ids"])
        while tokens:
            take = tokens[: block - len(ids)]
            tokens = tokens[len(take):]
            ids.extend(take)
            labels.extend([IGNORE_INDEX] + take[1:] if isolate else take)
            positions.extend(range(len(take)))
            if not row_ids or row_ids[-1] != doc["row_id"]:
                row_ids.append(doc["row_id"])
            if len(ids) == block:
                yield flush()
    if ids:
        yield flush()


def non_pad_share(lengths: Sequence[int], batch_size: int, seed: int = 0) -> float:
    """Share of real tokens when rows are batched in random order, batch_size at a time, and each batch is
    padded to its longest row (what the Trainer's sampler and the collator do)."""
    if not lengths:
        return 0.0
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    real = padded = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return real / padded
