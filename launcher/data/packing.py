"""Packing: several examples per row, each attending only to itself.

A packed row concatenates examples and restarts position_ids at 0 for each one; transformers reads the
restarts as sequence boundaries (masking_utils.find_packed_sequence_indices for sdpa/eager, varlen
flash-attention), so no token attends across examples, and the first token of each example carries no
label (in an unpacked row nothing predicts it either). Loss per token is then the same as unpacked.
No torch: the pipeline calls it, the tests check it directly.
"""
from __future__ import annotations

import bisect
import heapq
import random
from typing import Sequence

from launcher.data.templates import IGNORE_INDEX


def best_fit_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of total length <= capacity: best-fit decreasing (longest first, each
    into the fullest bin it fits, the first opened of those). Within a bin, indices keep their dataset order.
    Open bins are kept by room left (a sorted list of the distinct rooms, a heap of bins for each), so a
    step costs at most the number of distinct rooms (<= capacity), not the number of open bins."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    rooms: list[int] = []  # sorted: the rooms left that some open bin has
    by_room: dict[int, list[int]] = {}  # room left -> heap of the indices of the bins with it
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example {i} has {n} tokens, more than the row capacity {capacity}")
        at = bisect.bisect_left(rooms, n)
        if at < len(rooms):
            room = rooms[at]
            b = heapq.heappop(by_room[room])
            if not by_room[room]:
                del by_room[room], rooms[at]
            bins[b].append(i)
        else:
            room, b = capacity, len(bins)
            bins.append([i])
        if room - n > 0:
            if room - n not in by_room:
                by_room[room - n] = []
                bisect.insort(rooms, room - n)
            heapq.heappush(by_room[room - n], b)
    return [sorted(b) for b in bins]


#: tokens one packed or chunked table holds: pyarrow's list offsets are int32 (the pipeline checks)
MAX_TABLE_TOKENS = 2**31 - 1


def pack_rows(table, bins: Sequence[Sequence[int]]):
    """One row per bin of `table`'s rows (a pyarrow Table with input_ids, labels, row_id): the bin's examples
    concatenated, position_ids restarting at 0 for each, each first label IGNORE_INDEX, row_id listing them.
    Columnar (pyarrow and numpy): 20,000 alpaca examples pack in 0.2 s where row by row took 1.2 s."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    order = np.array([i for b in bins for i in b], dtype=np.int64)
    ids, labels, row_ids = (table[c].take(order).combine_chunks() for c in ("input_ids", "labels", "row_id"))
    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths  # of each example in the bins' tokens, end to end
    last = np.cumsum([len(b) for b in bins], dtype=np.int64)  # one past each bin's last example
    token_offsets = np.concatenate([[0], ends[last - 1]]).astype(np.int64)
    flat_labels = labels.flatten().to_numpy(zero_copy_only=False).copy()
    flat_labels[starts[lengths > 0]] = IGNORE_INDEX
    positions = _positions(starts, int(ends[-1]) if len(ends) else 0)

    return pa.table({"input_ids": _lists(ids.flatten(), token_offsets),
                     "labels": _lists(pa.array(flat_labels, labels.type.value_type), token_offsets),
                     "position_ids": _lists(pa.array(positions), token_offsets),
                     "row_id": _lists(row_ids, np.concatenate([[0], last]).astype(np.int64))})


def chunk_table(table, block: int, isolate: bool):
    """Continued pretraining: documents (a pyarrow Table with input_ids, row_id) concatenated and cut into
    rows of `block` tokens (the last one shorter), row_id listing the documents each row holds a piece of.
    isolate: every document piece restarts its position_ids and its first token has no label, so attention
    stays inside documents (packing=true); else documents see their predecessors, as in classic pretraining.
    Columnar, like pack_rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = table["input_ids"].combine_chunks()
    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    doc_ids = table["row_id"].to_numpy()[lengths > 0]  # an empty document is in no row
    lengths = lengths[lengths > 0]
    flat = ids.flatten()
    total = len(flat)
    doc_starts = np.cumsum(lengths) - lengths
    row_starts = np.arange(0, total, block, dtype=np.int64)
    # each row's documents: from the one holding its first token to the one holding its last
    first = np.searchsorted(doc_starts, row_starts, side="right") - 1
    last = np.searchsorted(doc_starts, np.minimum(row_starts + block, total) - 1, side="right") - 1
    per_row = last - first + 1
    doc_offsets = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64)
    docs = np.repeat(first, per_row) + np.arange(doc_offsets[-1]) - np.repeat(doc_offsets[:-1], per_row)
    labels = flat.to_numpy(zero_copy_only=False).astype(np.int64)
    token_offsets = np.append(row_starts, total)
    columns = {"input_ids": _lists(flat, token_offsets)}
    if isolate:
        starts = np.zeros(total, dtype=bool)
        starts[doc_starts] = starts[row_starts] = True  # a document's piece starts where it or a row does
        pieces = np.flatnonzero(starts)
        labels[pieces] = IGNORE_INDEX
        positions = _positions(pieces, total)
    columns |= {"labels": _lists(pa.array(labels), token_offsets),
                "row_id": _lists(pa.array(doc_ids[docs], pa.int64()), doc_offsets)}
    if isolate:
        columns["position_ids"] = _lists(pa.array(positions), token_offsets)
    return pa.table(columns)


def _positions(starts, total: int):
    """Each of `total` tokens' position in its piece, the pieces starting at `starts` (sorted, the first at 0)."""
    import numpy as np

    return np.arange(total, dtype=np.int64) - np.repeat(starts, np.diff(np.append(starts, total)))


def _lists(values, offsets):
    """A pyarrow list array: row i holds values[offsets[i]:offsets[i + 1]]."""
    import pyarrow as pa

    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


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
