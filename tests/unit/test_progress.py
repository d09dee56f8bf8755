"""Rank 0's console: the progress line (live on a terminal, plain lines at the logging steps otherwise) and the
library noise kept off the console (the rank logs keep it)."""
from __future__ import annotations

import io
import logging

from transformers import TrainerState, TrainingArguments

from launcher.worker.history import clock
from launcher.worker.progress import ProgressCallback, progress_line
from launcher.worker.ranklog import for_console


def test_progress_line():
    assert progress_line(12, 70, 1.93412, 1.875e-4, 1234.4, 8.2, 39.7) == \
        "step 12/70 (17%) | loss 1.9341 | lr 1.88e-04 | 1,234 tok/s | 00:08<00:39"
    assert progress_line(0, 70, None, None, None, 0, None) == "step 0/70 (0%) | 00:00<?"
    assert clock(3725) == "1:02:05"


def run_steps(live: bool) -> str:
    out = io.StringIO()
    cb, state = ProgressCallback(out, live=live), TrainerState(max_steps=4, is_world_process_zero=True)
    args = TrainingArguments(output_dir="/tmp/unused", report_to=[])
    cb.on_train_begin(args, state, None)
    for step in range(1, 5):
        state.global_step, state.num_input_tokens_seen = step, 100 * step
        cb.on_step_end(args, state, None)
        if step % 2 == 0:
            cb.on_log(args, state, None, logs={"loss": 2.0 / step, "learning_rate": 1e-4, "epoch": 0.5})
    cb.on_log(args, state, None, logs={"eval_loss": 0.75, "eval_runtime": 0.1})
    cb.on_log(args, state, None, logs={"train_loss": 1.0, "train_runtime": 1.0})  # the end-of-training dict
    cb.on_train_end(args, state, None)
    return out.getvalue()


def test_plain_lines_at_the_logging_steps_without_a_terminal():
    lines = run_steps(live=False).splitlines()
    assert [line.split(" |")[0] for line in lines] == ["step 2/4 (50%)", "step 4/4 (100%)",
                                                         "eval at step 4: eval_loss 0.75"]
    assert "loss 1.0000" in lines[0] and "lr 1.00e-04" in lines[0] and "\r" not in "".join(lines)


def test_one_live_line_on_a_terminal():
    text = run_steps(live=True)
    redraws = text.split("\r\x1b[2K")
    assert sum(r.startswith("step ") for r in redraws) == 6  # each step and each log step, redrawn in place
    assert text.count("\n") == 1  # the eval line only
    assert "step 4/4 (100%) | loss 0.5000" in text and "eval at step 4: eval_loss 0.75\n" in text
    assert text.endswith("\n") and "{'" not in text


def record(name, level, msg):
    return logging.LogRecord(name, level, "x.py", 1, msg, None, None)


def test_noise_stays_off_the_console():
    share = record("transformers.trainer", logging.INFO, "\n\nTraining completed. Do not forget to share your model "
                   "on huggingface.co/models =)\n\n")
    ds_cpu = record("DeepSpeed", logging.WARNING, "Setting accelerator to CPU. If you have GPU ...")
    future = record("py.warnings", logging.WARNING, "/x/modeling_utils.py:3314: FutureWarning: `a` is deprecated")
    assert not for_console(share) and not for_console(ds_cpu) and not for_console(future)
    assert for_console(ds_cpu, uses_deepspeed=True)
    assert for_console(record("py.warnings", logging.WARNING, "x.py:1: UserWarning: something real"))
    assert for_console(record("launcher.worker", logging.INFO, "plots: training_loss.png"))
    assert for_console(record("transformers.trainer", logging.INFO, "***** Running training *****"))
    assert not for_console(record("launcher.rows", logging.INFO, "rows 1,2,3"))
