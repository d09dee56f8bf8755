"""Alpaca rows (instruction, input, output, optional system and history) as role/content messages."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_rows(path: str) -> list[dict[str, Any]]:
    p = Path(path).expanduser()
    if p.suffix == ".jsonl":
        return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return json.loads(p.read_text(encoding="utf-8"))


def to_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for user, answer in row.get("history") or []:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    prompt = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
