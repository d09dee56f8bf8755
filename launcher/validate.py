"""validate(config, facts) -> every problem at once, each naming the key, the bad value and the fix.

Pure: runs before any process, allocation or GPU is touched. Errors stop the launch (exit 2);
warnings are printed and the launch goes on.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError
from omegaconf.errors import ValidationError as OmegaConfValidationError

from launcher import rewards, zero
from launcher.data.formats import KIND_NAMES, ONLINE_STAGES, STAGE_KINDS, RowError, convert
from launcher.data.registry import DataError, DatasetAttr, dataset_names, detect, resolve, split_floats
from launcher.data.templates import TEMPLATE_NAMES
from launcher.facts import DataFileFacts, Facts, RunRefFacts, is_local_path
from launcher.plan import pick_backend, plan_batch
from launcher.schema import (AdapterType, Attention, BackendType, ClusterType, Device, LaunchConfig, MixStrategy,
                             Precision, StageConfig, schema_fields, split_list)

EVAL_STRATEGIES = ("no", "steps", "epoch")
REPORT_TO = ("tensorboard", "wandb")
WANDB_MODES = ("online", "offline", "disabled")
#: adapters that train on a frozen base, which is what may be quantized
FROZEN_BASE = (AdapterType.lora, AdapterType.qlora, AdapterType.prefix)
#: peft_type of the adapter_config.json each adapter continues from
PEFT_TYPES = {AdapterType.lora: "LORA", AdapterType.qlora: "LORA", AdapterType.prefix: "PREFIX_TUNING"}
#: transformers drops the past_key_values path peft's prefix tuning uses here (pyproject bounds it too)
PREFIX_TRANSFORMERS_BELOW = (5, 40)
#: TRL's DPO loss types (DPOConfig.loss_type; "sft" is dpo_ftx's term)
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")
#: the stages that read each stage.* key (another stage ignores it: a warning when it is set)
STAGE_KEYS = {
    "dpo_beta": ("dpo", "kto"), "dpo_loss": ("dpo",), "dpo_ftx": ("dpo",), "kto_chosen_weight": ("kto",),
    "kto_rejected_weight": ("kto",), "ref_model": ("dpo", "kto", "ppo"), "precompute_ref_log_probs": ("dpo", "kto"),
    "reward_model": ONLINE_STAGES, "reward_funcs": ("grpo", "rloo"), "kl_coef": ONLINE_STAGES,
    "num_generations": ("grpo", "rloo"), "max_completion_length": ONLINE_STAGES, "temperature": ONLINE_STAGES,
    "top_p": ("grpo", "rloo"), "top_k": ("grpo", "rloo"), "ppo_epochs": ("ppo",), "ppo_buffer_size": ("ppo",),
    "ppo_target": ("ppo",), "ppo_score_norm": ("ppo",), "ppo_whiten_rewards": ("ppo",),
}


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
        *_check_precision(cfg, facts),
        *_check_zero(cfg, facts),
        *_check_model(cfg, facts),
        *_check_adapter(cfg, facts),
        *_check_quantization(cfg, facts),
        *_check_adapter_paths(cfg, facts),
        *_check_data(cfg, facts),
        *_check_stage(cfg, facts),
        *_check_batch(cfg),
        *_check_output(cfg, facts),
        *_check_logger(cfg),
        *_check_slurm(cfg, facts),
    ]


def _unknown_key(key: str, value: Any) -> Problem | None:
    parent, _, leaf = key.rpartition(".")
    valid = schema_fields(parent)
    if valid is None or leaf in valid:
        return None
    where = f"in {parent}" if parent else "at the top level"
    return Problem(key, value, f"unknown key {where}; valid keys: {', '.join(valid)}")


def unknown_override_keys(overrides: Sequence[str]) -> list[Problem]:
    """Overrides naming a key the schema lacks, each with the valid keys listed (before Hydra composes)."""
    problems = []
    for o in overrides:
        key, eq, value = o.lstrip("+").partition("=")
        if o.startswith(("-", "~")) or not eq or "/" in key or key.split(".")[0] in ("hydra", "recipe"):
            continue
        problem = _unknown_key(key, value)
        if problem:
            problems.append(problem)
    return problems


def _check_schema(cfg: Any) -> Iterator[Problem]:
    # Hydra's `+key=value` appends even to a structured config: check against the schema once more.
    try:
        OmegaConf.merge(OmegaConf.structured(LaunchConfig), OmegaConf.to_container(cfg))
    except (ConfigKeyError, OmegaConfValidationError) as e:
        yield _unknown_key(e.full_key, "?") or Problem(e.full_key, "?", f"does not fit the schema: {e.msg}")


def _check_topology(cfg: Any, facts: Facts) -> Iterator[Problem]:
    if cfg.gpus < 1:
        yield Problem("gpus", cfg.gpus, "must be >= 1 (processes per node); use gpus=1 for a single process")
    if cfg.nodes < 1:
        yield Problem("nodes", cfg.nodes, "must be >= 1; use nodes=1 on one machine")
    elif cfg.nodes > 1 and cfg.cluster.name == ClusterType.local:
        yield from _check_local_nodes(cfg, facts)
    elif cfg.nodes == 1 and cfg.node_rank != 0:
        yield Problem("node_rank", cfg.node_rank, "must be 0 with nodes=1")
    if cfg.backend.name == BackendType.single and cfg.gpus * cfg.nodes > 1:
        yield Problem("backend", cfg.backend.name, f"runs one process but gpus={cfg.gpus} x nodes={cfg.nodes} "
                      "asks for more; use backend=torchrun (or auto), or gpus=1")
    # On Slurm the GPUs are the allocation's, not this (login) node's.
    if cfg.device == Device.cuda and cfg.cluster.name == ClusterType.local and cfg.gpus > facts.visible_gpus:
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



def _pre_ampere(facts: Facts) -> list[str]:
    """Visible GPUs without bf16 (compute capability < 8.0), as 'name (cc)'."""
    return [f"{g.name} (compute capability {g.compute_capability:.1f})" for g in facts.gpus
            if g.compute_capability < 8.0]


def _check_precision(cfg: Any, facts: Facts) -> Iterator[Problem]:
    p = cfg.precision.name
    if cfg.device == Device.cpu and p == Precision.fp16:
        yield Problem("precision", p,
                      "the CPU cannot train in fp16; use precision=fp32 (or auto, or bf16) with device=cpu")
    old = _pre_ampere(facts) if cfg.device == Device.cuda else []
    if p in (Precision.bf16, Precision.pure_bf16) and old:
        yield Problem("precision", p, f"{old[0]} has no bf16 (it needs compute capability >= 8.0, Ampere or "
                      "newer); use precision=fp16 (mixed, with loss scaling) or precision=auto, which picks it")


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
    m = cfg.model
    name = m.model_name_or_path
    if facts.paths.get(name) is False:
        yield Problem("model.model_name_or_path", name,
                      "no such local directory; build the tiny model with `python scripts/make_tiny_model.py`, "
                      "or give an existing directory or a hub id (org/name)")
    if m.attn == Attention.flash_attention_2:
        yield from _check_flash_attention(cfg, facts)
    if m.rope_factor is not None and m.rope_factor <= 1.0:
        yield Problem("model.rope_factor", m.rope_factor, "must be > 1 (the context grows by this factor), "
                      "or null to derive it from data.cutoff_len")
    max_pos = facts.model_config.get("max_position_embeddings")
    if m.rope_scaling is not None and m.rope_factor is None and max_pos and cfg.data.cutoff_len <= max_pos:
        yield Problem("model.rope_scaling", m.rope_scaling, f"data.cutoff_len={cfg.data.cutoff_len} fits the "
                      f"model's max_position_embeddings={max_pos}, so RoPE is not scaled; raise data.cutoff_len "
                      "or set model.rope_factor", error=False)


def _check_flash_attention(cfg: Any, facts: Facts) -> Iterator[Problem]:
    key, value = "model.attn", cfg.model.attn
    if cfg.device == Device.cpu:
        yield Problem(key, value, "FlashAttention-2 runs on CUDA GPUs only; use model.attn=sdpa with device=cpu")
        return
    if facts.packages.get("flash-attn") is None:
        yield Problem(key, value, "the flash-attn package is not installed; `pip install flash-attn "
                      "--no-build-isolation`, or use model.attn=sdpa", error=not cfg.dry_run)
    old = _pre_ampere(facts)
    if old:
        yield Problem(key, value, f"{old[0]} is not supported by FlashAttention-2 (Ampere or newer); "
                      "use model.attn=sdpa")
    if cfg.precision.name == Precision.fp32:
        yield Problem(key, value, "FlashAttention-2 computes in fp16/bf16 only; use precision=bf16 (or auto), "
                      "or model.attn=sdpa with precision=fp32")


def _check_adapter(cfg: Any, facts: Facts) -> Iterator[Problem]:
    a = cfg.adapter
    if a.name in (AdapterType.lora, AdapterType.qlora):
        if a.lora_rank < 1:
            yield Problem("adapter.lora_rank", a.lora_rank, "must be >= 1; typical values are 8, 16, 32, 64")
        if not split_list(a.lora_target):
            yield Problem("adapter.lora_target", a.lora_target, "name the modules to adapt, e.g. q_proj,v_proj, "
                          "or `all` for every linear layer")
        if not 0.0 <= a.lora_dropout < 1.0:
            yield Problem("adapter.lora_dropout", a.lora_dropout, "must be in [0, 1); e.g. 0.05")
    elif a.name == AdapterType.freeze:
        layers = facts.model_config.get("num_hidden_layers")
        if a.freeze_trainable_layers == 0:
            yield Problem("adapter.freeze_trainable_layers", 0, "train at least one layer: n > 0 trains the last "
                          "n hidden layers, n < 0 the first |n|; e.g. 2")
        elif layers and abs(a.freeze_trainable_layers) > layers:
            yield Problem("adapter.freeze_trainable_layers", a.freeze_trainable_layers,
                          f"the model has {layers} hidden layers; use a value in [-{layers}, {layers}] "
                          "(or adapter=full to train everything)")
        if not split_list(a.freeze_trainable_modules):
            yield Problem("adapter.freeze_trainable_modules", a.freeze_trainable_modules,
                          "name modules inside a layer (e.g. mlp,self_attn) or `all`")
    elif a.name == AdapterType.prefix:
        if a.pre_seq_len < 1:
            yield Problem("adapter.pre_seq_len", a.pre_seq_len, "must be >= 1; typical values are 16-128")
        if a.prefix_hidden_size is not None and a.prefix_hidden_size < 1:
            yield Problem("adapter.prefix_hidden_size", a.prefix_hidden_size, "must be >= 1, or null for the "
                          "model's hidden_size")
        if cfg.train.gradient_checkpointing:
            yield Problem("train.gradient_checkpointing", True, "peft's prefix tuning does not work with gradient "
                          "checkpointing; set train.gradient_checkpointing=false (or use adapter=lora)")
        version = facts.packages.get("transformers")
        if version and _release(version) >= PREFIX_TRANSFORMERS_BELOW:
            yield Problem("adapter", a.name, f"transformers {version} drops the past_key_values path peft's prefix "
                          "tuning runs on; `pip install 'transformers<5.40'` (as pyproject.toml pins), "
                          "or use adapter=lora")


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as 5.24.0 or 5.40.0.dev0."""
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def _check_quantization(cfg: Any, facts: Facts) -> Iterator[Problem]:
    a = cfg.adapter
    bits = a.quantization_bit
    if a.name == AdapterType.qlora and bits is None:
        yield Problem("adapter.quantization_bit", None, "adapter=qlora quantizes the base: set 4 or 8")
        return
    if bits is None:
        return
    key = "adapter" if a.name == AdapterType.qlora else "adapter.quantization_bit"
    value = a.name if a.name == AdapterType.qlora else bits
    if bits not in (4, 8):
        yield Problem("adapter.quantization_bit", bits, "bitsandbytes quantizes to 4 or 8 bits; use 4 (QLoRA) or 8")
    if a.name not in FROZEN_BASE:
        yield Problem("adapter.quantization_bit", bits, f"adapter={a.name.value} trains the base's weights, which "
                      "cannot be quantized; use adapter=qlora (or lora/prefix), or adapter.quantization_bit=null")
        return
    if cfg.device == Device.cpu:
        fix = "use adapter=lora" if a.name == AdapterType.qlora else "set adapter.quantization_bit=null"
        yield Problem(key, value, "bitsandbytes quantization needs a CUDA GPU; on the CPU train the unquantized "
                      f"model: {fix} (with precision=fp32 or bf16), or run on a GPU with device=cuda")
    elif facts.packages.get("bitsandbytes") is None:
        yield Problem(key, value, "the bitsandbytes package is not installed; `pip install bitsandbytes`, or "
                      "use adapter=lora", error=not cfg.dry_run)
    if len(split_list(a.adapter_name_or_path)) > (0 if a.create_new_adapter else 1):
        yield Problem("adapter.adapter_name_or_path", a.adapter_name_or_path, "adapters cannot be merged into a "
                      "quantized base; merge them first (launch-export), then quantize the export, or continue "
                      "from one adapter only")


def _check_adapter_paths(cfg: Any, facts: Facts) -> Iterator[Problem]:
    a = cfg.adapter
    paths = split_list(a.adapter_name_or_path)
    key = "adapter.adapter_name_or_path"
    if a.create_new_adapter and not paths:
        yield Problem("adapter.create_new_adapter", True, "there is no adapter to start from: set "
                      "adapter.adapter_name_or_path, or drop create_new_adapter", error=False)
    if not paths:
        return
    if a.name not in PEFT_TYPES:
        yield Problem(key, a.adapter_name_or_path, f"adapter={a.name.value} trains the model itself; merge the "
                      "adapter first (launch-export RUN_DIR) and set model.model_name_or_path to the export")
        return
    if a.name == AdapterType.prefix and len(paths) > 1:
        yield Problem(key, a.adapter_name_or_path, "prefix tuning continues from one prefix adapter; "
                      "prefixes cannot be merged")
    for path in paths:
        found = facts.adapters.get(path)
        run = facts.runs.get(path, RunRefFacts())
        if found is None and run.run_dir is not None and _same_path(run.run_dir, path):
            yield Problem(key, path, f"is a run dir; its adapter is in {os.path.join(path, 'final')}: "
                          f"adapter.adapter_name_or_path={os.path.join(path, 'final')}")
        elif found is None:
            yield Problem(key, path, "no adapter_config.json there; give a directory saved by peft, e.g. a "
                          "previous run's RUN_DIR/final")
        elif found != PEFT_TYPES[a.name]:
            yield Problem(key, path, f"holds a {found} adapter, not one adapter={a.name.value} can continue; "
                          "pick the matching adapter (LORA: lora/qlora, PREFIX_TUNING: prefix)")
        yield from _check_same_base(cfg, key, path, run)


def _check_data(cfg: Any, facts: Facts) -> Iterator[Problem]:
    d, stage = cfg.data, _show(cfg.stage.name)
    names = dataset_names(d.dataset) if d.dataset is not None else []
    if not names:
        yield Problem("data.dataset", d.dataset, "name at least one dataset: a name from dataset_info.json, a "
                      "data file or a directory; several as 'a,b' (quoted) or [a,b]")
    if d.template not in TEMPLATE_NAMES:
        yield Problem("data.template", d.template, f"unknown template; use one of {', '.join(TEMPLATE_NAMES)}")
    yield from _check_data_numbers(cfg, len(names))
    if facts.data.registry_error:
        yield Problem("data.dataset_dir", d.dataset_dir, f"{facts.data.registry_error}; fix the file")
        return
    total_rows: Optional[int] = 0
    for name in names:
        try:
            attr = resolve(name, facts.data.registry, d.dataset_dir, facts.data.paths)
        except DataError as e:
            yield Problem("data.dataset", name, str(e))
            total_rows = None
            continue
        problems, rows = _check_dataset(attr, stage, facts)
        yield from (Problem("data.dataset", name, p) for p in problems)
        if rows is None or total_rows is None:
            total_rows = None
        else:
            total_rows += min(rows, d.max_samples) if d.max_samples is not None else rows
    if total_rows and d.val_size >= 1 and d.val_size >= total_rows and d.mix_strategy == MixStrategy.concat:
        yield Problem("data.val_size", d.val_size, f"leaves no training row: the datasets hold {total_rows} "
                      "rows; use a fraction like 0.1 or a smaller count")


def _check_dataset(attr: DatasetAttr, stage: str, facts: Facts) -> tuple[list[str], Optional[int]]:
    """Problems of one resolved dataset, and its row count (None when not known before loading)."""
    if attr.source not in ("file",) and not attr.files:
        return [], None  # a hub or save_to_disk dataset: read by the worker only
    scans = [(f, facts.data.files.get(f, DataFileFacts(False))) for f in attr.files]
    problems = [f"{f}: no such file" if not s.exists else s.error for f, s in scans if not s.exists or s.error]
    if problems:
        return problems, None
    rows = sum(s.rows for _, s in scans)
    if rows == 0:
        return [f"{attr.path} holds no rows; add rows or pick another dataset"], 0
    attr = detect(attr, scans[0][1].sample[0])
    if attr.kind not in STAGE_KINDS[stage]:
        wanted = " or ".join(KIND_NAMES[k] for k in STAGE_KINDS[stage])
        return [f"{attr.path} holds {KIND_NAMES[attr.kind]}; stage={stage} takes {wanted}: pick such a dataset "
                "(or map its columns in dataset_info.json: ranking + chosen/rejected for pairwise, kto_tag for kto)"], \
            rows
    bad, kept, scanned = [], 0, 0
    for f, scan in scans:
        for i, row in enumerate(scan.sample):
            scanned += 1
            try:
                kept += convert(row, attr, stage) is not None
            except RowError as e:
                bad.append(f"{Path(f).name} row {i} {e}" if len(scans) > 1 else f"row {i} {e}")
    if bad:
        more = f" (and {len(bad) - 5} more rows)" if len(bad) > 5 else ""
        how = "map its columns in dataset_info.json" if attr.formatting == "alpaca" else \
            "map its columns and tags in dataset_info.json"
        return [f"{attr.formatting} rows: {'; '.join(bad[:5])}{more}; fix those rows, or {how}"], rows
    if kept == 0 and scanned == rows:
        what = "text" if stage == "pt" else "response"
        return [f"empty after filtering: all {rows} rows have an empty {what}"], 0
    return [], rows


def _same_path(a: str, b: str) -> bool:
    norm = lambda p: os.path.normpath(os.path.abspath(os.path.expanduser(p)))  # noqa: E731
    return norm(a) == norm(b)


def _same_model(a: str, b: str) -> bool:
    return _same_path(a, b) if is_local_path(a) and is_local_path(b) else a == b


def _check_same_base(cfg: Any, key: str, path: str, run: RunRefFacts) -> Iterator[Problem]:
    """An earlier run a stage builds on must have trained on this run's base model (same weights, tokenizer)."""
    base = cfg.model.model_name_or_path
    if run.run_dir is not None and run.base_model is not None and not _same_model(run.base_model, base):
        yield Problem(key, path, f"that run trained on {run.base_model}, this one on model.model_name_or_path="
                      f"{base}; use the same base model (model.model_name_or_path={run.base_model}), or a run "
                      "trained on this one")


def _check_rm_run(cfg: Any, key: str, path: Optional[str], facts: Facts) -> Iterator[Problem]:
    """stage.reward_model: a finished rm run dir (or its final/) on the same base model."""
    fix = "give the run dir of a finished stage=rm run on the same base model (e.g. recipe=tiny_rm's)"
    run = facts.runs.get(path, RunRefFacts()) if path else RunRefFacts()
    if not path:
        yield Problem(key, path, f"stage={_show(cfg.stage.name)} scores its samples with a reward model: {fix}")
    elif not run.exists:
        yield Problem(key, path, f"no such directory; {fix}")
    elif run.run_dir is None:
        yield Problem(key, path, f"not a run dir (no launcher config.yaml there or above it); {fix}")
    elif run.stage != "rm":
        yield Problem(key, path, f"a stage={run.stage} run, not a reward model; {fix}")
    elif not run.has_final:
        yield Problem(key, path, f"the rm run {run.run_dir} has no final/ (it has not finished); {fix}")
    else:
        yield from _check_same_base(cfg, key, path, run)


def _check_stage(cfg: Any, facts: Facts) -> Iterator[Problem]:
    s, stage, a = cfg.stage, _show(cfg.stage.name), cfg.adapter
    defaults = StageConfig()
    for k, stages in STAGE_KEYS.items():
        if stage not in stages and getattr(s, k) != getattr(defaults, k):
            yield Problem(f"stage.{k}", getattr(s, k), f"stage={stage} does not read it (only "
                          f"{', '.join(stages)}); drop it", error=False)
    if stage in ("pt", "sft"):
        return
    if a.name == AdapterType.prefix:
        needs = "a sequence-classification head" if stage == "rm" else "TRL's reference and sampling paths"
        yield Problem("adapter", a.name, f"prefix tuning (P-Tuning v2) trains with stage=pt or sft only; stage={stage} "
                      f"({needs}) needs a weight adapter: use adapter=lora (or qlora, freeze, full)")
    if stage == "rm" and a.adapter_name_or_path and not a.create_new_adapter and a.name in PEFT_TYPES:
        yield Problem("adapter.create_new_adapter", False, "stage=rm trains a new score head, which an adapter "
                      "trained for generation lacks: set adapter.create_new_adapter=true (the adapter is merged "
                      "into the base and a new one trains with the head)")
    if cfg.data.packing:
        yield Problem("data.packing", True, f"packing applies to stage=pt and sft; stage={stage} keeps each row "
                      "whole: set data.packing=false")
    if cfg.data.streaming:
        yield Problem("data.streaming", True, f"streaming feeds stage=pt and sft; stage={stage} reads the "
                      "tokenized cache: set data.streaming=false")
    if stage in ("dpo", "kto"):
        yield from _check_preference(cfg, stage)
    if stage in ONLINE_STAGES:
        yield from _check_online(cfg, facts, stage)
    if s.ref_model and stage in STAGE_KEYS["ref_model"]:
        run = facts.runs.get(s.ref_model, RunRefFacts())
        if is_local_path(s.ref_model) and not run.exists:
            yield Problem("stage.ref_model", s.ref_model, "no such directory; give a model directory, a hub id or "
                          "an earlier run dir, or null for the policy as the stage starts")
        elif run.run_dir is not None and not run.has_final:
            yield Problem("stage.ref_model", s.ref_model, f"the run {run.run_dir} has no final/ (it has not "
                          "finished); give a finished run")
        elif run.run_dir is not None:
            yield from _check_same_base(cfg, "stage.ref_model", s.ref_model, run)


def _check_preference(cfg: Any, stage: str) -> Iterator[Problem]:
    s = cfg.stage
    if s.dpo_beta <= 0:
        yield Problem("stage.dpo_beta", s.dpo_beta, "must be > 0; typical values are 0.05-0.5 (default 0.1)")
    if stage == "dpo" and s.dpo_loss not in DPO_LOSSES:
        yield Problem("stage.dpo_loss", s.dpo_loss, f"unknown DPO loss; use one of {', '.join(DPO_LOSSES)}")
    if stage == "dpo" and s.dpo_ftx < 0:
        yield Problem("stage.dpo_ftx", s.dpo_ftx, "the weight of the SFT term must be >= 0 (0: none)")
    if stage == "kto":
        for k in ("kto_chosen_weight", "kto_rejected_weight"):
            if getattr(s, k) <= 0:
                yield Problem(f"stage.{k}", getattr(s, k), "must be > 0 (default 1.0)")
        if cfg.train.per_device_train_batch_size < 2:
            yield Problem("train.per_device_train_batch_size", cfg.train.per_device_train_batch_size,
                          "KTO estimates its KL term from the other rows of a batch: use >= 2")


def _check_online(cfg: Any, facts: Facts, stage: str) -> Iterator[Problem]:
    s, t = cfg.stage, cfg.train
    if cfg.data.val_size or t.eval_strategy != "no":
        key, value = ("data.val_size", cfg.data.val_size) if cfg.data.val_size else ("train.eval_strategy",
                                                                                    t.eval_strategy)
        yield Problem(key, value, f"stage={stage} evaluates nothing here (its metrics come from its own samples): "
                      "set data.val_size=0 and train.eval_strategy=no")
    if stage == "ppo" or s.reward_model:
        yield from _check_rm_run(cfg, "stage.reward_model", s.reward_model, facts)
    if stage != "ppo":
        if not s.reward_funcs and not s.reward_model:
            yield Problem("stage.reward_funcs", [], f"stage={stage} needs a reward: name functions from "
                          f"launcher/rewards.py ({', '.join(sorted(rewards.REWARDS))}), e.g. "
                          "stage.reward_funcs=[match], and/or an rm run: stage.reward_model=RUN_DIR")
        for name in s.reward_funcs:
            if name not in rewards.REWARDS and not rewards.is_import_path(name):
                yield Problem("stage.reward_funcs", name, f"unknown reward function; registered: "
                              f"{', '.join(sorted(rewards.REWARDS))}, or give module.path:function")
        if s.num_generations < 2:
            yield Problem("stage.num_generations", s.num_generations, "needs >= 2 completions per prompt to "
                          "compare them; typical values are 4-16")
        else:
            batch = plan_batch(cfg)
            generation_batch = batch.per_device_train_batch_size * batch.world_size * \
                batch.gradient_accumulation_steps
            if generation_batch % s.num_generations:
                yield Problem("stage.num_generations", s.num_generations, f"the completions sampled per step "
                              f"(per_device_train_batch_size x world size x gradient_accumulation_steps = "
                              f"{generation_batch}) must hold whole groups; use a divisor of {generation_batch}")
        if not 0 < s.top_p <= 1:
            yield Problem("stage.top_p", s.top_p, "must be in (0, 1]; 1 samples the full distribution")
        if s.top_k < 0:
            yield Problem("stage.top_k", s.top_k, "must be >= 0 (0: no top-k)")
    if s.max_completion_length < 1:
        yield Problem("stage.max_completion_length", s.max_completion_length, "must be >= 1 token")
    if s.temperature <= 0:
        yield Problem("stage.temperature", s.temperature, "must be > 0 (sampling); e.g. 0.7-1.0")
    if s.kl_coef is not None and s.kl_coef < 0:
        yield Problem("stage.kl_coef", s.kl_coef, "must be >= 0 (0: no KL penalty), or null for TRL's default")
    if stage == "ppo":
        yield from _check_ppo(cfg)
        run = facts.runs.get(s.reward_model, RunRefFacts()) if s.reward_model else RunRefFacts()
        if s.ppo_score_norm and run.stage == "rm" and run.has_final and not run.reward_stats:
            yield Problem("stage.ppo_score_norm", True, f"the rm run {run.run_dir} recorded no reward statistics "
                          "(summary.json reward_mean/reward_std; an rm run from an older launcher): retrain it, or "
                          "set stage.ppo_score_norm=false")


def _check_ppo(cfg: Any) -> Iterator[Problem]:
    s = cfg.stage
    if cfg.resume:
        yield Problem("resume", True, "TRL's PPOTrainer cannot resume from a checkpoint; start a new run")
    if cfg.train.gradient_checkpointing:
        yield Problem("train.gradient_checkpointing", True, "TRL's PPOTrainer does not checkpoint activations; "
                      "it trains without (set it to false to silence this)", error=False)
    if s.ppo_epochs < 1:
        yield Problem("stage.ppo_epochs", s.ppo_epochs, "must be >= 1 (default 4)")
    if s.ppo_target is not None and s.ppo_target <= 0:
        yield Problem("stage.ppo_target", s.ppo_target, "the target KL must be > 0 (e.g. 6.0), or null for a fixed "
                      "kl_coef")
    batch = plan_batch(cfg)
    rollouts = batch.per_device_train_batch_size * batch.gradient_accumulation_steps
    if s.ppo_buffer_size < 1 or rollouts % s.ppo_buffer_size:
        yield Problem("stage.ppo_buffer_size", s.ppo_buffer_size, f"must divide the rollouts per rank "
                      f"(per_device_train_batch_size x gradient_accumulation_steps = {rollouts}) into mini-batches")
    elif s.ppo_whiten_rewards and rollouts // s.ppo_buffer_size < 8:
        yield Problem("stage.ppo_whiten_rewards", True, f"whitening needs >= 8 rollouts per mini-batch and rank, "
                      f"got {rollouts // s.ppo_buffer_size}; raise the batch or lower ppo_buffer_size")


def _check_data_numbers(cfg: Any, n_datasets: int) -> Iterator[Problem]:
    d, t = cfg.data, cfg.train
    if d.cutoff_len < 8:
        yield Problem("data.cutoff_len", d.cutoff_len, "must be >= 8 tokens; typical values are 1024-4096")
    if d.max_samples is not None and d.max_samples < 1:
        yield Problem("data.max_samples", d.max_samples, "must be >= 1 (rows per dataset), or null for all rows")
    if d.val_size < 0 or (d.val_size >= 1 and d.val_size != int(d.val_size)):
        yield Problem("data.val_size", d.val_size, "use a fraction in [0, 1) or a whole row count, e.g. 0.1 or 50")
    if d.preprocessing_num_workers is not None and d.preprocessing_num_workers < 1:
        yield Problem("data.preprocessing_num_workers", d.preprocessing_num_workers, "must be >= 1, or null")
    if d.cache_timeout_s < 1:
        yield Problem("data.cache_timeout_s", d.cache_timeout_s, "must be >= 1 second; e.g. 3600")
    yield from _check_mixing(d, n_datasets)
    if d.streaming:
        if d.packing:
            yield Problem("data.packing", True, "cannot pack a streamed dataset; set data.streaming=false to pack")
        if t.max_steps <= 0:
            yield Problem("data.streaming", True, "a stream has no length; set train.max_steps (e.g. 1000)")
        if 0 < d.val_size < 1:
            yield Problem("data.val_size", d.val_size, "a stream has no length; give a row count, e.g. 100")
        if d.buffer_size < 1:
            yield Problem("data.buffer_size", d.buffer_size, "must be >= 1; e.g. 16384")
    if t.eval_strategy not in EVAL_STRATEGIES:
        yield Problem("train.eval_strategy", t.eval_strategy, f"use one of {', '.join(EVAL_STRATEGIES)}")
    elif t.eval_strategy != "no" and not d.val_size:
        yield Problem("train.eval_strategy", t.eval_strategy, "there is no eval split; set data.val_size "
                      "(e.g. 0.1), or train.eval_strategy=no")
    if t.eval_steps is not None and t.eval_steps < 1:
        yield Problem("train.eval_steps", t.eval_steps, "must be >= 1, or null for logging_steps")


def _check_mixing(d: Any, n_datasets: int) -> Iterator[Problem]:
    try:
        probs = split_floats(d.interleave_probs)
    except ValueError:
        yield Problem("data.interleave_probs", d.interleave_probs, "give numbers, e.g. '0.7,0.3' or [0.7,0.3]")
        return
    if not probs:
        return
    if d.mix_strategy == MixStrategy.concat:
        yield Problem("data.interleave_probs", d.interleave_probs, "only used when interleaving; set "
                      "data.mix_strategy=interleave_under (or interleave_over), or drop interleave_probs")
    elif len(probs) != n_datasets:
        yield Problem("data.interleave_probs", d.interleave_probs, f"{len(probs)} probabilities for {n_datasets} "
                      "datasets; give one per dataset")
    elif min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
        yield Problem("data.interleave_probs", d.interleave_probs, f"must be >= 0 and sum to 1 (they sum to "
                      f"{sum(probs):g})")


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


SIGNALS = ("USR1", "USR2", "TERM", "INT", "HUP", "URG")
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_time_seconds(value: str) -> int | None:
    """Slurm's time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS -> seconds (None if invalid)."""
    m = _SLURM_TIME.match(value.strip())
    if not m:
        return None
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        hh, mm, ss = (parts + [0, 0])[:3]
        return int(days) * 86400 + hh * 3600 + mm * 60 + ss
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def _check_slurm(cfg: Any, facts: Facts) -> Iterator[Problem]:
    c = cfg.cluster
    if c.name != ClusterType.slurm:
        return
    if cfg.backend.name == BackendType.deepspeed:
        yield Problem("backend", "deepspeed", "on Slurm, srun starts one torchrun per node and ZeRO runs through the "
                      "transformers integration: use backend=auto (or torchrun) with zero=...")
    if not facts.sbatch and not cfg.dry_run:
        yield Problem("cluster", "slurm", "sbatch is not on PATH here; submit from a Slurm login node, use "
                      "dry_run=true to see the script, or cluster=local")
    if c.signal.removeprefix("SIG") not in SIGNALS or c.signal.startswith("SIG"):
        yield Problem("cluster.signal", c.signal, f"use one of {', '.join(SIGNALS)} (USR2 by default: NCCL may use USR1)")
    if c.signal_time < 1:
        yield Problem("cluster.signal_time", c.signal_time, "seconds before the end; must be >= 1, e.g. 120")
    if c.max_requeues < 0:
        yield Problem("cluster.max_requeues", c.max_requeues, "must be >= 0 (0: never requeue)")
    if c.time is not None:
        limit = slurm_time_seconds(str(c.time))
        if limit is None:
            yield Problem("cluster.time", c.time, "not a Slurm time; use MM, HH:MM:SS or D-HH:MM:SS, e.g. 04:00:00")
        elif limit <= c.signal_time:
            yield Problem("cluster.signal_time", c.signal_time, f"the warning would come before the job starts "
                          f"(time limit {limit} s); lower it or raise cluster.time")
    if c.gpus_per_node is not None and c.gpus_per_node < cfg.gpus and cfg.device == Device.cuda:
        yield Problem("cluster.gpus_per_node", c.gpus_per_node, f"fewer GPUs than gpus={cfg.gpus} ranks per node; "
                      f"leave it unset (= gpus) or raise it")
    if c.array_parallelism is not None and c.array_parallelism < 1:
        yield Problem("cluster.array_parallelism", c.array_parallelism, "must be >= 1, or null for no limit")
