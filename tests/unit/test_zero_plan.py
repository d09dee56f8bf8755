"""ZeRO and multi-node planning: the ds configs, the launcher argv of each node, the memory estimate."""
from __future__ import annotations

import json

import pytest

from launcher import PROJECT_ROOT, zero
from launcher.facts import ModelSize, count_model_params
from launcher.plan import build_plan
from tests.support import compose, facts, run_launch

DS_CONFIGS = sorted((PROJECT_ROOT / "ds_configs").glob("*.json"))
ZERO_CHOICES = {"0": (0, "none", "none"), "2": (2, "none", "none"), "2_offload": (2, "cpu", "none"),
                "3": (3, "none", "none"), "3_offload": (3, "cpu", "cpu")}
LLAMA2_7B = ModelSize(6_738_415_616, 131_072_000)


def plan_of(*overrides: str, run_dir: str = "/runs/r1", **facts_kw):
    cfg = compose(*overrides)
    return build_plan(cfg, facts(cfg, **facts_kw), run_dir)


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.name)
def test_shipped_ds_configs_leave_every_training_number_to_the_launch_config(path):
    ds = json.loads(path.read_text())
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping", "fp16.enabled", "bf16.enabled"):
        assert zero.get(ds, key) == "auto", key
    cfg = compose("recipe=llama2_sft_lora", "gpus=4")
    expected = zero.expected_values(cfg, 4, 64)
    assert zero.mismatches(ds, expected) == [] and zero.unfillable_autos(ds, expected) == []


@pytest.mark.parametrize("choice, want", ZERO_CHOICES.items())
def test_each_zero_choice_plans_its_stage_and_offload(choice, want):
    plan = plan_of("recipe=tiny_sft_lora", "device=cpu", "gpus=2", f"zero={choice}")
    z = plan.zero
    assert (z.stage, z.offload_optimizer, z.offload_param) == want
    assert z.source.endswith(f"ds_configs/ds_z{choice}_config.json")
    assert plan.backend == "torchrun" and plan.commands[0].env["DS_ACCELERATOR"] == "cpu"


def test_zero_3_keeps_16_bit_weights_for_final():
    ds = json.loads((PROJECT_ROOT / "ds_configs/ds_z3_config.json").read_text())
    assert zero.get(ds, "zero_optimization.stage3_gather_16bit_weights_on_model_save") is True


def test_zero_none_is_plain_ddp():
    plan = plan_of("recipe=tiny_sft_lora", "device=cpu", "gpus=2")
    assert plan.zero is None and "DS_ACCELERATOR" not in plan.commands[0].env
    assert "torch.distributed.run" in plan.commands[0].argv


def test_zero_with_one_gpu_still_gets_a_launcher():
    plan = plan_of("recipe=tiny_sft_lora", "device=cpu", "gpus=1", "zero=2")
    assert plan.backend == "torchrun" and "--nproc-per-node=1" in plan.commands[0].argv


def test_deepspeed_launcher_argv_on_one_node():
    plan = plan_of("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "zero=3", "backend=deepspeed")
    (cmd,) = plan.commands
    assert cmd.argv == ("/usr/bin/python3", "-m", "deepspeed.launcher.runner", "--num_gpus=2", "--master_port=$PORT",
                        "--no_local_rank", "--module", "launcher.worker", "/runs/r1")
    assert plan.base_port == "41000"  # a free port; each restart of the rank group takes the next one
    assert cmd.env["DS_ACCELERATOR"] == "cpu"
    sh = plan.to_shell(cwd="/work")
    assert "# zero: stage 3 from" in sh and "# optimizer: train.optim=adamw_torch" in sh


def test_deepspeed_launcher_keeps_the_visible_gpus():
    plan = plan_of("recipe=llama2_sft_lora", "gpus=2", "zero=2", "backend=deepspeed", "master_port=29600",
                   cuda_visible_devices="4,5,6")
    assert plan.commands[0].argv[3:5] == ("--include=localhost:4,5", "--master_port=$PORT")
    assert plan.base_port == "29600"


def test_deepspeed_hostfile_gives_each_node_its_command(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\nnode-a slots=8\nnode-b slots=8\n")
    plan = plan_of("recipe=llama2_sft_lora", "gpus=8", "nodes=2", "zero=3", "backend=deepspeed",
                   f"hostfile={hostfile}", "node_rank=1")
    assert (plan.world_size, plan.batch.gradient_accumulation_steps, len(plan.commands)) == (16, 1, 2)
    for node, cmd in enumerate(plan.commands):
        assert cmd.argv[3:] == (f"--hostfile={hostfile}", "--num_nodes=2", "--num_gpus=8", "--no_ssh",
                                f"--node_rank={node}", "--master_addr=node-a", "--master_port=$PORT",
                                "--no_local_rank", "--module", "launcher.worker", "/runs/r1")
    sh = plan.to_shell(cwd="/work")
    assert 'NODE="${1:-1}"' in sh and "--node_rank=0" in sh and "--node_rank=1" in sh
    assert "BASE_PORT=29500" in sh and '"--master_port=$PORT"' in sh


def test_torchrun_across_nodes_with_master_addr():
    plan = plan_of("recipe=llama2_sft_lora", "gpus=4", "nodes=2", "master_addr=10.0.0.1", "master_port=29400")
    assert plan.world_size == 8 and [r.node for r in plan.ranks] == [0] * 4 + [1] * 4
    for node, cmd in enumerate(plan.commands):
        assert cmd.argv[3:8] == ("--nnodes=2", f"--node-rank={node}", "--master-addr=10.0.0.1", "--master-port=$PORT",
                                 "--nproc-per-node=4")
        assert "--standalone" not in cmd.argv
    assert plan.base_port == "29400"


def test_dry_run_shows_each_nodes_command(tmp_path):
    r = run_launch("recipe=llama2_sft_lora", "gpus=4", "nodes=2", "master_addr=10.0.0.1", "zero=2", "dry_run=true",
                   cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert "--node-rank=0" in r.stdout and "--node-rank=1" in r.stdout and "world size 8" in r.stdout
    assert list(tmp_path.iterdir()) == []


def test_offload_uses_deepspeed_cpu_adam_where_it_builds():
    plan = plan_of("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "zero=3_offload")
    assert plan.zero.ds_config["zero_force_ds_cpu_optimizer"] is True
    assert plan.zero.optimizer.startswith("DeepSpeedCPUAdam")


def test_offload_keeps_torch_adamw_without_a_compiler():
    plan = plan_of("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "zero=2_offload", cxx_toolchain=False)
    assert plan.zero.ds_config["zero_force_ds_cpu_optimizer"] is False
    assert "train.optim=adamw_torch stepping on the CPU" in plan.zero.optimizer
    assert "no C++ compiler" in plan.zero.optimizer


def test_dry_run_prints_deepspeeds_memory_estimate(tmp_path):
    r = run_launch("recipe=llama2_sft_lora", "gpus=8", "zero=3_offload", "dry_run=true", cwd=tmp_path,
                   env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    cpu, gpu, _ = zero.estimate_zero3_model_states_mem_needs(LLAMA2_7B.total_params, LLAMA2_7B.largest_layer_params, 8)
    assert (f"estimate_zero3_model_states_mem_needs: 6,738.4M params -> per GPU {gpu / 2**30:.2f} GiB, per node CPU "
            f"{cpu / 2**30:.2f} GiB") in r.stdout


def test_local_model_size_is_read_from_safetensors_headers(tiny_model):
    plan = plan_of("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "zero=2",
                   model_size=count_model_params(str(tiny_model)))
    assert plan.zero.estimate.total_params == 190_528  # 2 layers of hidden 64 + 766 x 64 embeddings and head


@pytest.mark.parametrize("params, largest", [(190_528, 49_024), (6_738_415_616, 131_072_000),
                                             (70_553_706_496, 1_050_673_152)])
@pytest.mark.parametrize("gpus, nodes", [(1, 1), (2, 1), (8, 1), (8, 4)])
def test_estimates_equal_deepspeeds_own_functions(params, largest, gpus, nodes):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    for offload in (True, False):
        assert zero.estimate_zero2_model_states_mem_needs(params, gpus, nodes, offload) == \
            estimate_zero2_model_states_mem_needs(params, gpus, nodes, offload)
        for offload_params in (True, False):
            for zero_init in (True, False):
                args = (params, largest, gpus, nodes, offload, offload_params, zero_init)
                assert zero.estimate_zero3_model_states_mem_needs(*args) == estimate_zero3_model_states_mem_needs(*args)


def test_header_count_equals_deepspeeds_count_of_the_loaded_model(tiny_model):
    from deepspeed.runtime.zero.stage3 import model_to_params
    from transformers import AutoModelForCausalLM

    size = count_model_params(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert (size.total_params, size.largest_layer_params) == model_to_params(model)


def test_numeric_zero_choices_work_on_the_command_line(tmp_path):
    r = run_launch("recipe=tiny_sft_lora", "device=cpu", "zero=3", "--cfg", "job", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ds_z3_config.json" in r.stdout
    r = run_launch("-m", "recipe=tiny_sft_lora", "device=cpu", "gpus=2", "zero=2,3", "dry_run=true", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "# zero: stage 2" in r.stdout and "# zero: stage 3" in r.stdout
