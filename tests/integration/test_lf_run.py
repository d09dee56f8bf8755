"""A LLaMA-Factory train yaml run for real: `launch lf=FILE` trains the tiny model with 2 gloo ranks."""
from __future__ import annotations

import json

import pytest

from launcher import PROJECT_ROOT
from launcher.schema import load_run_config
from tests.support import TINY_MODEL, run_launch

pytestmark = pytest.mark.integration

LF_YAML = f"""\
### model
model_name_or_path: {TINY_MODEL}

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 4
lora_target: q_proj,v_proj

### dataset
dataset: alpaca_demo
dataset_dir: {PROJECT_ROOT}/data
cutoff_len: 128
max_samples: 32
overwrite_cache: false

### output
logging_steps: 1
save_steps: 100
plot_loss: true
report_to: none

### train
per_device_train_batch_size: 2
gradient_accumulation_steps: 1
learning_rate: 1e-2
max_steps: 4
lr_scheduler_type: constant_with_warmup
warmup_ratio: 0.5
ddp_timeout: 600
"""


def test_lf_yaml_trains_the_tiny_model(tmp_path, tiny_model):
    (tmp_path / "train.yaml").write_text(LF_YAML)
    run = tmp_path / "run"
    r = run_launch("lf=train.yaml", "device=cpu", "gpus=2", f"output_dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "warmup_ratio=0.5 -> train.warmup_ratio=0.5" in r.stdout
    cfg = load_run_config(str(run / "config.yaml"))
    assert cfg.adapter.lora_rank == 4 and cfg.train.learning_rate == 1e-2 and cfg.train.ddp_timeout == 600
    # LLaMA-Factory checkpoints unless told not to: so does the import (the LoRA still trains through it)
    assert cfg.train.gradient_checkpointing is True
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    assert (run / "final" / "adapter_model.safetensors").is_file()
    # warmup over half of the 4 steps: the first steps train below the peak learning rate, the last at it
    lrs = [m["lr"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
           if m.get("lr") is not None]
    assert lrs[0] < 1e-2 and lrs[-1] == pytest.approx(1e-2)
