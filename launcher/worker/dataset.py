"""The training set of the sft stage: alpaca rows rendered with the chat template, prompt masked."""
from __future__ import annotations

import logging
from typing import Any

from launcher.data.alpaca import load_rows, to_messages
from launcher.data.templates import IGNORE_INDEX, encode

log = logging.getLogger(__name__)


def build_sft_dataset(cfg: Any, tokenizer):
    from datasets import Dataset

    d = cfg.data
    rows = load_rows(d.dataset)
    if d.max_samples:
        rows = rows[: d.max_samples]
    features, dropped = [], 0
    for row_id, row in enumerate(rows):
        ids, labels = encode(tokenizer, d.template, to_messages(row), d.cutoff_len, d.train_on_prompt)
        if all(lab == IGNORE_INDEX for lab in labels):
            dropped += 1  # nothing left to learn after truncation
            continue
        features.append({"input_ids": ids, "labels": labels, "row_id": row_id})
    n_tokens = sum(len(f["input_ids"]) for f in features)
    log.info("data: %d rows from %s (%d dropped: no response token within cutoff_len=%d), %d tokens, "
             "template %s", len(features), d.dataset, dropped, d.cutoff_len, n_tokens, d.template)
    return Dataset.from_list(features)
