"""Rank 0's progress on the console: one live line on a terminal (redrawn each step), a plain line per logging
step otherwise (CI, Slurm logs). Replaces transformers' PrinterCallback (raw dicts); metrics.jsonl keeps every
number."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from transformers import TrainerCallback

from launcher.worker.history import clock


def progress_line(step: int, total: int, loss: Optional[float], lr: Optional[float], tokens_per_s: Optional[float],
                  elapsed: float, remaining: Optional[float]) -> str:
    """`step 12/70 (17%) | loss 1.9341 | lr 1.88e-04 | 1,234 tok/s | 00:08<00:39`"""
    parts = [f"step {step}/{total} ({100 * step // total if total else 0}%)"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if lr is not None:
        parts.append(f"lr {lr:.2e}")
    if tokens_per_s is not None:
        parts.append(f"{tokens_per_s:,.0f} tok/s")
    parts.append(f"{clock(elapsed)}<{clock(remaining) if remaining is not None else '?'}")
    return " | ".join(parts)


class ProgressCallback(TrainerCallback):
    def __init__(self, stream: TextIO = sys.stdout, live: Optional[bool] = None):
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.loss: Optional[float] = None
        self.lr: Optional[float] = None
        self.start: Optional[tuple[float, int, int]] = None  # time, step, tokens when this attempt began
        self.drawn = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = (time.monotonic(), state.global_step, state.num_input_tokens_seen or 0)

    def line(self, state) -> str:
        t0, step0, tokens0 = self.start or (time.monotonic(), 0, 0)
        elapsed = time.monotonic() - t0
        done = state.global_step - step0
        remaining = elapsed / done * (state.max_steps - state.global_step) if done > 0 else None
        tokens = (state.num_input_tokens_seen or 0) - tokens0
        return progress_line(state.global_step, state.max_steps, self.loss, self.lr,
                             tokens / elapsed if tokens and elapsed > 0 else None, elapsed, remaining)

    def on_step_end(self, args, state, control, **kwargs):
        if self.live and state.is_world_process_zero:
            self.stream.write("\r\x1b[2K" + self.line(state))
            self.stream.flush()
            self.drawn = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "train_loss" in logs:
            return
        evals = {k: v for k, v in logs.items() if k.startswith("eval_") and isinstance(v, (int, float))}
        if evals:
            text = f"eval at step {state.global_step}: " + ", ".join(f"{k} {v:.4g}" for k, v in evals.items()
                                                                      if not k.endswith(("_runtime", "per_second")))
            self._say(text)
            return
        self.loss = logs.get("loss", self.loss)
        self.lr = logs.get("learning_rate", self.lr)
        if self.live:  # the Trainer logs after on_step_end: redraw with the new loss
            self.on_step_end(args, state, control)
        else:
            self._say(self.line(state))

    def _say(self, text: str) -> None:
        """A line of its own; on a terminal the live line is cleared first and redrawn at the next step."""
        self.stream.write(("\r\x1b[2K" if self.drawn else "") + text + "\n")
        self.stream.flush()
        self.drawn = False

    def on_train_end(self, args, state, control, **kwargs):
        if self.live and self.drawn and state.is_world_process_zero:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
