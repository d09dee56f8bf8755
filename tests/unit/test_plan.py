"""build_plan(): processes, world size, batch arithmetic, argv and env; dry_run starts nothing."""
from __future__ import annotations

import subprocess
import sys

import pytest

from launcher.plan import build_plan
from tests.support import compose, facts, run_launch


@pytest.mark.parametrize("gpus, backend, accum", [(1, "single", 16), (2, "torchrun", 8), (4, "torchrun", 4),
                                                  (8, "torchrun", 2)])
def test_gpus_set_processes_world_size_and_derived_accumulation(gpus, backend, accum):
    cfg = compose("recipe=llama2_sft_lora", f"gpus={gpus}")
    plan = build_plan(cfg, facts(cfg), "/runs/r1")
    assert (plan.backend, plan.nproc_per_node, plan.world_size) == (backend, gpus, gpus)
    assert plan.batch.gradient_accumulation_steps == accum
    assert plan.batch.global_batch_size == 64 and plan.batch.derived
    assert plan.config["train"]["gradient_accumulation_steps"] == accum  # what the worker reads
    assert [r.rank for r in plan.ranks] == list(range(gpus))
    assert [r.device for r in plan.ranks] == [f"cuda:{i}" for i in range(gpus)]


def test_torchrun_command():
    cfg = compose("recipe=llama2_sft_lora", "gpus=4")
    (cmd,) = build_plan(cfg, facts(cfg), "/runs/r1").commands
    assert cmd.argv[:3] == ("/usr/bin/python3", "-m", "torch.distributed.run")
    assert "--nproc-per-node=4" in cmd.argv and "--standalone" in cmd.argv
    assert cmd.argv[-3:] == ("-m", "launcher.worker", "/runs/r1")


def test_single_process_command_for_one_gpu():
    cfg = compose("recipe=llama2_sft_lora", "gpus=1")
    (cmd,) = build_plan(cfg, facts(cfg), "/runs/r1").commands
    assert cmd.argv == ("/usr/bin/python3", "-m", "launcher.worker", "/runs/r1")


def test_explicit_accumulation_without_global_batch():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "global_batch_size=null",
                  "train.gradient_accumulation_steps=3")
    plan = build_plan(cfg, facts(cfg), "/runs/r1")
    assert (plan.batch.gradient_accumulation_steps, plan.batch.global_batch_size, plan.batch.derived) == (3, 24, False)


def test_threads_per_rank_split_the_cores():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "gpus=2")
    (cmd,) = build_plan(cfg, facts(cfg, cpu_count=16), "/runs/r1").commands
    assert cmd.env["OMP_NUM_THREADS"] == "8"


def test_logger_env_points_into_the_run_dir():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "logger=both")
    (cmd,) = build_plan(cfg, facts(cfg), "/runs/r1").commands
    assert cmd.env["TENSORBOARD_LOGGING_DIR"] == "/runs/r1/tensorboard"
    assert cmd.env["WANDB_DIR"] == "/runs/r1" and cmd.env["WANDB_MODE"] == "offline"


def test_shell_rendering_shows_batch_ranks_env_and_command():
    cfg = compose("recipe=llama2_sft_lora", "gpus=4")
    sh = build_plan(cfg, facts(cfg), "/runs/r 1").to_shell(cwd="/work")
    assert "per_device_train_batch_size 4 x gradient_accumulation_steps 4 x world size 4 = global batch 64" in sh
    assert "3: 0/3 cuda:3" in sh
    assert "export OMP_NUM_THREADS=2" in sh
    assert "-m launcher.worker '/runs/r 1'" in sh  # quoted at render time only


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path):
    r = run_launch("recipe=llama2_sft_lora", "gpus=4", "dry_run=true", cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert "torch.distributed.run" in r.stdout and "--nproc-per-node=4" in r.stdout
    assert "-m launcher.worker" in r.stdout
    assert "x world size 4 = global batch 64" in r.stdout
    assert "warning: gpus=4" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra", [[], ["zero=3_offload", "backend=deepspeed"]])
def test_compose_validate_plan_import_no_training_stack(tmp_path, extra):
    """A dry run (and a Slurm submission from a login node) must not import torch/transformers."""
    code = (
        "import sys\n"
        "from launcher.cli import main\n"
        f"sys.argv = ['launch', 'recipe=llama2_sft_lora', 'gpus=4', 'dry_run=true', *{extra!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'deepspeed', 'datasets') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_launch_sh_loops_over_one_attempt_at_a_time():
    cfg = compose("recipe=llama2_sft_lora", "gpus=4", "max_restarts=2")
    plan = build_plan(cfg, facts(cfg), "/runs/r1")
    (cmd,) = plan.commands
    # torchrun runs one attempt; launch.sh restarts it with a fresh rendezvous (standalone: its own port)
    assert "--max-restarts=0" in cmd.argv and "--shutdown-timeout=120" in cmd.argv and plan.base_port is None
    sh = plan.to_shell(cwd="/work")
    assert "MAX_RESTARTS=2" in sh and 'export LAUNCHER_RESTART="$RESTART"' in sh and "LAUNCHER_RESUME=1" in sh
    assert "-m launcher.pdeathsig /usr/bin/python3 -m torch.distributed.run" in sh  # dies with launch.sh
    assert "-m launcher.restarts" in sh and 'forward() { kill -s "$1" "$PID"' in sh
    bash = subprocess.run(["bash", "-n"], input=sh, capture_output=True, text=True)
    assert bash.returncode == 0, bash.stderr
