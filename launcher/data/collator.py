"""Pads a batch and records which rows each rank trained on (row ids in the rank's log).

Packed rows (with position_ids) are padded with a position run of their own and get no attention_mask:
transformers then reads sequence boundaries from the position_ids restarts (a 2D attention_mask would
switch that off), and the padding, last in its row, is seen by no real token.
"""
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
        if "row_id" in features[0]:  # training rows; a packed row's row_id lists the rows packed into it
            log.info("rows %s", [f["row_id"] for f in features])
        width = max(len(f["input_ids"]) for f in features)
        packed = "position_ids" in features[0]
        ids, labels, mask, positions = [], [], [], []
        for f in features:
            n = len(f["input_ids"])
            pad = width - n
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            if packed:
                positions.append(list(f["position_ids"]) + list(range(pad)))
            else:
                mask.append([1] * n + [0] * pad)
        batch = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
        if packed:
            batch["position_ids"] = torch.tensor(positions)
        else:
            batch["attention_mask"] = torch.tensor(mask)
        return batch
