"""ZeRO (DeepSpeed): what a ds config asks for, what it costs, and where it disagrees with the launch config.

Pure: facts read the JSON; neither torch nor deepspeed is imported, so a dry run stays fast. The ds
configs in ds_configs/ write "auto" for every number the launch config already has; transformers' Trainer
fills those from TrainingArguments. A value written out instead must agree with the launch config, or
the Trainer stops after the model is loaded: `mismatches` finds those before anything starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from launcher.facts import Facts, ModelSize
from launcher.precision import DEEPSPEED_FLAGS, resolved_precision

#: TrainingArguments' Adam defaults (the launch config does not expose them)
ADAM_BETAS, ADAM_EPSILON = [0.9, 0.999], 1e-8
#: "auto" keys filled from the model's hidden size by transformers/accelerate at engine start
HIDDEN_SIZE_KEYS = ("zero_optimization.reduce_bucket_size", "zero_optimization.stage3_prefetch_bucket_size",
                    "zero_optimization.stage3_param_persistence_threshold")
#: optimizers accelerate can swap for DeepSpeed's CPU implementation under offload (AdamW keeps adamw_mode)
CPU_ADAM_OPTIMS = ("adamw_torch", "adamw_torch_fused")
GIB = 2 ** 30


def get(ds: Mapping[str, Any], dotted: str) -> Any:
    node: Any = ds
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def stage(ds: Mapping[str, Any]) -> Any:
    return get(ds, "zero_optimization.stage") or 0


def offload_device(ds: Mapping[str, Any], what: str) -> str:
    """`optimizer` or `param`: where ZeRO keeps it (none, cpu, nvme)."""
    return str(get(ds, f"zero_optimization.offload_{what}.device") or "none")


@dataclass(frozen=True)
class Expected:
    #: the launch key a value comes from, and how the message shows it
    key: str
    #: what transformers fills in or compares with; None = not known before the run
    value: Any
    shown: Optional[str] = None

    def describe(self) -> str:
        return self.shown or f"{self.key}={self.value}"


def expected_values(cfg: Any, gradient_accumulation_steps: int, global_batch: int) -> dict[str, Expected]:
    """ds key -> the launch config's value that transformers fills in for "auto" or compares with."""
    t = cfg.train
    precision = resolved_precision(cfg)
    flags = DEEPSPEED_FLAGS.get(precision) if precision else None

    def flag(i: int, name: str) -> Expected:
        if flags is None:
            return Expected("precision", None)
        return Expected("precision", flags[i], f"precision={precision} ({name}={flags[i]})")

    return {
        "train_micro_batch_size_per_gpu": Expected("train.per_device_train_batch_size", t.per_device_train_batch_size),
        "gradient_accumulation_steps": Expected("train.gradient_accumulation_steps", gradient_accumulation_steps),
        "train_batch_size": Expected("global_batch_size", global_batch,
                                     f"the global batch {global_batch} (per device x grad accum x world size)"),
        "gradient_clipping": Expected("train.max_grad_norm", t.max_grad_norm),
        "optimizer.params.lr": Expected("train.learning_rate", t.learning_rate),
        "optimizer.params.weight_decay": Expected("train.weight_decay", t.weight_decay),
        "optimizer.params.betas": Expected("optimizer.params.betas", ADAM_BETAS,
                                           f"TrainingArguments' adam_beta1, adam_beta2 {ADAM_BETAS}"),
        "optimizer.params.eps": Expected("optimizer.params.eps", ADAM_EPSILON,
                                         f"TrainingArguments' adam_epsilon {ADAM_EPSILON}"),
        "scheduler.params.warmup_min_lr": Expected("scheduler.params.warmup_min_lr", None),
        "scheduler.params.warmup_max_lr": Expected("train.learning_rate", t.learning_rate),
        "scheduler.params.warmup_num_steps": Expected("train.warmup_steps", max(1, t.warmup_steps)),
        "scheduler.params.total_num_steps": Expected("train.max_steps", t.max_steps if t.max_steps > 0 else None),
        "fp16.enabled": flag(0, "fp16.enabled"),
        "bf16.enabled": flag(1, "bf16.enabled"),
        **{k: Expected(k, None) for k in HIDDEN_SIZE_KEYS},  # from the model's hidden size, at engine start
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1.0)
    return a == b


def _auto_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, Mapping):
        return [k for key, v in node.items() for k in _auto_keys(v, f"{prefix}{key}.")]
    return [prefix[:-1]] if node == "auto" else []


def mismatches(ds: Mapping[str, Any], expected: Mapping[str, Expected]) -> list[tuple[str, Any, Expected]]:
    """(ds key, its value, the launch config's) where a value written out in the ds config disagrees
    (transformers would stop with "Please correct the following DeepSpeed config values that mismatch
    TrainingArguments values")."""
    out = []
    for ds_key, want in expected.items():
        have = get(ds, ds_key)
        if have is not None and have != "auto" and want.value is not None and not _same(have, want.value):
            out.append((ds_key, have, want))
    return out


def unfillable_autos(ds: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """"auto" at keys nobody fills: DeepSpeed would receive the string "auto" and fail."""
    return [k for k in _auto_keys(ds) if k not in expected]


# DeepSpeed's published estimates of model-state memory, as deepspeed.runtime.zero.stage_1_and_2.
# estimate_zero2_model_states_mem_needs and stage3.estimate_zero3_model_states_mem_needs compute them
# (same arguments, same (cpu, gpu) bytes; tests check them against deepspeed's own functions).
def estimate_zero2_model_states_mem_needs(total_params: int, num_gpus_per_node: int = 1, num_nodes: int = 1,
                                          cpu_offload: bool = True,
                                          additional_buffer_factor: float = 1.5) -> tuple[int, int]:
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16) * additional_buffer_factor
    else:
        # 2 = 16-bit params; 18 = 16-bit grads + fp32 grads + fp32 params + Adam's two fp32 moments
        gpu_mem = 2 * total_params + int(18 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem)


def estimate_zero3_model_states_mem_needs(total_params: int, largest_layer_params: int, num_gpus_per_node: int = 1,
                                          num_nodes: int = 1, cpu_offload: bool = True,
                                          cpu_offload_params: bool = True, zero_init: bool = True,
                                          additional_buffer_factor: float = 1.5) -> tuple[int, int, int]:
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = 4 * largest_layer_params
    if cpu_offload:
        if cpu_offload_params:
            gpu_mem = largest_layer_memory
            factor = 18 * gpus_factor if zero_init else max(4 * num_gpus_per_node, 18 * gpus_factor)
        else:
            gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)
            factor = 16 * gpus_factor if zero_init else max(4 * num_gpus_per_node, 16 * gpus_factor)
        cpu_mem = total_params * factor * additional_buffer_factor
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        cpu_mem = (largest_layer_params if zero_init else total_params) * 4 * num_gpus_per_node \
            * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem), largest_layer_memory


@dataclass(frozen=True)
class MemoryEstimate:
    function: str
    total_params: int
    largest_layer_params: int
    #: host memory per node and accelerator memory per GPU for params, gradients and optimizer states
    cpu_bytes_per_node: int
    gpu_bytes_per_gpu: int

    def describe(self) -> str:
        return (f"{self.function}: {self.total_params / 1e6:,.1f}M params -> per GPU "
                f"{self.gpu_bytes_per_gpu / GIB:.2f} GiB, per node CPU {self.cpu_bytes_per_node / GIB:.2f} GiB "
                "(model states when every parameter trains; LoRA needs less)")


def model_size(cfg: Any, facts: Facts) -> Optional[ModelSize]:
    """A local model's exact size, else the model group's hint, else unknown."""
    if facts.model_size is not None:
        return facts.model_size
    m = cfg.model
    if m.num_params:
        return ModelSize(m.num_params, m.largest_layer_params or 0)
    return None


def estimate(ds: Mapping[str, Any], size: Optional[ModelSize], gpus_per_node: int, nodes: int
             ) -> Optional[MemoryEstimate]:
    """DeepSpeed's estimate for this stage and offload (it publishes none for stages 0 and 1)."""
    if size is None:
        return None
    offload_opt = offload_device(ds, "optimizer") != "none"
    if stage(ds) == 2:
        cpu, gpu = estimate_zero2_model_states_mem_needs(size.total_params, gpus_per_node, nodes, offload_opt)
        return MemoryEstimate("estimate_zero2_model_states_mem_needs", size.total_params, size.largest_layer_params,
                              cpu, gpu)
    if stage(ds) == 3 and size.largest_layer_params:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            size.total_params, size.largest_layer_params, gpus_per_node, nodes, offload_opt,
            offload_device(ds, "param") != "none")
        return MemoryEstimate("estimate_zero3_model_states_mem_needs", size.total_params, size.largest_layer_params,
                              cpu, gpu)
    return None


def uses_cpu_adam(ds: Mapping[str, Any], facts: Facts) -> bool:
    """Under optimizer offload, accelerate swaps the Trainer's AdamW for DeepSpeedCPUAdam unless the config
    says zero_force_ds_cpu_optimizer=false; where it is not set, the plan sets it to whether the op builds."""
    if "optimizer" in ds or offload_device(ds, "optimizer") == "none":
        return False
    forced = ds.get("zero_force_ds_cpu_optimizer")
    return facts.cxx_toolchain if forced is None else bool(forced)


def describe_optimizer(ds: Mapping[str, Any], facts: Facts, optim: str) -> str:
    if "optimizer" in ds:
        return f"DeepSpeed's {get(ds, 'optimizer.type')} from the ds config (train.optim={optim} is not used)"
    if offload_device(ds, "optimizer") == "none":
        return f"train.optim={optim} (transformers)"
    if uses_cpu_adam(ds, facts):
        return (f"DeepSpeedCPUAdam in place of train.optim={optim} (JIT-built on first use, cached in "
                "~/.cache/torch_extensions)")
    why = "" if "zero_force_ds_cpu_optimizer" in ds else ": no C++ compiler + ninja here to build DeepSpeedCPUAdam"
    return f"train.optim={optim} stepping on the CPU (zero_force_ds_cpu_optimizer=false{why})"


def plan_ds_config(ds: Mapping[str, Any], facts: Facts) -> dict[str, Any]:
    """The ds config the worker hands to the Trainer: the file's, plus the CPU-Adam decision under offload."""
    out = dict(ds)
    if offload_device(ds, "optimizer") != "none" and "optimizer" not in ds:
        out["zero_force_ds_cpu_optimizer"] = uses_cpu_adam(ds, facts)
    return out


@dataclass(frozen=True)
class ZeroPlan:
    source: str
    stage: int
    offload_optimizer: str
    offload_param: str
    optimizer: str
    estimate: Optional[MemoryEstimate]
    #: what the worker passes to the Trainer ("auto" left for transformers to fill from config.yaml)
    ds_config: Mapping[str, Any]

    def describe(self) -> list[str]:
        offload = ", ".join(f"{what} -> {dev}" for what, dev in (("optimizer", self.offload_optimizer),
                                                                 ("params", self.offload_param)) if dev != "none")
        lines = [f"zero: stage {self.stage} from {self.source}" + (f", offload {offload}" if offload else ""),
                 f"optimizer: {self.optimizer}"]
        if self.estimate:
            lines.append(f"memory (mirrors DeepSpeed's {self.estimate.describe()})")
        elif self.stage in (2, 3):
            lines.append("memory: no estimate (parameter count unknown: set model.num_params and "
                         "model.largest_layer_params, or use a local model directory)")
        return lines


def plan_zero(cfg: Any, facts: Facts, gpus_per_node: int) -> Optional[ZeroPlan]:
    if cfg.zero.name == "none":
        return None
    ds = facts.ds_configs[cfg.zero.config].content
    return ZeroPlan(
        source=cfg.zero.config, stage=int(stage(ds)),
        offload_optimizer=offload_device(ds, "optimizer"), offload_param=offload_device(ds, "param"),
        optimizer=describe_optimizer(ds, facts, cfg.train.optim),
        estimate=estimate(ds, model_size(cfg, facts), gpus_per_node, cfg.nodes),
        ds_config=plan_ds_config(ds, facts),
    )
