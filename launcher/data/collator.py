"""Pads a batch and records which rows each rank trained on (row ids in the rank's log)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from launcher.data.templates import IGNORE_INDEX

log = logging.getLogger("launcher.rows")


@dataclass
class PaddingCollator:
    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        log.info("rows %s", [f["row_id"] for f in features])
        width = max(len(f["input_ids"]) for f in features)
        ids, labels, mask = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}
