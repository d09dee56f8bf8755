"""The structured schema of a launch: dataclasses registered in Hydra's ConfigStore.

Every group (model, stage, adapter, ...) merges into one of these, so an unknown key or a wrong type
fails at compose time, before anything is validated or started. Names follow transformers'
TrainingArguments and LLaMA-Factory so users' habits carry over. Pure: no torch import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class Stage(str, Enum):
    sft = "sft"


class AdapterType(str, Enum):
    full = "full"
    lora = "lora"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class BackendType(str, Enum):
    auto = "auto"
    single = "single"
    torchrun = "torchrun"
    deepspeed = "deepspeed"


class ClusterType(str, Enum):
    local = "local"


@dataclass
class ModelConfig:
    #: hub id (org/name) or local directory
    model_name_or_path: str = MISSING
    #: chat template used to render rows (see launcher/data/templates.py); `auto` = the tokenizer's own
    template: str = "auto"
    #: default LoRA targets for this architecture (comma-separated module names)
    lora_target: str = "q_proj,v_proj"
    trust_remote_code: bool = False
    #: parameter count, for DeepSpeed's memory estimate when the weights are not local (a local directory's
    #: safetensors headers give it exactly)
    num_params: Optional[int] = None
    #: parameters of the largest single module (usually the embedding), for the ZeRO-3 estimate
    largest_layer_params: Optional[int] = None


@dataclass
class StageConfig:
    name: Stage = Stage.sft


@dataclass
class AdapterConfig:
    #: LLaMA-Factory's finetuning_type
    name: AdapterType = AdapterType.lora
    lora_rank: int = 8
    #: None = 2 x lora_rank (LLaMA-Factory's default)
    lora_alpha: Optional[int] = None
    lora_dropout: float = 0.0
    lora_target: str = "${model.lora_target}"


@dataclass
class PrecisionConfig:
    name: Precision = Precision.auto


@dataclass
class DataConfig:
    #: a local alpaca-format .json / .jsonl file
    dataset: str = MISSING
    formatting: str = "alpaca"
    template: str = "${model.template}"
    cutoff_len: int = 1024
    max_samples: Optional[int] = None
    train_on_prompt: bool = False


@dataclass
class BackendConfig:
    name: BackendType = BackendType.auto


@dataclass
class ZeroConfig:
    #: none (plain DDP), 0, 2, 2_offload, 3, 3_offload, custom (the conf/zero/ option picked)
    name: str = "none"
    #: a DeepSpeed JSON config; its "auto" values are filled from train.* by transformers' Trainer
    config: Optional[str] = None


@dataclass
class ClusterConfig:
    name: ClusterType = ClusterType.local


@dataclass
class LoggerConfig:
    #: transformers' report_to: [] | [tensorboard] | [wandb] | [tensorboard, wandb]
    report_to: list[str] = field(default_factory=list)
    #: wandb project (WANDB_PROJECT)
    project: str = "launcher"
    #: wandb mode (WANDB_MODE): online | offline | disabled
    wandb_mode: str = "offline"


@dataclass
class TrainConfig:
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    num_train_epochs: float = 3.0
    max_steps: int = -1
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: Optional[int] = None
    gradient_checkpointing: bool = False
    dataloader_num_workers: int = 0
    dataloader_drop_last: bool = False


@dataclass
class LaunchConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    zero: ZeroConfig = field(default_factory=ZeroConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    #: run name: outputs/<name>/<timestamp>/
    name: str = "run"
    #: processes (GPUs) per node
    gpus: int = 1
    nodes: int = 1
    #: multi-node without a cluster: this node's rank in [0, nodes) (torchrun's --node-rank)
    node_rank: int = 0
    #: multi-node without a cluster: address of node 0 (torchrun); backend=deepspeed takes the hostfile's first host
    master_addr: Optional[str] = None
    #: rendezvous port; default a free port on one node, 29500 across nodes
    master_port: Optional[int] = None
    #: backend=deepspeed across nodes: a DeepSpeed hostfile (`HOST slots=N` per line)
    hostfile: Optional[str] = None
    device: Device = Device.cuda
    #: print the plan as shell and exit 0, starting nothing
    dry_run: bool = False
    #: the run dir; default <output_root>/<name>/<timestamp>
    output_dir: Optional[str] = None
    output_root: str = "outputs"
    #: continue from the last checkpoint in output_dir
    resume: bool = False
    #: replace a finished run in output_dir
    overwrite_output_dir: bool = False
    seed: int = 42
    #: when set, gradient_accumulation_steps = global / (per_device x world)
    global_batch_size: Optional[int] = None


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="launch_schema", node=LaunchConfig)


def load_run_config(path: str) -> Any:
    """A run dir's config.yaml, typed by the schema (the worker's only input besides the run dir)."""
    return OmegaConf.merge(OmegaConf.structured(LaunchConfig), OmegaConf.load(path))
