"""validate(config, facts) -> every problem at once, each naming the key, the bad value and the fix.

Pure: runs before any process, allocation or GPU is touched. Errors stop the launch (exit 2);
warnings are printed and the launch goes on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError
from omegaconf.errors import ValidationError as OmegaConfValidationError

from launcher import zero
from launcher.facts import Facts
from launcher.plan import pick_backend, plan_batch
from launcher.schema import AdapterType, BackendType, Device, LaunchConfig, Precision

#: columns each data format needs in every row (optional ones are not listed)
REQUIRED_COLUMNS = {"alpaca": ("instruction", "output")}
REPORT_TO = ("tensorboard", "wandb")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    fix: str
    error: bool = True

    def __str__(self) -> str:
        kind = "error" if self.error else "warning"
        return f"{kind}: {self.key}={_show(self.value)}: {self.fix}"


def _show(value: Any) -> str:
    return str(value.value) if hasattr(value, "value") else str(value)


def validate(cfg: Any, facts: Facts) -> list[Problem]:
    return [
        *_check_schema(cfg),
        *_check_topology(cfg, facts),
        *_check_precision(cfg),
        *_check_zero(cfg, facts),
        *_check_model(cfg, facts),
        *_check_adapter(cfg),
        *_check_data(cfg, facts),
        *_check_batch(cfg),
        *_check_output(cfg, facts),
        *_check_logger(cfg),
    ]


def _check_schema(cfg: Any) -> Iterator[Problem]:
    # Hydra's `+key=value` appends even to a structured config: check against the schema once more.
    try:
        OmegaConf.merge(OmegaConf.structured(LaunchConfig), OmegaConf.to_container(cfg))
    except (ConfigKeyError, OmegaConfValidationError) as e:
        yield Problem(e.full_key, "?", f"not a key of the launch schema ({type(e).__name__}); check the "
                      "spelling against `launch --cfg job`")


def _check_topology(cfg: Any, facts: Facts) -> Iterator[Problem]:
    if cfg.gpus < 1:
        yield Problem("gpus", cfg.gpus, "must be >= 1 (processes per node); use gpus=1 for a single process")
    if cfg.nodes < 1:
        yield Problem("nodes", cfg.nodes, "must be >= 1; use nodes=1 on one machine")
    elif cfg.nodes > 1 and cfg.cluster.name == "local":
        yield from _check_local_nodes(cfg, facts)
    elif cfg.nodes == 1 and cfg.node_rank != 0:
        yield Problem("node_rank", cfg.node_rank, "must be 0 with nodes=1")
    if cfg.backend.name == BackendType.single and cfg.gpus * cfg.nodes > 1:
        yield Problem("backend", cfg.backend.name, f"runs one process but gpus={cfg.gpus} x nodes={cfg.nodes} "
                      "asks for more; use backend=torchrun (or auto), or gpus=1")
    if cfg.device == Device.cuda and cfg.gpus > facts.visible_gpus:
        where = f"{facts.visible_gpus} CUDA GPU(s) visible on {facts.hostname}"
        if cfg.dry_run:
            yield Problem("gpus", cfg.gpus, f"{where}; fine for a dry run, a real run needs them", error=False)
        else:
            yield Problem("gpus", cfg.gpus, f"{where}; use gpus<={facts.visible_gpus}"
                          + (", or device=cpu to run gloo ranks on the CPU" if facts.visible_gpus == 0 else ""))


def _check_local_nodes(cfg: Any, facts: Facts) -> Iterator[Problem]:
    """Several nodes without a cluster: the same `launch` runs on each node with its node_rank."""
    if not 0 <= cfg.node_rank < cfg.nodes:
        yield Problem("node_rank", cfg.node_rank, f"must be in [0, {cfg.nodes}): this node's rank (node 0 hosts "
                      "the rendezvous); run the same launch on each node with node_rank=0, 1, ...")
    if pick_backend(cfg) != BackendType.deepspeed.value:
        if cfg.hostfile:
            yield Problem("hostfile", cfg.hostfile, "is read by the deepspeed launcher only; use backend=deepspeed, "
                          "or give torchrun node 0's address with master_addr=HOST")
        if not cfg.master_addr:
            yield Problem("master_addr", cfg.master_addr, f"nodes={cfg.nodes} without a cluster needs node 0's "
                          "address: run `launch ... master_addr=NODE0 node_rank=I` on each node (torchrun), or use "
                          "backend=deepspeed hostfile=PATH, or a cluster (cluster=slurm)")
        return
    h = facts.hostfile
    if not cfg.hostfile:
        yield Problem("hostfile", None, f"backend=deepspeed across nodes={cfg.nodes} needs a DeepSpeed hostfile "
                      "(one `HOST slots=N` line per node): hostfile=PATH")
    elif h is None or not h.exists:
        yield Problem("hostfile", cfg.hostfile, "no such file; write one `HOST slots=N` line per node")
    elif h.error:
        yield Problem("hostfile", cfg.hostfile, f"{h.error}; fix the file")
    elif len(h.hosts) < cfg.nodes:
        yield Problem("nodes", cfg.nodes, f"{cfg.hostfile} lists {len(h.hosts)} host(s); add hosts to it or use "
                      f"nodes={len(h.hosts)}")
    else:
        for host, slots in h.hosts[:cfg.nodes]:
            if slots < cfg.gpus:
                yield Problem("gpus", cfg.gpus, f"{cfg.hostfile} gives {host} {slots} slot(s); use gpus<={slots} or "
                              "raise its slots")


def _check_precision(cfg: Any) -> Iterator[Problem]:
    if cfg.device == Device.cpu and cfg.precision.name == Precision.fp16:
        yield Problem("precision", cfg.precision.name,
                      "the CPU cannot train in fp16; use precision=fp32 (or auto, or bf16) with device=cpu")


def _check_zero(cfg: Any, facts: Facts) -> Iterator[Problem]:
    z = cfg.zero
    if z.name == "none":
        if cfg.backend.name == BackendType.deepspeed:
            yield Problem("backend", cfg.backend.name, "the deepspeed launcher runs a ZeRO config: pick zero=0|2|"
                          "2_offload|3|3_offload (or zero=custom zero.config=PATH), or backend=torchrun for plain DDP")
        return
    if cfg.backend.name == BackendType.single:
        yield Problem("backend", cfg.backend.name, f"zero={z.name} needs torch.distributed set up by a launcher; use "
                      "backend=torchrun or backend=deepspeed (either runs gpus=1 too), or zero=none")
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
    t, world = cfg.train, cfg.gpus * cfg.nodes
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
    if zero.resolved_precision(cfg) is None:
        flags = (zero.get(ds, "fp16.enabled"), zero.get(ds, "bf16.enabled"))
        if any(isinstance(v, bool) for v in flags):
            want = next((p for p, f in zero.PRECISION_FLAGS.items() if f == tuple(bool(v) for v in flags)), None)
            yield Problem("precision", cfg.precision.name, f"is decided on the GPU, but {path} fixes fp16.enabled="
                          f"{flags[0]}, bf16.enabled={flags[1]}; set " + (f"precision={want}, or " if want else "")
                          + "write \"auto\" for both in the ds config")


def _check_offload(cfg: Any, facts: Facts, ds: dict) -> Iterator[Problem]:
    if zero.offload_device(ds, "optimizer") == "none" and zero.offload_device(ds, "param") == "none":
        return
    forced = ds.get("zero_force_ds_cpu_optimizer")
    if forced is True and not facts.cxx_toolchain and "optimizer" not in ds:
        yield Problem("zero.config", cfg.zero.config, "zero_force_ds_cpu_optimizer=true needs DeepSpeedCPUAdam, which "
                      "needs a C++ compiler and ninja to build here; install them, or set it to false")
    if zero.uses_cpu_adam(ds, facts) and cfg.train.optim not in zero.CPU_ADAM_OPTIMS:
        yield Problem("train.optim", cfg.train.optim, "under optimizer offload accelerate swaps the optimizer for "
                      f"DeepSpeedCPUAdam; use train.optim={zero.CPU_ADAM_OPTIMS[0]}, or set "
                      "zero_force_ds_cpu_optimizer: false in the ds config to step it on the CPU")
    est = zero.estimate(ds, zero.model_size(cfg, facts), cfg.gpus, cfg.nodes)
    # DeepSpeed's estimate counts optimizer states for every parameter: only full fine-tuning is bound by it.
    if cfg.adapter.name != AdapterType.full or est is None or not facts.host_memory_total:
        return
    if est.cpu_bytes_per_node > facts.host_memory_total:
        yield Problem("zero", cfg.zero.name, f"offload needs about {est.cpu_bytes_per_node / zero.GIB:.1f} GiB of host "
                      f"memory per node for {est.total_params / 1e9:.2f}B params (DeepSpeed's {est.function}) but "
                      f"{facts.hostname} has {facts.host_memory_total / zero.GIB:.1f} GiB; use more nodes, a smaller "
                      "model, adapter=lora, or keep the states on the GPUs (zero=3)", error=not cfg.dry_run)


def _check_model(cfg: Any, facts: Facts) -> Iterator[Problem]:
    name = cfg.model.model_name_or_path
    if facts.paths.get(name) is False:
        yield Problem("model.model_name_or_path", name,
                      "no such local directory; build the tiny model with `python scripts/make_tiny_model.py`, "
                      "or give an existing directory or a hub id (org/name)")


def _check_adapter(cfg: Any) -> Iterator[Problem]:
    a = cfg.adapter
    if a.name != AdapterType.lora:
        return
    if a.lora_rank < 1:
        yield Problem("adapter.lora_rank", a.lora_rank, "must be >= 1; typical values are 8, 16, 32, 64")
    if not [t for t in str(a.lora_target).split(",") if t.strip()]:
        yield Problem("adapter.lora_target", a.lora_target, "name the modules to adapt, e.g. q_proj,v_proj")
    if not 0.0 <= a.lora_dropout < 1.0:
        yield Problem("adapter.lora_dropout", a.lora_dropout, "must be in [0, 1); e.g. 0.05")


def _check_data(cfg: Any, facts: Facts) -> Iterator[Problem]:
    d = cfg.data
    if d.formatting not in REQUIRED_COLUMNS:
        yield Problem("data.formatting", d.formatting, f"unknown format; use one of {', '.join(REQUIRED_COLUMNS)}")
        return
    f = facts.data.get(d.dataset)
    if f is None or not f.exists:
        yield Problem("data.dataset", d.dataset, "no such file; give a .json or .jsonl file of rows")
        return
    if f.error:
        yield Problem("data.dataset", d.dataset, f"{f.error}; fix the file")
        return
    if f.rows == 0:
        yield Problem("data.dataset", d.dataset, "the file holds no rows; add rows or pick another file")
        return
    required = REQUIRED_COLUMNS[d.formatting]
    bad = [(i, [c for c in required if c not in keys]) for i, keys in enumerate(f.row_keys)]
    bad = [(i, missing) for i, missing in bad if missing]
    if bad:
        shown = "; ".join(f"row {i} lacks {', '.join(m)}" for i, m in bad[:5])
        more = f" (and {len(bad) - 5} more rows)" if len(bad) > 5 else ""
        yield Problem("data.dataset", d.dataset, f"{d.formatting} rows need columns {', '.join(required)}: "
                      f"{shown}{more}; fix those rows or set data.formatting to the file's format")
    if d.cutoff_len < 8:
        yield Problem("data.cutoff_len", d.cutoff_len, "must be >= 8 tokens; typical values are 1024-4096")
    if d.max_samples is not None and d.max_samples < 1:
        yield Problem("data.max_samples", d.max_samples, "must be >= 1, or null for all rows")


def _nearest_multiples(value: int, step: int) -> list[int]:
    below = (value // step) * step
    return [m for m in (below, below + step) if m > 0]


def _check_batch(cfg: Any) -> Iterator[Problem]:
    t = cfg.train
    world = cfg.gpus * cfg.nodes
    if t.per_device_train_batch_size < 1:
        yield Problem("train.per_device_train_batch_size", t.per_device_train_batch_size, "must be >= 1")
        return
    if t.gradient_accumulation_steps < 1:
        yield Problem("train.gradient_accumulation_steps", t.gradient_accumulation_steps, "must be >= 1")
    if cfg.global_batch_size is None or world < 1:
        return
    step = t.per_device_train_batch_size * world
    if cfg.global_batch_size < 1 or cfg.global_batch_size % step:
        fixes = " or ".join(f"global_batch_size={m}" for m in _nearest_multiples(cfg.global_batch_size, step))
        per_device = [b for b in range(1, cfg.global_batch_size + 1)
                      if cfg.global_batch_size % (b * world) == 0 and b <= 4 * t.per_device_train_batch_size]
        alt = f", or per_device_train_batch_size={per_device[-1]}" if per_device else ""
        yield Problem("global_batch_size", cfg.global_batch_size,
                      f"not divisible by per_device_train_batch_size x world size = "
                      f"{t.per_device_train_batch_size} x {world} = {step}; use {fixes}{alt}")


def _check_output(cfg: Any, facts: Facts) -> Iterator[Problem]:
    if cfg.resume and cfg.overwrite_output_dir:
        yield Problem("overwrite_output_dir", True, "contradicts resume=true; pick one")
        return
    if cfg.resume and not cfg.output_dir:
        yield Problem("resume", True, "needs the run to continue; set output_dir=RUN_DIR")
        return
    out = facts.output_dir
    if cfg.resume or cfg.overwrite_output_dir or not out.exists:
        return
    if out.finished:
        yield Problem("output_dir", cfg.output_dir, "already holds a finished run (summary.json); use "
                      "overwrite_output_dir=true to replace it, or another output_dir")
    elif out.has_checkpoints:
        yield Problem("output_dir", cfg.output_dir, "holds checkpoints of an unfinished run; use resume=true "
                      "to continue it, or overwrite_output_dir=true to start over")


def _check_logger(cfg: Any) -> Iterator[Problem]:
    for r in cfg.logger.report_to:
        if r not in REPORT_TO:
            yield Problem("logger.report_to", list(cfg.logger.report_to),
                          f"unknown logger {r!r}; use any of {', '.join(REPORT_TO)}, e.g. logger=tensorboard")
    if cfg.logger.wandb_mode not in WANDB_MODES:
        yield Problem("logger.wandb_mode", cfg.logger.wandb_mode, f"use one of {', '.join(WANDB_MODES)}")
