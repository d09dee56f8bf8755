"""What a Slurm job asks for and how its ranks meet: CPUs per node, the rendezvous port, auto precision."""
from __future__ import annotations

import re

from launcher.backends.slurm import CPUS_PER_GPU, MASTER_PORT_BASE, MASTER_PORT_SPAN, default_cpus_per_task, \
    script_for
from launcher.plan import build_plan
from launcher.worker.model import auto_precision, resolve_precision
from tests.support import compose, facts

#: Linux's default net.ipv4.ip_local_port_range
EPHEMERAL = range(32768, 61000)


def sbatch(*overrides):
    cfg = compose("recipe=tiny_sft_lora", "cluster=slurm", *overrides)
    return script_for([build_plan(cfg, facts(cfg), "/runs/r")], cwd="/work", output="/runs/r/slurm/%j.out")


def cpus_option(script):
    m = re.search(r"^#SBATCH --cpus-per-task=(\d+)$", script, re.M)
    return int(m[1]) if m else None


def test_cpus_per_task_default_per_gpu_per_rank_or_exclusive():
    assert default_cpus_per_task({}, gpus_per_node=4, ranks_per_node=4) == 4 * CPUS_PER_GPU
    assert default_cpus_per_task({}, gpus_per_node=0, ranks_per_node=2) == 2  # device=cpu: a core per rank
    assert default_cpus_per_task({"exclusive": True}, gpus_per_node=8, ranks_per_node=8) is None
    assert default_cpus_per_task({"cpus_per_task": 12, "exclusive": True}, gpus_per_node=8, ranks_per_node=8) == 12


def test_the_sbatch_script_asks_for_the_cpus():
    assert cpus_option(sbatch("gpus=4", "dry_run=true")) == 4 * CPUS_PER_GPU
    assert cpus_option(sbatch("device=cpu", "gpus=2")) == 2
    assert cpus_option(sbatch("gpus=4", "cluster.cpus_per_task=20")) == 20
    script = sbatch("gpus=4", "cluster.exclusive=true")
    assert cpus_option(script) is None and "#SBATCH --exclusive" in script


def test_master_port_stays_below_the_ephemeral_range_and_differs_for_nearby_jobs():
    script = sbatch("gpus=2")
    assert f'MASTER_PORT="$(( {MASTER_PORT_BASE} + SLURM_JOB_ID % {MASTER_PORT_SPAN} ))"' in script
    ports = [MASTER_PORT_BASE + job % MASTER_PORT_SPAN for job in range(1_000_000, 1_000_000 + MASTER_PORT_SPAN)]
    assert len(set(ports)) == MASTER_PORT_SPAN  # jobs sharing a node collide only 20000 ids apart
    assert all(1024 <= p < 65536 and p not in EPHEMERAL for p in ports)


def test_ephemeral_range_of_this_host_is_avoided_when_it_is_the_default():
    try:
        low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    except OSError:
        return
    if low >= 32768:  # the default or narrower: the whole port span is outside it
        assert MASTER_PORT_BASE + MASTER_PORT_SPAN <= low


def test_auto_precision_needs_native_bf16():
    assert auto_precision("auto", "cuda", native_bf16=True) == "bf16"
    assert auto_precision("auto", "cuda", native_bf16=False) == "fp16"  # V100/T4: bf16 only emulated
    assert auto_precision("auto", "cpu", native_bf16=True) == "fp32"
    assert auto_precision("bf16", "cuda", native_bf16=False) == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("fp16", "cuda") == "fp16"
