"""ZeRO and multi-node mistakes stop before anything starts, naming the key, the value and the fix."""
from __future__ import annotations

import json

import pytest

from launcher import PROJECT_ROOT
from launcher.facts import ModelSize
from launcher.zero import GIB
from tests.support import compose, problems_of, run_launch
from tests.support import errors_of as errors, only_error_of as only_error

TINY = ("recipe=tiny_sft_lora", "device=cpu", "gpus=2")
Z2 = json.loads((PROJECT_ROOT / "ds_configs/ds_z2_config.json").read_text())


def custom(tmp_path, **changes) -> str:
    """A user's own ds config: the shipped ZeRO-2 one with some values written out."""
    ds = json.loads(json.dumps(Z2))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = ds
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp_path / "my_ds.json"
    path.write_text(json.dumps(ds))
    return str(path)


@pytest.mark.parametrize("choice", ["0", "2", "2_offload", "3", "3_offload"])
@pytest.mark.parametrize("backend", ["auto", "torchrun", "deepspeed"])
def test_every_zero_choice_validates(choice, backend):
    cfg = compose(*TINY, f"zero={choice}", f"backend={backend}")
    assert problems_of(cfg) == []


def test_custom_ds_config_that_agrees_is_accepted(tmp_path):
    path = custom(tmp_path, train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=1, train_batch_size=8,
                  gradient_clipping=1.0, fp16__enabled=False, bf16__enabled=False)
    assert errors(compose(*TINY, "zero=custom", f"zero.config={path}")) == []


@pytest.mark.parametrize("change, needle", [
    ({"train_micro_batch_size_per_gpu": 8}, "train_micro_batch_size_per_gpu=8 disagrees with "
                                            "train.per_device_train_batch_size=4"),
    ({"gradient_accumulation_steps": 4}, "gradient_accumulation_steps=4 disagrees with "
                                         "train.gradient_accumulation_steps=1"),
    ({"train_batch_size": 32}, "train_batch_size=32 disagrees with the global batch 8"),
    ({"gradient_clipping": 0.5}, "gradient_clipping=0.5 disagrees with train.max_grad_norm=1.0"),
    ({"optimizer__type": "AdamW", "optimizer__params": {"lr": 3e-4}}, "optimizer.params.lr=0.0003 disagrees with "
                                                                      "train.learning_rate=0.01"),
    ({"fp16__enabled": True}, "fp16.enabled=True disagrees with precision=fp32 (fp16.enabled=False)"),
])
def test_a_number_written_twice_that_disagrees_is_an_error(tmp_path, change, needle):
    cfg = compose(*TINY, "zero=custom", f"zero.config={custom(tmp_path, **change)}")
    e = only_error(cfg)
    assert e.key == "zero.config" and needle in e.fix and 'write "auto" there' in e.fix


def test_the_derived_accumulation_is_what_the_ds_config_must_match(tmp_path):
    path = custom(tmp_path, gradient_accumulation_steps=2)
    assert errors(compose(*TINY, "gpus=1", "zero=custom", f"zero.config={path}")) == []  # 8 / (4 x 1) = 2
    assert len(errors(compose(*TINY, "zero=custom", f"zero.config={path}"))) == 1  # 8 / (4 x 2) = 1


def test_fp16_ds_config_with_bf16_precision(tmp_path):
    cfg = compose("recipe=llama2_sft_lora", "gpus=4", "precision=bf16", "zero=custom",
                  f"zero.config={custom(tmp_path, fp16__enabled=True)}")
    fixes = [e.fix for e in errors(cfg)]
    assert any("fp16.enabled=True disagrees with precision=bf16 (fp16.enabled=False)" in f for f in fixes)


def test_fp16_ds_config_with_auto_precision_on_a_gpu_names_the_matching_precision(tmp_path):
    cfg = compose("recipe=llama2_sft_lora", "gpus=4", "precision=auto", "zero=custom",
                  f"zero.config={custom(tmp_path, fp16__enabled=True, bf16__enabled=False)}")
    e = only_error(cfg)
    assert e.key == "precision" and "precision=fp16" in e.fix


def test_auto_where_nobody_fills_it(tmp_path):
    path = custom(tmp_path, zero_optimization__allgather_bucket_size="auto")
    e = only_error(compose(*TINY, "zero=custom", f"zero.config={path}"))
    assert 'zero_optimization.allgather_bucket_size="auto" is not a value transformers fills in' in e.fix


def test_custom_without_a_config():
    e = only_error(compose(*TINY, "zero=custom"))
    assert e.key == "zero.config" and "zero.config=PATH" in e.fix


def test_missing_and_malformed_ds_config(tmp_path):
    assert "no such file" in only_error(compose(*TINY, "zero=custom", f"zero.config={tmp_path}/nope.json")).fix
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {"stage": 2,}}')
    assert f"{bad}: line 1" in only_error(compose(*TINY, "zero=custom", f"zero.config={bad}")).fix


def test_zero_with_backend_single():
    e = only_error(compose(*TINY, "gpus=1", "zero=2", "backend=single"))
    assert e.key == "backend" and "backend=torchrun or backend=deepspeed" in e.fix


def test_deepspeed_launcher_without_zero():
    e = only_error(compose(*TINY, "backend=deepspeed"))
    assert e.key == "backend" and "zero=0|2|2_offload|3|3_offload" in e.fix


def test_zero_without_deepspeed_installed():
    e = only_error(compose(*TINY, "zero=2"), deepspeed_version=None)
    assert e.key == "zero" and "pip install deepspeed" in e.fix


def test_offload_without_enough_host_memory_for_full_fine_tuning():
    cfg = compose("recipe=llama2_sft_lora", "gpus=8", "zero=3_offload", "adapter=full")
    e = only_error(cfg, host_memory_total=128 * GIB)
    assert e.key == "zero" and e.value == "3_offload" and "169.4 GiB" in e.fix and "128.0 GiB" in e.fix
    assert errors(cfg, host_memory_total=256 * GIB) == []
    assert errors(compose("recipe=llama2_sft_lora", "gpus=8", "zero=3_offload"), host_memory_total=128 * GIB) == []
    dry = compose("recipe=llama2_sft_lora", "gpus=8", "zero=3_offload", "adapter=full", "dry_run=true")
    assert errors(dry, host_memory_total=128 * GIB) == []  # a login node's memory: a warning only


def test_offload_estimate_uses_the_local_models_size():
    cfg = compose(*TINY, "zero=3_offload", "adapter=full")
    assert only_error(cfg, model_size=ModelSize(10**9, 10**8), host_memory_total=16 * GIB).key == "zero"


def test_offload_swaps_the_optimizer_for_cpu_adam():
    e = only_error(compose(*TINY, "zero=2_offload", "train.optim=sgd"))
    assert e.key == "train.optim" and "train.optim=adamw_torch" in e.fix
    assert errors(compose(*TINY, "zero=2_offload", "train.optim=sgd"), cxx_toolchain=False) == []


def test_forcing_cpu_adam_without_a_compiler(tmp_path):
    path = custom(tmp_path, zero_optimization__offload_optimizer={"device": "cpu"}, zero_force_ds_cpu_optimizer=True)
    e = only_error(compose(*TINY, "zero=custom", f"zero.config={path}"), cxx_toolchain=False)
    assert "needs a C++ compiler and ninja" in e.fix


def test_nodes_without_a_cluster_need_master_addr():
    e = only_error(compose("recipe=llama2_sft_lora", "gpus=4", "nodes=2"))
    assert e.key == "master_addr" and "master_addr=NODE0 node_rank=I" in e.fix and "hostfile" in e.fix
    assert errors(compose("recipe=llama2_sft_lora", "gpus=4", "nodes=2", "master_addr=10.0.0.1", "node_rank=1")) == []


def test_node_rank_out_of_range():
    e = only_error(compose("recipe=llama2_sft_lora", "gpus=4", "nodes=2", "master_addr=h", "node_rank=2"))
    assert e.key == "node_rank" and "[0, 2)" in e.fix
    assert only_error(compose("recipe=llama2_sft_lora", "gpus=4", "node_rank=1")).key == "node_rank"


def test_deepspeed_across_nodes_needs_a_hostfile(tmp_path):
    base = ("recipe=llama2_sft_lora", "gpus=4", "nodes=2", "zero=2", "backend=deepspeed")
    assert "hostfile=PATH" in only_error(compose(*base)).fix
    assert "no such file" in only_error(compose(*base, f"hostfile={tmp_path}/nope")).fix
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=4\n")
    e = only_error(compose(*base, f"hostfile={hostfile}"))
    assert e.key == "nodes" and "lists 1 host(s)" in e.fix
    hostfile.write_text("node-a slots=4\nnode-b slots=2\n")
    e = only_error(compose(*base, f"hostfile={hostfile}"))
    assert e.key == "gpus" and "gives node-b 2 slot(s)" in e.fix
    hostfile.write_text("node-a slots=4\nnode-b gpus=4\n")
    assert "line 2: expected `HOST slots=N`" in only_error(compose(*base, f"hostfile={hostfile}")).fix
    hostfile.write_text("node-a slots=4\nnode-b slots=4\n")
    assert errors(compose(*base, f"hostfile={hostfile}")) == []


def test_hostfile_with_torchrun(tmp_path):
    e = only_error(compose("recipe=llama2_sft_lora", "gpus=4", "nodes=2", "master_addr=h", f"hostfile={tmp_path}/h"))
    assert e.key == "hostfile" and "backend=deepspeed" in e.fix


@pytest.mark.parametrize("args, needle", [
    ([*TINY, "zero=2", "backend=single", "gpus=1"], "error: backend=single: zero=2 needs torch.distributed"),
    ([*TINY, "backend=deepspeed"], "error: backend=deepspeed: the deepspeed launcher runs a ZeRO config"),
    ([*TINY, "zero=custom", "zero.config={batch8}"], "train_micro_batch_size_per_gpu=8 disagrees with "
                                                      "train.per_device_train_batch_size=4"),
    ([*TINY, "zero=custom", "zero.config={fp16}", "precision=bf16"],
     "fp16.enabled=True disagrees with precision=bf16 (fp16.enabled=False)"),
    ([*TINY, "nodes=2"], "error: master_addr=None: nodes=2 without a cluster needs node 0's address"),
    (["recipe=llama2_sft_lora", "device=cpu", "gpus=2", "zero=3_offload", "adapter=full"],
     "error: zero=3_offload: offload needs about 169.4 GiB of host memory per node for 6.74B params"),
])
def test_cli_exits_2_and_starts_nothing(tmp_path, args, needle):
    files = {"batch8": custom(tmp_path, train_micro_batch_size_per_gpu=8), "fp16": str(tmp_path / "fp16.json")}
    (tmp_path / "fp16.json").write_text(json.dumps({**Z2, "fp16": {"enabled": True}}))
    run = tmp_path / "cwd"
    run.mkdir()
    r = run_launch(*(a.format(**files) for a in args), cwd=run)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "nothing was started" in r.stderr and "Traceback" not in r.stderr
    assert list(run.iterdir()) == []
