"""CUDA_VISIBLE_DEVICES with indices, GPU UUIDs and MIG instances under the deepspeed backend: indices go to the
runner's --include, UUID/MIG entries (which the runner cannot parse and drops) reach the ranks through
KEPT_ENV; MIG with several ranks per node is refused."""
from __future__ import annotations

import pytest

from launcher.plan import build_plan
from launcher.visible_devices import KEPT_ENV, entries, restore
from tests.support import compose, errors_of, facts

DS = ("recipe=tiny_sft_lora", "device=cuda", "precision=bf16", "zero=2", "backend=deepspeed")
UUIDS = "GPU-8a3c1f2e-0b4d-4e7a-9c11-2f5e6d7c8b90,GPU-1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b"
MIG = "MIG-5f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"


def plan(visible, *overrides, gpus=2):
    cfg = compose(*DS, f"gpus={gpus}", *overrides)
    return build_plan(cfg, facts(cfg, cuda_visible_devices=visible), "/runs/r")


@pytest.mark.parametrize("visible, gpus, slots, kept", [
    ("2,3", 2, "--include=localhost:2,3", None),
    ("1,0,3", 2, "--include=localhost:1,0", None),
    (None, 2, "--num_gpus=2", None),
    (UUIDS, 2, "--num_gpus=2", UUIDS),
    (UUIDS, 1, "--num_gpus=1", UUIDS.split(",")[0]),
    (MIG, 1, "--num_gpus=1", MIG),
])
def test_deepspeed_argv_and_env_for_each_kind_of_entry(visible, gpus, slots, kept):
    p = plan(visible, gpus=gpus)
    [cmd] = p.commands
    assert cmd.argv[3] == slots and not [a for a in cmd.argv if a.startswith("--include") and a != slots]
    assert cmd.env.get(KEPT_ENV) == kept
    if kept:
        assert f"export {KEPT_ENV}={kept}" in p.to_shell("/work")


def test_torchrun_leaves_the_variable_to_the_ranks():
    p = plan(UUIDS, "backend=torchrun")
    assert KEPT_ENV not in p.commands[0].env and not any("--include" in a for a in p.commands[0].argv)


def test_the_runner_cannot_take_uuids_in_include():
    """Why UUIDs are not put in --include: deepspeed's runner parses slots with int()."""
    runner = pytest.importorskip("deepspeed.launcher.runner")
    assert runner.parse_node_config("localhost:2,3") == ("localhost", [2, 3])
    with pytest.raises(ValueError):
        runner.parse_node_config(f"localhost:{UUIDS}")


def test_a_rank_restores_the_devices_the_runner_replaced():
    env = {"CUDA_VISIBLE_DEVICES": "0,1", KEPT_ENV: UUIDS}  # as launch.py hands them to a rank
    restore(env)
    assert env["CUDA_VISIBLE_DEVICES"] == UUIDS
    untouched = {"CUDA_VISIBLE_DEVICES": "2,3"}
    restore(untouched)
    assert untouched == {"CUDA_VISIBLE_DEVICES": "2,3"}


def test_entries():
    assert entries(" 0, 1 ,") == ["0", "1"] and entries("-1") == [] and entries(None) == []


@pytest.mark.parametrize("backend", ["deepspeed", "torchrun"])
def test_several_ranks_on_mig_instances_are_refused(backend):
    cfg = compose(*DS, "gpus=2", f"backend={backend}")
    [e] = errors_of(cfg, cuda_visible_devices=f"{MIG},MIG-0a")
    assert e.key == "gpus" and "MIG" in e.fix and "gpus=1" in e.fix
    one = compose(*DS, "gpus=1")
    assert errors_of(one, cuda_visible_devices=MIG) == []
