"""QLoRA for real: a 4-bit nf4 base under LoRA on a CUDA GPU (bitsandbytes), then chat and export.
Skipped where no CUDA GPU or no bitsandbytes is present (on CPU, validate refuses qlora: see the unit tests)."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.support import run_launch, run_module

pytestmark = [
    pytest.mark.integration, pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes"),
]


def test_qlora_4bit_trains_chats_and_exports(tmp_path, tiny_model):
    run = tmp_path / "run"
    r = run_launch("recipe=tiny_sft_lora", "adapter=qlora", "adapter.lora_target=all", "device=cuda", "gpus=1",
                   f"output_dir={run}", "train.max_steps=20", "train.logging_steps=2", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (run / "logs/rank0.log").read_text()
    assert "quantized base: {'load_in_4bit': True, 'bnb_4bit_quant_type': 'nf4'" in log
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["adapter"] == "qlora" and summary["trainable_params"] == 18_688
    r = run_module("launcher.chat", str(run), "--prompt", "Add 2 and 3.", "--temperature", "0",
                   "--max_new_tokens", "8")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_module("launcher.export", str(run), "--export_dir", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "merged/model.safetensors").is_file()
