"""A sample of the combination matrix's trainable cells, trained for real: every stage under ZeRO-3 on 2 CPU
ranks (2 steps each, a few rows), with the adapters spread over them, and pure_bf16 under ZeRO stage 0.
The cells the matrix refuses are covered by tests/unit/test_matrix.py; the longer runs of each stage (loss
and metric trends) by test_stages.py and test_zero.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import run_launch

pytestmark = pytest.mark.integration

STEPS = 2
SHORT = ("device=cpu", "gpus=2", f"train.max_steps={STEPS}", "train.logging_steps=1", "train.save_steps=1000",
         "data.max_samples=32")


def train(tmp_path_factory, name: str, *args: str) -> Path:
    run = tmp_path_factory.mktemp(name) / "run"
    r = run_launch(*SHORT, f"output_dir={run}", *args, cwd=run.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return run


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def sft3(tmp_path_factory, tiny_model, deepspeed_ops):
    return train(tmp_path_factory, "sft3", "recipe=tiny_sft_lora", "zero=3")


@pytest.fixture(scope="module")
def rm3(tmp_path_factory, sft3):
    """rm under ZeRO-3 after sft: the sft LoRA is merged into the base (whole weights, not a rank's empty
    partition), and the reward statistics are a forward over sharded weights, which every rank joins."""
    # Before the fix rank 0 waited in that forward for the others' shards until the collective timed out.
    return train(tmp_path_factory, "rm3", "recipe=tiny_rm", "zero=3", "train.ddp_timeout=300",
                 f"adapter.adapter_name_or_path={sft3}/final", "adapter.create_new_adapter=true")


#: stage -> (cell, launch arguments): with sft3 and rm3 every stage under ZeRO-3, the adapters spread over them
CELLS = {
    "pt": ("pt full packing zero=3",
           ("recipe=tiny_pt_lora", "adapter=full", "data.packing=true", "zero=3")),
    "dpo": ("dpo full zero=3 (a reference model loaded under ZeRO-3)",
            ("recipe=tiny_dpo_lora", "adapter=full", "zero=3")),
    "kto": ("kto lora zero=3_offload", ("recipe=tiny_kto_lora", "zero=3_offload")),
    "ppo": ("ppo lora zero=3 scored by the ZeRO-3 rm run",
            ("recipe=tiny_ppo_lora", "zero=3", "stage.ppo_score_norm=true", "stage.ppo_epochs=1")),
    "grpo": ("grpo lora zero=3", ("recipe=tiny_grpo_lora", "zero=3")),
    "rloo": ("rloo freeze zero=3 with a reward function and the rm run",
             ("recipe=tiny_grpo_lora", "stage=rloo", "adapter=freeze", "stage.reward_funcs=[match]", "zero=3")),
}


def test_sft_and_rm_after_it_under_zero3(sft3, rm3):
    for run, stage in ((sft3, "sft"), (rm3, "rm")):
        s = summary(run)
        assert (s["stage"], s["zero_stage"], s["world_size"], s["steps"]) == (stage, 3, 2, STEPS)
    assert f"lora: merged adapter {sft3}/final into the base" in (rm3 / "logs/rank1.log").read_text()
    s = summary(rm3)
    assert s["reward_std"] > 0 and s["reward_mean"] == s["reward_mean"]  # finite, not NaN
    assert (rm3 / "final/adapter_model.safetensors").is_file()


@pytest.mark.parametrize("stage", list(CELLS))
def test_every_stage_trains_under_zero3(stage, tmp_path_factory, tiny_model, deepspeed_ops, request):
    _, args = CELLS[stage]
    needs_rm = stage in ("ppo", "rloo")
    rm = request.getfixturevalue("rm3") if needs_rm else None
    run = train(tmp_path_factory, f"{stage}3", *args, *((f"stage.reward_model={rm}",) if rm else ()))
    s = summary(run)
    assert (s["stage"], s["zero_stage"], s["world_size"], s["steps"]) == (stage, 3, 2, STEPS)
    assert len(s["peak_memory_mb_per_rank"]) == 2
    (weights,) = (run / "final").glob("*.safetensors")
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:  # gathered from the ranks' partitions, not a rank's empty slice
        assert f.keys() and all(min(f.get_slice(k).get_shape() or [1]) > 0 for k in f.keys())


def test_pure_bf16_under_zero0_keeps_weights_and_adam_states_in_bf16(tmp_path_factory, tiny_model, deepspeed_ops):
    import torch

    run = train(tmp_path_factory, "pure0", "recipe=tiny_sft_lora", "adapter=full", "precision=pure_bf16", "zero=0",
                f"train.save_steps={STEPS}")
    s = summary(run)
    assert (s["precision"], s["zero_stage"], s["steps"]) == ("pure_bf16", 0, STEPS)
    ds = json.loads((run / "ds_config.json").read_text())
    assert ds["bf16"]["enabled"] is False and ds["fp16"]["enabled"] is False  # no DeepSpeed mixed precision
    (states,) = (run / "checkpoints").glob(f"checkpoint-{STEPS}/global_step{STEPS}/mp_rank_00_model_states.pt")
    saved = torch.load(states, map_location="cpu", weights_only=False)
    weights = saved["module"]
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.bfloat16}
    adam = [v for st in saved["optimizer"]["state"].values() for k, v in st.items() if k in ("exp_avg", "exp_avg_sq")]
    assert adam and {t.dtype for t in adam} == {torch.bfloat16}  # no fp32 master copy, no fp32 moments
