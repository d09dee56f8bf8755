"""DeepSpeed ZeRO: the ds config against the training config, offload against host memory."""
from __future__ import annotations

from typing import Any, Iterator

from launcher import zero
from launcher.facts import Facts
from launcher.precision import DEEPSPEED_FLAGS, resolved_precision
from launcher.topology import plan_batch, world_size
from launcher.validate.problem import Problem


def check_zero(cfg: Any, facts: Facts) -> Iterator[Problem]:
    z = cfg.zero
    if z.name == "none":  # with backend=deepspeed: refused by the combination matrix
        return
    if facts.deepspeed_version is None:
        yield Problem("zero", z.name, "deepspeed is not installed; `pip install deepspeed`, or zero=none")
    if not z.config:
        yield Problem("zero.config", z.config, "name your DeepSpeed JSON: zero=custom zero.config=PATH")
        return
    f = facts.ds_configs.get(z.config)
    if f is None or not f.exists:
        yield Problem("zero.config", z.config, "no such file; give a DeepSpeed JSON config (see ds_configs/)")
        return
    if f.error or not isinstance(f.content, dict):
        yield Problem("zero.config", z.config, f"{f.error or 'expected a JSON object'}; fix the file")
        return
    ds = f.content
    if zero.stage(ds) not in (0, 1, 2, 3):
        yield Problem("zero.config", z.config, f"zero_optimization.stage={zero.stage(ds)}; use 0, 1, 2 or 3")
    for what in ("optimizer", "param"):
        if zero.offload_device(ds, what) not in ("none", "cpu", "nvme"):
            yield Problem("zero.config", z.config, f"zero_optimization.offload_{what}.device="
                          f"{zero.offload_device(ds, what)}; use cpu, nvme or none")
    yield from _check_ds_values(cfg, z.config, ds)
    yield from _check_offload(cfg, facts, ds)


def _check_ds_values(cfg: Any, path: str, ds: dict) -> Iterator[Problem]:
    """What transformers would reject after loading the model, said before anything starts."""
    t, world = cfg.train, world_size(cfg)
    if cfg.global_batch_size is not None and (world < 1 or t.per_device_train_batch_size < 1
                                              or cfg.global_batch_size % (t.per_device_train_batch_size * world)):
        return  # the batch problem is reported on its own
    batch = plan_batch(cfg)
    expected = zero.expected_values(cfg, batch.gradient_accumulation_steps, batch.global_batch_size)
    for ds_key, have, want in zero.mismatches(ds, expected):
        yield Problem("zero.config", path, f"{ds_key}={have} disagrees with {want.describe()}; write \"auto\" "
                      f"there (it is then filled from the launch config), or change {want.key}")
    for key in zero.unfillable_autos(ds, expected):
        yield Problem("zero.config", path, f"{key}=\"auto\" is not a value transformers fills in; write a value")
    if resolved_precision(cfg) is None:
        flags = (zero.get(ds, "fp16.enabled"), zero.get(ds, "bf16.enabled"))
        if any(isinstance(v, bool) for v in flags):
            want = next((p for p, f in DEEPSPEED_FLAGS.items() if f == tuple(bool(v) for v in flags)), None)
            yield Problem("precision", cfg.precision.name, f"is decided on the GPU, but {path} fixes fp16.enabled="
                          f"{flags[0]}, bf16.enabled={flags[1]}; set " + (f"precision={want}, or " if want else "")
                          + "write \"auto\" for both in the ds config")


def _check_offload(cfg: Any, facts: Facts, ds: dict) -> Iterator[Problem]:
    if zero.offload_device(ds, "optimizer") == "none" and zero.offload_device(ds, "param") == "none":
        return
    # the toolchain and the host memory it needs are the node's facts: launcher.validate.node
    if zero.uses_cpu_adam(ds, facts) and cfg.train.optim not in zero.CPU_ADAM_OPTIMS:
        yield Problem("train.optim", cfg.train.optim, "under optimizer offload accelerate swaps the optimizer for "
                      f"DeepSpeedCPUAdam; use train.optim={zero.CPU_ADAM_OPTIMS[0]}, or set "
                      "zero_force_ds_cpu_optimizer: false in the ds config to step it on the CPU")
