"""Facts of the node the ranks run on (flash-attn, bitsandbytes, host memory for offload, the C++ toolchain):
errors for a local run, warnings on a Slurm submit, and the worker's own check on the node fails with the
same message in a "fatal" event."""
from __future__ import annotations

import json
from importlib.util import find_spec

import pytest

from launcher import PROJECT_ROOT
from launcher.facts import GpuFacts
from launcher.rundir import RunDir, read_events
from launcher.validate.node import ON_THE_NODE
from launcher.worker.node import check_node
from tests import support
from tests.support import compose, problems_of, run_launch

A100 = (GpuFacts("NVIDIA A100-SXM4-80GB", 8.0),)
STACK = {"transformers": "5.24.0", "peft": "0.21.2", "bitsandbytes": "0.50.2", "flash-attn": "2.8.3"}
SLURM = ("cluster=slurm", "cluster.time=01:00:00")


def offload_forcing_cpu_adam(tmp_path) -> str:
    ds = json.loads((PROJECT_ROOT / "ds_configs/ds_z2_config.json").read_text())
    ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    ds["zero_force_ds_cpu_optimizer"] = True
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ds))
    return str(path)


CASES = {
    "flash-attn": (["recipe=llama2_sft_lora", "model.attn=flash_attention_2"],
                   {"packages": {**STACK, "flash-attn": None}}, "model.attn=flash_attention_2: the flash-attn package"),
    "bitsandbytes": (["recipe=llama2_sft_qlora"], {"packages": {**STACK, "bitsandbytes": None}},
                     "adapter=qlora: the bitsandbytes package is not installed"),
    "host memory": (["recipe=llama2_sft_lora", "device=cpu", "gpus=2", "zero=3_offload", "adapter=full"], {},
                    "zero=3_offload: offload needs about 169.4 GiB of host memory per node"),
    "toolchain": (["recipe=tiny_sft_lora", "device=cpu", "gpus=2", "zero=custom", "zero.config={ds}"],
                  {"cxx_toolchain": False}, "zero_force_ds_cpu_optimizer=true needs DeepSpeedCPUAdam, which needs "
                                            "a C++ compiler and ninja to build on testhost"),
}


def problems(tmp_path, overrides, facts_kw, *extra):
    return [str(p) for p in support.problems(*(o.format(ds=offload_forcing_cpu_adam(tmp_path)) for o in overrides),
                                             *extra, gpus=A100, sbatch="/usr/bin/sbatch", **facts_kw)]


@pytest.mark.parametrize("case", CASES)
def test_a_local_run_stops_and_a_slurm_submit_warns_with_the_same_message(tmp_path, case):
    overrides, facts_kw, needle = CASES[case]
    local = problems(tmp_path, overrides, facts_kw)
    assert [p for p in local if needle in p and p.startswith("error: ")], local
    message = next(p for p in local if needle in p).removeprefix("error: ")
    slurm = problems(tmp_path, overrides, facts_kw, *SLURM)
    assert f"warning: {message} ({ON_THE_NODE})" in slurm, slurm
    assert not [p for p in slurm if p.startswith("error: ")], slurm


@pytest.mark.parametrize("case", CASES)
def test_a_healthy_node_has_no_node_problem(tmp_path, case):
    overrides = CASES[case][0]
    healthy = {"packages": STACK, "host_memory_total": 1024 * 2**30}
    found = problems(tmp_path, overrides, healthy, *SLURM) + problems(tmp_path, overrides, healthy)
    assert not [p for p in found if ON_THE_NODE in p or "not installed" in p or "GiB of host memory" in p], found


@pytest.mark.skipif(find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_the_worker_fails_on_the_node_with_validates_message(tmp_path):
    """This host lacks flash-attn: the worker's check, with this host's real facts, ends the rank with the
    message a Slurm submit warned about, as a fatal event (no restart)."""
    cfg = compose("recipe=tiny_sft_lora", "device=cuda", "gpus=1", "precision=bf16", "model.attn=flash_attention_2",
                  *SLURM)
    warned = [str(p) for p in problems_of(cfg, gpus=A100, sbatch="/usr/bin/sbatch",
                                          packages={**STACK, "flash-attn": None})]
    run = RunDir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        check_node(cfg, run, rank=0, local_rank=0, host="node7")
    assert stop.value.code == 2
    [event] = read_events(run)
    assert event["event"] == "fatal" and event["check"] == "node" and event["host"] == "node7"
    assert f"warning: {event['message']} ({ON_THE_NODE})" in warned, (event, warned)


def test_the_worker_passes_on_a_node_that_has_what_the_config_needs(tmp_path):
    cfg = compose("recipe=tiny_sft_lora", "device=cpu", "gpus=2", "zero=2")
    check_node(cfg, RunDir(tmp_path), rank=0, local_rank=0, host="here")  # returns: nothing to fail on
    assert read_events(RunDir(tmp_path)) == []


@pytest.mark.skipif(find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_cli_slurm_dry_run_warns_where_a_local_launch_exits_2(tmp_path):
    args = ("recipe=tiny_sft_lora", "device=cuda", "gpus=1", "precision=bf16", "model.attn=flash_attention_2")
    needle = "model.attn=flash_attention_2: the flash-attn package is not installed"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = run_launch(*args, cwd=cwd)
    assert r.returncode == 2 and f"error: {needle}" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert list(cwd.iterdir()) == []
    r = run_launch(*args, *SLURM, "dry_run=true", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert f"warning: {needle}" in r.stderr and ON_THE_NODE in r.stderr, r.stderr
