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
    pt = "pt"
    sft = "sft"


class MixStrategy(str, Enum):
    concat = "concat"
    interleave_under = "interleave_under"
    interleave_over = "interleave_over"


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
    #: dataset names from dataset_dir/dataset_info.json and/or paths (a .json/.jsonl/.parquet/.csv file, a
    #: directory of them, a `save_to_disk` directory): a quoted comma string 'a,b' or a list [a,b]
    dataset: Any = MISSING
    #: where dataset_info.json and the files it names live
    dataset_dir: str = "${project_root:}/data"
    template: str = "${model.template}"
    cutoff_len: int = 1024
    #: rows taken from each dataset (not from the mixture)
    max_samples: Optional[int] = None
    #: eval split: a fraction (< 1) or a row count (>= 1); 0 = none
    val_size: float = 0.0
    mix_strategy: MixStrategy = MixStrategy.concat
    #: sampling probabilities of the datasets for interleave_*: a comma string or a list
    interleave_probs: Any = None
    #: read and tokenize lazily (needs train.max_steps); nothing is cached
    streaming: bool = False
    #: shuffle buffer of a streamed dataset
    buffer_size: int = 16384
    #: several examples per row, each attending only to itself (sft; pt: attention kept inside documents)
    packing: bool = False
    train_on_prompt: bool = False
    #: labels on the last answer only
    mask_history: bool = False
    preprocessing_num_workers: Optional[int] = None
    #: rebuild the tokenized cache even if one with the same inputs exists
    overwrite_cache: bool = False
    #: tokenized datasets, keyed by a hash of their inputs; shared by runs
    cache_dir: str = "${oc.env:LAUNCHER_DATA_CACHE,'~/.cache/launcher/data'}"
    #: how long a rank waits for another to tokenize (or for the cache lock) before giving up
    cache_timeout_s: int = 3600


@dataclass
class BackendConfig:
    name: BackendType = BackendType.auto


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
    #: no | steps | epoch; anything but no needs data.val_size (with one, the run also evaluates at the end)
    eval_strategy: str = "no"
    #: None = logging_steps
    eval_steps: Optional[int] = None
    per_device_eval_batch_size: int = 8
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
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    #: run name: outputs/<name>/<timestamp>/
    name: str = "run"
    #: processes (GPUs) per node
    gpus: int = 1
    nodes: int = 1
    device: Device = Device.cuda
    #: print the plan as shell and exit 0, starting nothing
    dry_run: bool = False
    #: validate, plan and tokenize into the data cache on this machine's CPU, then exit 0 (no ranks started)
    prepare_only: bool = False
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


def typed(config: Any) -> Any:
    """A resolved config (dict or loaded yaml) typed by the schema again: enums, attribute access."""
    return OmegaConf.merge(OmegaConf.structured(LaunchConfig), config)


def load_run_config(path: str) -> Any:
    """A run dir's config.yaml, typed by the schema (the worker's only input besides the run dir)."""
    return typed(OmegaConf.load(path))
