"""The sbatch renderer, golden-filed: any change to what runs on a cluster shows up in review.

Regenerate after an intended change with: UPDATE_GOLDEN=1 python -m pytest tests/unit/test_slurm_render.py
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher import PROJECT_ROOT
from launcher.backends.slurm import options_for, parse_scontrol, sbatch_options, script_for
from launcher.plan import build_plan
from launcher.validate import slurm_time_seconds
from tests import support
from tests.support import compose, facts, only_error_of, problems_of, run_launch

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def plans(*overrides: str, run_dirs=("/runs/r0",)):
    cfg = compose("cluster=slurm", *overrides)
    f = facts(cfg, python="/opt/venv/bin/python")
    return [build_plan(cfg, f, d) for d in run_dirs]


def check_golden(name: str, text: str) -> None:
    text = text.replace(str(PROJECT_ROOT), "$PROJECT_ROOT")  # the same golden file in any checkout
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if intended: UPDATE_GOLDEN=1 pytest {__file__}"


CASES = {
    "sbatch_single_node.sh": ["recipe=llama2_sft_lora", "gpus=4", "cluster.partition=a100", "cluster.time=04:00:00"],
    "sbatch_two_nodes.sh": ["recipe=llama2_sft_lora", "gpus=8", "nodes=2", "cluster.partition=a100",
                            "cluster.account=proj42", "cluster.qos=high", "cluster.time=1-00:00:00",
                            "cluster.cpus_per_task=64", "cluster.mem=0", "cluster.exclusive=true",
                            "cluster.constraint=a100-80g", "cluster.exclude=gpu013",
                            "cluster.setup=['module load cuda/12.4','source /opt/venv/bin/activate']",
                            "+cluster.additional_parameters.reservation=llm",
                            "cluster.srun_args=['--container-image=nvcr.io#nvidia/pytorch:24.05-py3']"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_sbatch_and_node_command(name):
    (plan,) = plans(*CASES[name])
    text = script_for([plan], cwd="/work", output="/runs/r0/slurm/%j.out")
    check_golden(name, text + "# ---- launch.sh\n" + plan.to_shell(cwd="/work"))


def test_golden_array_for_a_sweep():
    ps = plans("recipe=tiny_sft_lora", "device=cpu", "cluster.array_parallelism=2",
               run_dirs=("/runs/a0", "/runs/a1", "/runs/a2"))
    check_golden("sbatch_array.sh", script_for(ps, cwd="/work", output="/runs/sweep/slurm-%A_%a.out"))


def test_two_node_plan_takes_rendezvous_from_slurm():
    (plan,) = plans("recipe=llama2_sft_lora", "gpus=8", "nodes=2")
    assert plan.world_size == 16 and plan.batch.gradient_accumulation_steps == 1
    (cmd,) = plan.commands
    assert "--standalone" not in cmd.argv and "--nproc-per-node=8" in cmd.argv
    assert plan.node_env["PET_NODE_RANK"] == "$SLURM_NODEID" and plan.node_env["PET_NNODES"] == "$SLURM_NNODES"


def test_cpu_jobs_ask_for_no_gpu_and_gpu_jobs_do():
    (cpu,) = plans("recipe=tiny_sft_lora", "device=cpu", "gpus=2")
    assert "gpus-per-node" not in options_for(cpu, "o")
    (gpu,) = plans("recipe=llama2_sft_lora", "gpus=4", "cluster.gpus_per_node=8")
    assert options_for(gpu, "o")["gpus-per-node"] == "8"


def test_options_quote_values_and_keep_flags():
    opts = sbatch_options({"signal": "USR2", "signal_time": 90, "partition": "a b", "exclusive": True,
                           "additional_parameters": {"hint": "nomultithread", "overcommit": ""}},
                          name="x", nodes=1, gpus_per_node=0, output="o")
    assert opts["signal"] == "B:USR2@90" and "exclusive" in opts and opts["exclusive"] is None
    assert opts["overcommit"] is None and opts["hint"] == "nomultithread"
    text = script_for(plans("recipe=tiny_sft_lora", "device=cpu", "cluster.partition='a b'"), cwd="/w", output="o")
    assert "#SBATCH --partition='a b'" in text


def test_sweep_over_resources_cannot_be_one_array():
    a = plans("recipe=tiny_sft_lora", "device=cpu", "nodes=1")[0]
    b = plans("recipe=tiny_sft_lora", "device=cpu", "nodes=2")[0]
    with pytest.raises(ValueError, match="--nodes"):
        script_for([a, b], cwd="/w", output="o")


def test_parse_scontrol_lines():
    text = ("JobId=12 JobName=x JobState=COMPLETED Reason=None Restarts=1 ExitCode=0:0\n"
            "JobId=14 ArrayJobId=13 ArrayTaskId=1 JobState=FAILED ExitCode=3:0 Restarts=0\n"
            "JobId=15 JobState=CANCELLED ExitCode=0:15\n")
    s = parse_scontrol(text)
    assert [(x.job_id, x.state, x.exit_code, x.restarts, x.done) for x in s] == [
        ("12", "COMPLETED", 0, 1, True), ("13_1", "FAILED", 3, 0, True), ("15", "CANCELLED", 143, 0, True)]


@pytest.mark.parametrize("value, seconds", [("30", 1800), ("10:30", 630), ("04:00:00", 14400), ("1-00", 86400),
                                            ("2-03:04:05", 183845), ("1-2:30", 95400), ("soon", None)])
def test_slurm_time_formats(value, seconds):
    assert slurm_time_seconds(value) == seconds


def errors(*overrides, **fact_kw):
    return {p.key: p for p in support.errors(*overrides, base=("recipe=tiny_sft_lora", "device=cpu", "cluster=slurm"),
                                             **fact_kw)}


def test_slurm_validation():
    assert errors(sbatch="/usr/bin/sbatch") == {}
    assert "cluster" in errors(sbatch=None)  # no sbatch here and not a dry run
    assert errors("dry_run=true", sbatch=None) == {}
    bad = errors("cluster.time=ten", "cluster.signal=KILL", "cluster.max_requeues=-1", sbatch="/usr/bin/sbatch")
    assert set(bad) == {"cluster.time", "cluster.signal", "cluster.max_requeues"}
    assert "before the job starts" in errors("cluster.time=00:01:00", sbatch="x")["cluster.signal_time"].fix


def test_multi_node_needs_a_cluster_or_a_rendezvous():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "nodes=2")
    p = only_error_of(cfg)
    assert p.key == "master_addr" and "cluster=slurm" in p.fix


def test_deepspeed_launcher_is_refused_on_slurm():
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "cluster=slurm", "backend=deepspeed", "zero='2'")
    p = only_error_of(cfg, sbatch="/usr/bin/sbatch")
    assert p.key == "backend" and "zero=" in p.fix


def test_golden_zero3_on_slurm():
    (plan,) = plans("recipe=llama2_sft_lora", "gpus=8", "nodes=2", "zero='3'", "cluster.partition=a100")
    assert plan.zero is not None and plan.backend == "torchrun"
    check_golden("sbatch_two_nodes_zero3.sh", script_for([plan], cwd="/work", output="/runs/r0/slurm/%j.out")
                 + "# ---- launch.sh\n" + plan.to_shell(cwd="/work"))


def test_login_node_without_gpus_can_submit_gpu_jobs():
    cfg = compose("recipe=llama2_sft_lora", "gpus=8", "nodes=2", "cluster=slurm")
    assert problems_of(cfg, visible_gpus=0, sbatch="/usr/bin/sbatch") == []


def test_bad_cluster_key_exits_2_listing_the_valid_ones(tmp_path):
    r = run_launch("recipe=tiny_sft_lora", "cluster=slurm", "cluster.partiton=a100", cwd=tmp_path)
    assert r.returncode == 2
    assert "error: cluster.partiton=a100: unknown key in cluster; valid keys: name, partition, account" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_dry_run_prints_the_sbatch_script(tmp_path):
    r = run_launch("recipe=llama2_sft_lora", "gpus=8", "nodes=2", "cluster=slurm", "cluster.partition=a100",
                   "dry_run=true", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --nodes=2" in r.stdout and "#SBATCH --gpus-per-node=8" in r.stdout
    assert 'export PET_NODE_RANK="$SLURM_NODEID"' in r.stdout
    assert list(tmp_path.iterdir()) == []
