"""Real DeepSpeed on 2 CPU ranks: ZeRO-2 through torchrun, ZeRO-3 through the deepspeed launcher, ZeRO-3 with
CPU offload, resume from a ZeRO checkpoint, and two "nodes" on this machine through a hostfile."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.checkpoints import MARKER
from tests.support import processes_mentioning, run_launch, shm_buffers_left, wait_until_training

pytestmark = pytest.mark.integration

TINY = ("recipe=tiny_sft_lora", "device=cpu", "train.logging_steps=1", "train.dataloader_drop_last=true")
FULL = ("adapter=full", "train.learning_rate=1e-3")
STEPS = 8


def launch_in(tmp_path_factory, name: str, *args: str):
    run = tmp_path_factory.mktemp(name) / "run"
    r = run_launch(*TINY, "gpus=2", f"output_dir={run}", *args, cwd=run.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r, run


@pytest.fixture(scope="module")
def zero2(tmp_path_factory, tiny_model, deepspeed_ops):
    return launch_in(tmp_path_factory, "zero2", "zero=2", "backend=torchrun", f"train.max_steps={STEPS}")


@pytest.fixture(scope="module")
def zero3(tmp_path_factory, tiny_model, deepspeed_ops):
    return launch_in(tmp_path_factory, "zero3", "zero=3", "backend=deepspeed", *FULL, f"train.max_steps={STEPS}",
                     f"train.save_steps={STEPS // 2}")


@pytest.fixture(scope="module")
def zero3_offload(tmp_path_factory, tiny_model, deepspeed_ops):
    return launch_in(tmp_path_factory, "zero3_offload", "zero=3_offload", f"train.max_steps={STEPS}")


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def logits(*models) -> list[list[float]]:
    """Logits on a fixed prompt of each saved model (a directory, or (adapter dir, base dir) for a peft
    adapter), loaded in a process where importing deepspeed fails."""
    code = (
        "import sys, json, torch\n"
        "sys.modules['deepspeed'] = None\n"
        "from transformers import AutoModelForCausalLM\n"
        "from peft import PeftModel\n"
        "for spec in json.loads(sys.argv[1]):\n"
        "    adapter, base = spec if isinstance(spec, list) else (None, spec)\n"
        "    model = AutoModelForCausalLM.from_pretrained(base)\n"
        "    model = PeftModel.from_pretrained(model, adapter) if adapter else model\n"
        "    with torch.no_grad():\n"
        "        print(json.dumps(model(torch.tensor([[1, 5, 9, 40, 77, 120]])).logits.flatten().tolist()))\n"
    )
    specs = [[str(m[0]), str(m[1])] if isinstance(m, tuple) else str(m) for m in models]
    r = subprocess.run([sys.executable, "-c", code, json.dumps(specs)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in r.stdout.strip().splitlines()[-len(models):]]


def max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


@pytest.mark.parametrize("fixture, stage", [("zero2", 2), ("zero3", 3), ("zero3_offload", 3)])
def test_zero_trains_two_ranks_and_loss_falls(request, fixture, stage):
    _, run = request.getfixturevalue(fixture)
    got = losses(run)
    assert len(got) == STEPS and got[-1] < got[0] - 0.1, got
    s = summary(run)
    assert (s["zero_stage"], s["world_size"], s["steps"], s["global_batch_size"]) == (stage, 2, STEPS, 8)
    assert len(s["peak_memory_mb_per_rank"]) == 2 and min(s["peak_memory_mb_per_rank"]) > 0


@pytest.mark.parametrize("fixture", ["zero2", "zero3", "zero3_offload"])
def test_the_saved_ds_config_is_what_deepspeed_received_with_no_auto_left(request, fixture):
    _, run = request.getfixturevalue(fixture)
    text = (run / "ds_config.json").read_text()
    assert '"auto"' not in text
    ds = json.loads(text)
    batch = (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"])
    assert batch == (4, 1, 8)
    assert ds["gradient_clipping"] == 1.0 and ds["fp16"]["enabled"] is False and ds["bf16"]["enabled"] is False
    assert ds["zero_optimization"]["reduce_bucket_size"] == 64 * 64  # "auto" from the tiny model's hidden size
    assert '"auto"' in (run / "ds_config.auto.json").read_text()  # what was planned: the numbers left to fill


def test_zero2_lora_adapter_loads_with_peft(zero2, tiny_model):
    _, run = zero2
    tuned, base = logits((run / "final", tiny_model), tiny_model)
    assert max_diff(tuned, base) > 1e-3


def test_a_zero_checkpoint_is_marked_complete_after_every_rank_wrote_its_shard(zero2):
    _, run = zero2
    ckpt = run / f"checkpoints/checkpoint-{STEPS}"  # the last step's save
    marker = ckpt / MARKER
    assert json.loads(marker.read_text()) | {"time": 0} == {"step": STEPS, "world_size": 2, "zero_stage": 2, "time": 0}
    shards = sorted(ckpt.glob("global_step*/*optim_states.pt"))
    assert [p.name.split("_mp_rank")[0][-6:] for p in shards] == ["rank_0", "rank_1"]  # one per rank
    assert marker.stat().st_mtime >= max(p.stat().st_mtime for p in shards)


def test_zero3_runs_through_the_deepspeed_launcher(zero3):
    r, run = zero3
    sh = (run / "launch.sh").read_text()
    assert "-m deepspeed.launcher.runner --num_gpus=2" in sh and "--no_local_rank --module launcher.worker" in sh
    assert (run / "logs/rank0.log").is_file() and (run / "logs/rank1.log").is_file()
    assert "activating zero.init()" in (run / "logs/rank0.log").read_text()  # partitioned at load
    assert summary(run)["trainable_params"] == summary(run)["total_params"] == 190_528  # full sizes, not shards
    # DeepSpeed's shared-memory all-reduce buffers (66 MiB of RAM per rank) are gone: each rank unlinked its own
    assert "all-reduce buffer is unlinked" in (run / "logs/rank1.log").read_text()
    assert shm_buffers_left(run) == []


def test_zero3_final_loads_without_deepspeed(zero3, tiny_model):
    _, run = zero3
    assert (run / "final/model.safetensors").is_file() and (run / "final/config.json").is_file()
    tuned, base = logits(run / "final", tiny_model)
    assert max_diff(tuned, base) > 1e-3


def test_zero_to_fp32_export_of_the_last_checkpoint_equals_final(zero3):
    _, run = zero3
    out = run.parent / "exported"
    r = subprocess.run([sys.executable, "-m", "launcher.zero_export", str(run), str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"checkpoint-{STEPS} -> {out}" in r.stdout
    assert max_diff(*logits(out, run / "final")) < 1e-5


def test_resume_from_a_zero_checkpoint_continues_at_the_right_step(zero3):
    _, first = zero3
    run = first.parent / "resumed"
    shutil.copytree(first, run)
    shutil.rmtree(run / f"checkpoints/checkpoint-{STEPS}")  # as if preempted after step STEPS // 2
    r = run_launch(*TINY, "gpus=2", f"output_dir={run}", "zero=3", "backend=deepspeed", *FULL,
                   f"train.max_steps={STEPS}", f"train.save_steps={STEPS // 2}", "resume=true", cwd=run.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = summary(run)
    assert s["resumed_from"].endswith(f"checkpoint-{STEPS // 2}") and s["steps"] == STEPS
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in rows] == list(range(1, STEPS + 1)) + list(range(STEPS // 2 + 1, STEPS + 1))
    # the same batches and optimizer state: the resumed steps repeat the first run's losses
    assert [m["loss"] for m in rows[STEPS:]] == pytest.approx(losses(first)[STEPS // 2:], rel=1e-4)


def test_offload_steps_with_deepspeed_cpu_adam_and_the_adapter_loads(zero3_offload, tiny_model):
    r, run = zero3_offload
    assert "Adam Optimizer #0 is created" in r.stdout  # DeepSpeedCPUAdam's banner
    ds = json.loads((run / "ds_config.json").read_text())
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["zero_force_ds_cpu_optimizer"] is True
    tuned, base = logits((run / "final", tiny_model), tiny_model)
    assert max_diff(tuned, base) > 1e-3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def test_two_nodes_through_a_hostfile(tmp_path, tiny_model, deepspeed_ops):
    """Two `launch` commands, one per node, as on two machines: 127.0.0.1 and localhost name this one twice."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("127.0.0.1 slots=1\nlocalhost slots=1\n")
    run = tmp_path / "run"
    args = [sys.executable, "-m", "launcher.cli", *TINY, "gpus=1", "nodes=2", "zero=2", "backend=deepspeed",
            f"hostfile={hostfile}", f"master_port={free_port()}", f"output_dir={run}", f"train.max_steps={STEPS}"]
    nodes = [subprocess.Popen([*args, f"node_rank={n}"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for n in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    for n, out in enumerate(outs):
        assert f"--no_ssh --node_rank={n} --master_addr=127.0.0.1" in out  # each node ran its own command
    s = summary(run)
    assert (s["world_size"], s["global_batch_size"], s["steps"]) == (2, 8, STEPS)
    assert losses(run)[-1] < losses(run)[0] - 0.1
    assert "launcher.rows" in (run / "logs/rank1.log").read_text()  # the second node's rank trained


def test_a_signal_to_a_deepspeed_launch_leaves_no_rank_behind(tmp_path, tiny_model, deepspeed_ops):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", *TINY, "gpus=2", "zero=2", "backend=deepspeed",
                             f"output_dir={run}", "train.num_train_epochs=1000", "train.save_steps=100000"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_until_training(run, ranks=2, timeout=180):
        proc.kill()
        pytest.fail("ranks did not start training within 180 s")
    assert len(processes_mentioning(str(run))) >= 4  # runner, launcher, 2 ranks
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) != 0
    deadline = time.monotonic() + 10
    while processes_mentioning(str(run)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(str(run)) == []
    assert shm_buffers_left(run) == []


def test_prefix_tuning_saves_under_zero3(tmp_path_factory, tiny_model, deepspeed_ops):
    """peft runs the prefix encoder to save it; under ZeRO-3 that must not wait on the other rank's slice."""
    from safetensors.torch import load_file

    _, run = launch_in(tmp_path_factory, "prefix_zero3", "adapter=prefix", "adapter.prefix_projection=true",
                       "zero=3", "train.max_steps=3", "train.save_steps=2")
    assert (run / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    (prefix,) = load_file(run / "final" / "adapter_model.safetensors").values()
    # pre_seq_len rows of (key, value) x 2 layers x 2 kv heads x 16: the encoder's whole output, not a slice
    cfg = json.loads((run / "final" / "adapter_config.json").read_text())
    assert prefix.shape == (cfg["num_virtual_tokens"], 2 * 2 * 2 * 16)
    assert prefix.isfinite().all() and prefix.abs().sum() > 0
