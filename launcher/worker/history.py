"""The whole run's history for summary.json, from attempts.jsonl and metrics.jsonl (both appended across
attempts): every attempt, the first attempt's first loss, and tokens/s over every attempt's training time.

Pure: events and metrics rows in, numbers out.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Optional


def metrics_rows(text: str) -> list[dict]:
    """metrics.jsonl's rows (a torn last line, from a kill mid-write, is skipped)."""
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def attempts(events: Iterable[dict], rows: list[dict]) -> list[dict[str, Any]]:
    """One entry per training attempt (a train_begin event), with its end: the train_end event, else (the
    ranks were killed) its last metrics row. Exit events (launch.sh's, one per node) of the same launch and restart
    index are attached; an exit matching no attempt is an attempt that died before training began."""
    out: list[dict[str, Any]] = []
    current: Optional[dict[str, Any]] = None
    for e in events:
        kind = e.get("event")
        if kind == "launch":  # a new launch into the run dir: what follows is not the previous attempt's
            current = None
        elif kind == "train_begin":
            current = {"time": e.get("time"), "restart": e.get("restart"), "slurm_restart": e.get("slurm_restart"),
                       "host": e.get("host"), "world_size": e.get("world_size"),
                       "resumed_from": e.get("resumed_from"), "start_step": e.get("step"),
                       "end_time": None, "end_step": None, "outcome": None, "exits": []}
            out.append(current)
        elif kind == "train_end" and current is not None and current["outcome"] is None:
            current.update(end_time=e.get("time"), end_step=e.get("step"), outcome=e.get("outcome"),
                           **{k: e[k] for k in ("early_stopped_at",) if k in e})
        elif kind == "exit":
            exit_ = {k: e.get(k) for k in ("time", "node", "exit_code", "reason", "failed_rank", "failed_host")}
            if current is None or current["restart"] != e.get("restart"):
                current = {"time": e.get("time"), "restart": e.get("restart"), "slurm_restart": None,
                           "host": e.get("failed_host"), "world_size": None, "resumed_from": None,
                           "start_step": None, "end_time": None, "end_step": None, "outcome": None, "exits": []}
                out.append(current)
            current["exits"].append(exit_)
    for i, a in enumerate(out):
        if a["end_time"] is None and a["start_step"] is not None:
            # killed: it trained until its last metrics row
            nxt = out[i + 1]["time"] if i + 1 < len(out) else None
            mine = [r for r in rows if "time" in r and r["time"] >= a["time"] and (nxt is None or r["time"] < nxt)]
            if mine:
                a["end_time"], a["end_step"] = mine[-1]["time"], mine[-1].get("step")
        if a["outcome"] is None:
            a["outcome"] = a["exits"][0]["reason"] if a["exits"] and a["exits"][0].get("reason") else "killed"
        a["train_time_s"] = round(a["end_time"] - a["time"], 3) \
            if a["end_time"] is not None and a["time"] is not None else 0.0
    return out


def whole_run(events: Iterable[dict], rows: list[dict], trained_tokens: Optional[int]) -> dict[str, Any]:
    """summary.json's entries about the whole run: first and final loss, training time and tokens/s over
    every attempt (trained tokens count once; time spent on steps redone after a failure counts too)."""
    history = attempts(events, rows)
    losses = [r["loss"] for r in rows if "loss" in r]
    train_time = round(sum(a["train_time_s"] for a in history), 3)
    return {
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_time_s": train_time,
        "tokens_per_s": round(trained_tokens / train_time, 1) if trained_tokens is not None and train_time else None,
        "attempts": history,
    }


def clock(seconds: float) -> str:
    """A duration as MM:SS, or H:MM:SS from an hour (the progress line, launch-runs)."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"
