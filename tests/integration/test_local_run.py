"""The demo for real: `launch` starts torchrun with 2 gloo ranks that train the tiny model with LoRA."""
from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from launcher.checkpoints import is_complete, last_complete_checkpoint
from launcher.data.background import spare_core
from launcher.exitcodes import EXIT_INTERRUPTED
from tests.support import processes_mentioning, run_launch, start_training

pytestmark = pytest.mark.integration

SECRET = "sekret-value-7f3a9"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_model):
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "gpus=2", f"output_dir={run_dir}", "logger=both",
                   "train.dataloader_drop_last=true",
                   cwd=run_dir.parent, env={"WANDB_API_KEY": SECRET, "HF_TOKEN": SECRET})
    return r, run_dir


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_demo_exits_0_and_writes_the_run_dir(demo):
    r, run = demo
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("config.yaml", "overrides.yaml", "plan.json", "launch.sh", "env.json", "metrics.jsonl",
                 "summary.json", "logs/rank0.log", "logs/rank1.log", "final/adapter_model.safetensors",
                 "final/tokenizer.json", "training_loss.png"):
        assert (run / name).is_file(), name
    assert (run / "training_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # rank 0 plots at the end
    env = json.loads((run / "env.json").read_text())
    assert env["packages"]["torch"] and env["packages"]["transformers"] and env["packages"]["hydra-core"]
    assert "sha" in env["git"] and "dirty" in env["git"]
    assert "--nproc-per-node=2" in (run / "launch.sh").read_text()


def test_loss_falls(demo):
    _, run = demo
    losses = [m["loss"] for m in read_jsonl(run / "metrics.jsonl")]
    assert len(losses) >= 5
    assert losses[-1] < losses[0] - 0.1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch_size"] == 8
    assert summary["steps"] == 5 * (116 // 8)  # 5 epochs of 14 full global batches
    assert summary["tokens_per_s"] > 0 and summary["trained_tokens"] > 0
    # LoRA: r x (in + out) per module; q_proj 64->64, v_proj 64->32 (2 kv heads x 16), 2 layers
    assert summary["trainable_params"] == 2 * (8 * (64 + 64) + 8 * (64 + 32))


def test_ranks_train_on_disjoint_rows(demo):
    _, run = demo
    per_rank = []
    for rank in (0, 1):
        text = (run / f"logs/rank{rank}.log").read_text()
        per_rank.append([json.loads(m) for m in re.findall(r"launcher\.rows: rows (\[.*\])", text)])
    steps_per_epoch = 116 // 8
    assert len(per_rank[0]) == len(per_rank[1]) == 5 * steps_per_epoch
    for epoch in range(5):
        window = slice(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        rows0 = {r for batch in per_rank[0][window] for r in batch}
        rows1 = {r for batch in per_rank[1][window] for r in batch}
        assert rows0.isdisjoint(rows1)
        assert len(rows0) == len(rows1) == steps_per_epoch * 4


def test_only_rank_0_logs_and_reports(demo):
    _, run = demo
    assert len(list((run / "tensorboard").rglob("events.out.tfevents.*"))) == 1
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert "summary:" in (run / "logs/rank0.log").read_text()
    assert "summary:" not in (run / "logs/rank1.log").read_text()
    # 2 ranks on 2 cores: no core to spare for a data process, rank 0 tokenizes itself
    assert ("data: preparing in process" in (run / "logs/rank0.log").read_text()) == spare_core(2)


def test_no_secret_is_written(demo):
    _, run = demo
    for path in run.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_final_adapter_loads_with_peft_and_changes_the_logits(demo, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, run = demo
    tok = AutoTokenizer.from_pretrained(run / "final")
    ids = tok("Add the two numbers.", return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, run / "final")
        after = tuned(ids).logits
    assert (after - before).abs().max() > 1e-3


def test_resume_continues_from_the_last_checkpoint(tmp_path, tiny_model):
    run = tmp_path / "run"
    common = ("recipe=tiny_sft_lora", "device=cpu", "gpus=1", f"output_dir={run}", "train.save_steps=3",
              "train.logging_steps=1")
    r = run_launch(*common, "train.max_steps=6", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "single" in (run / "plan.json").read_text()
    # one rank, 2 cores here: its data was prepared by a process of its own while it loaded
    assert ("data: preparing in process" in (run / "logs/rank0.log").read_text()) == spare_core(1)
    r = run_launch(*common, "train.max_steps=10", "resume=true", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-6") and summary["steps"] == 10
    steps = [m["step"] for m in read_jsonl(run / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_launch_leaves_no_rank_behind(tmp_path, tiny_model, sig):
    run = tmp_path / "run"
    proc = start_training(run, cwd=tmp_path)
    assert len(processes_mentioning(str(run))) >= 3  # torchrun + 2 ranks
    proc.send_signal(sig)
    rc = proc.wait(timeout=90)
    # every rank got the signal once, saved the next step's checkpoint and stopped: interrupted, resumable
    assert rc == EXIT_INTERRUPTED
    stop = json.loads((run / "interrupted.json").read_text())
    assert stop["signal"] == sig.name and is_complete(stop["checkpoint"])
    assert last_complete_checkpoint(run / "checkpoints") == Path(stop["checkpoint"])
    deadline = time.monotonic() + 10
    while processes_mentioning(str(run)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(str(run)) == []
    assert not (run / "summary.json").exists()


def test_the_console_shows_progress_lines_and_no_library_noise(demo):
    r, run = demo
    assert re.search(r"^step \d+/70 \(\d+%\) \| loss \d+\.\d{4} \| lr ", r.stdout, re.M), r.stdout[-2000:]
    assert "step 70/70 (100%)" in r.stdout and "{'loss'" not in r.stdout
    console = r.stdout + r.stderr
    for noise in ("Do not forget to share your model", "Setting accelerator to CPU", "FutureWarning"):
        assert noise not in console, noise
    assert "Do not forget to share your model" in (run / "logs/rank0.log").read_text()  # the rank log keeps it


def test_on_a_terminal_rank_0_redraws_one_progress_line(tmp_path, tiny_model):
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "recipe=tiny_sft_lora", "device=cpu", "gpus=2",
                             f"output_dir={tmp_path}/run", "train.max_steps=4", "train.logging_steps=2"],
                            cwd=tmp_path, stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer of the terminal closed it
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=300) == 0
    text = out.decode(errors="replace")
    assert "\r\x1b[2Kstep 4/4 (100%) | loss " in text
    assert not re.search(r"^step \d+/4", text.replace("\r\n", "\n"), re.M)  # no plain lines on a terminal
