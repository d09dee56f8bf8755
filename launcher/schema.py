"""The structured schema of a launch: dataclasses registered in Hydra's ConfigStore.

Every group (model, stage, adapter, ...) merges into one of these, so an unknown key or a wrong type
fails at compose time, before anything is validated or started. Names follow transformers'
TrainingArguments and LLaMA-Factory so users' habits carry over. Pure: no torch import.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf


@dataclass(frozen=True)
class Allowed:
    """The values a key accepts, kept beside its default so the schema is the one source of every range:
    validate (launcher/validate/ranges.py) checks each key against it and names it in the message."""

    gt: Optional[float] = None
    ge: Optional[float] = None
    lt: Optional[float] = None
    le: Optional[float] = None
    #: values accepted outside the range (e.g. -1: off)
    also: tuple = ()
    #: the only accepted values (strings: scheduler and optimizer names)
    choices: tuple = ()
    #: what to type instead, e.g. "typical values are 1e-5 to 2e-4"
    hint: str = ""

    def accepts(self, value: Any) -> bool:
        if value in self.also:
            return True
        if self.choices:
            return value in self.choices
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        lo = f"{'(' if self.gt is not None else '['}{_num(self.gt if self.gt is not None else self.ge)}"
        hi = f"{_num(self.lt if self.lt is not None else self.le)}{')' if self.lt is not None else ']'}"
        has_lo, has_hi = self.gt is not None or self.ge is not None, self.lt is not None or self.le is not None
        if has_lo and has_hi:
            text = f"in {lo}, {hi}"
        elif has_lo:
            text = f"> {_num(self.gt)}" if self.gt is not None else f">= {_num(self.ge)}"
        else:
            text = f"< {_num(self.lt)}" if self.lt is not None else f"<= {_num(self.le)}"
        return text + "".join(f" or {v}" for v in self.also)


def _num(x: Optional[float]) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def allowed(default: Any, **kw: Any) -> Any:
    """A schema field whose accepted values are `Allowed(**kw)`."""
    return field(default=default, metadata={"allowed": Allowed(**kw)})


def comma_list(default: Any) -> Any:
    """A schema field holding a comma-separated string (LLaMA-Factory's spelling): the command line takes it
    unquoted (`adapter.lora_target=q_proj,v_proj`, see cli.quote_comma_lists)."""
    return field(default=default, metadata={"comma": True})


#: metric_for_best_model values: the eval metrics pt and sft log (accuracy with train.compute_accuracy)
EVAL_METRIC_NAMES = ("eval_loss", "loss", "eval_perplexity", "perplexity", "eval_accuracy", "accuracy")
#: transformers' SchedulerType names that run without extra kwargs (cosine_with_min_lr needs min_lr, ...)
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "warmup_stable_decay")
#: transformers' OptimizerNames (train.optim), checked against the installed transformers by a unit test
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
              "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad",
              "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
              "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit",
              "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "galore_adamw",
              "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise", "galore_adamw_8bit_layerwise",
              "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw", "schedule_free_radam",
              "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise", "stable_adamw")


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class Stage(str, Enum):
    pt = "pt"
    sft = "sft"
    #: reward model: a scalar head on pairwise data
    rm = "rm"
    dpo = "dpo"
    kto = "kto"
    ppo = "ppo"
    grpo = "grpo"
    rloo = "rloo"
    #: few-shot benchmarks through lm-evaluation-harness (the eval.* keys); trains nothing
    eval = "eval"


class MixStrategy(str, Enum):
    concat = "concat"
    interleave_under = "interleave_under"
    interleave_over = "interleave_over"


class AdapterType(str, Enum):
    full = "full"
    freeze = "freeze"
    lora = "lora"
    qlora = "qlora"
    #: P-Tuning v2: trained key/value prefixes in every layer
    prefix = "prefix"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    #: weights (and optimizer states) in bf16, no fp32 master copy, no autocast
    pure_bf16 = "pure_bf16"


class Attention(str, Enum):
    sdpa = "sdpa"
    flash_attention_2 = "flash_attention_2"
    eager = "eager"


class RopeScaling(str, Enum):
    linear = "linear"
    dynamic = "dynamic"
    yarn = "yarn"
    llama3 = "llama3"


class QuantizationType(str, Enum):
    nf4 = "nf4"
    fp4 = "fp4"


class BackendType(str, Enum):
    auto = "auto"
    single = "single"
    torchrun = "torchrun"
    deepspeed = "deepspeed"


class ClusterType(str, Enum):
    local = "local"
    slurm = "slurm"


@dataclass
class ModelConfig:
    #: hub id (org/name) or local directory
    model_name_or_path: str = MISSING
    #: chat template used to render rows (see launcher/data/templates.py); `auto` = the tokenizer's own
    template: str = "auto"
    #: default LoRA targets for this architecture (comma-separated module names)
    lora_target: str = comma_list("q_proj,v_proj")
    trust_remote_code: bool = False
    #: attention kernel (transformers' attn_implementation); flash_attention_2 needs flash-attn and an Ampere+ GPU
    attn: Attention = Attention.sdpa
    #: RoPE scaling to train past the model's context (None: off)
    rope_scaling: Optional[RopeScaling] = None
    #: None = ceil(data.cutoff_len / the model's max_position_embeddings)
    rope_factor: Optional[float] = allowed(None, gt=1.0, hint="the context grows by this factor; or null to "
                                           "derive it from data.cutoff_len")
    #: parameter count, for DeepSpeed's memory estimate when the weights are not local (a local directory's
    #: safetensors headers give it exactly)
    num_params: Optional[int] = None
    #: parameters of the largest single module (usually the embedding), for the ZeRO-3 estimate
    largest_layer_params: Optional[int] = None


@dataclass
class StageConfig:
    """One flat group, as LLaMA-Factory's FinetuningArguments: each stage reads its own keys (a key set for a
    stage that does not read it is a warning). Stages rm..rloo train with TRL's trainers."""

    name: Stage = Stage.sft

    # dpo, kto
    #: beta of the preference loss (LLaMA-Factory's pref_beta): higher keeps closer to the reference
    dpo_beta: float = allowed(0.1, gt=0.0, hint="typical values are 0.05-0.5")
    #: TRL's DPO loss_type: sigmoid, hinge, ipo, exo_pair, nca_pair, robust, bco_pair, sppo_hard, aot,
    #: aot_unpaired, apo_zero, apo_down, discopop, sigmoid_norm
    dpo_loss: str = "sigmoid"
    #: weight of an SFT (NLL) term on the chosen answers added to the DPO loss (LLaMA-Factory's pref_ftx)
    dpo_ftx: float = allowed(0.0, ge=0.0, hint="0: no SFT term")
    #: KTO's weights of desirable (label true) and undesirable (label false) examples
    kto_chosen_weight: float = allowed(1.0, gt=0.0, hint="default 1.0")
    kto_rejected_weight: float = allowed(1.0, gt=0.0, hint="default 1.0")
    #: reference model of dpo, kto and ppo: a model directory, hub id or earlier run dir; None = the policy as the
    #: stage starts (LoRA: the same weights with the adapter frozen or disabled, no second model loaded)
    ref_model: Optional[str] = None
    #: dpo, kto: compute the reference log-probs once before training, so no reference runs while training
    precompute_ref_log_probs: bool = False

    # ppo, grpo, rloo
    #: an rm run dir (or its final/): ppo's reward and value model; grpo/rloo: scores completions
    reward_model: Optional[str] = None
    #: grpo, rloo: names from launcher/rewards.py (or module:function), summed with reward_model's score if any
    reward_funcs: list[str] = field(default_factory=list)
    #: weight of the KL penalty to the reference (TRL's ppo kl_coef, grpo/rloo beta); None = TRL's default
    #: (ppo 0.05, grpo 0.0: no reference model, rloo 0.05)
    kl_coef: Optional[float] = allowed(None, ge=0.0, hint="0: no KL penalty; null: TRL's default")
    #: grpo, rloo: completions sampled per prompt (their rewards are compared within the group)
    num_generations: int = allowed(8, ge=2, hint="completions of a prompt are compared; typical values are 4-16")
    #: tokens generated per completion (ppo: TRL's response_length)
    max_completion_length: int = allowed(256, ge=1, hint="tokens; e.g. 256")
    temperature: float = allowed(1.0, gt=0.0, hint="e.g. 0.7-1.0")
    #: grpo, rloo: nucleus and top-k sampling (ppo samples the full distribution)
    top_p: float = allowed(1.0, gt=0.0, le=1.0, hint="1 samples the full distribution")
    top_k: int = allowed(0, ge=0, hint="0: no top-k")
    #: ppo: optimisation epochs over each batch of rollouts (TRL's num_ppo_epochs)
    ppo_epochs: int = allowed(4, ge=1, hint="default 4")
    #: ppo: mini-batches each batch of rollouts is split into (TRL's num_mini_batches; LLaMA-Factory calls it
    #: ppo_buffer_size, a name that misled, so typing it says so: validate/keys.py RENAMED)
    ppo_num_mini_batches: int = allowed(1, ge=1, hint="a count of mini-batches; default 1")
    #: ppo: target KL for adaptive KL control (kl_coef adapts towards it); None = a fixed kl_coef
    ppo_target: Optional[float] = allowed(None, gt=0.0, hint="e.g. 6.0, or null for a fixed kl_coef")
    #: ppo: standardise scores with the reward model's statistics on its training pairs (recorded by the rm run)
    ppo_score_norm: bool = False
    ppo_whiten_rewards: bool = False


@dataclass
class AdapterConfig:
    """One flat group, as LLaMA-Factory's FinetuningArguments: each adapter reads its own keys."""

    #: LLaMA-Factory's finetuning_type
    name: AdapterType = AdapterType.lora

    # freeze: train some hidden layers (and extra modules), freeze the rest
    #: n > 0: the last n hidden layers train; n < 0: the first |n|
    freeze_trainable_layers: int = 2
    #: modules inside those layers that train, comma-separated (e.g. mlp,self_attn), or `all`
    freeze_trainable_modules: str = comma_list("all")
    #: modules outside the hidden layers that train too, comma-separated (e.g. embed_tokens,norm,lm_head)
    freeze_extra_modules: Optional[str] = comma_list(None)

    # lora, qlora
    lora_rank: int = allowed(8, ge=1, hint="typical values are 8, 16, 32, 64")
    #: None = 2 x lora_rank (LLaMA-Factory's default)
    lora_alpha: Optional[int] = allowed(None, ge=1, hint="e.g. 2 x lora_rank, or null for that")
    lora_dropout: float = allowed(0.0, ge=0.0, lt=1.0, hint="e.g. 0.05")
    #: comma-separated module names, or `all` (every linear layer except the output head)
    lora_target: str = comma_list("${model.lora_target}")
    #: modules trained fully and saved with the adapter, comma-separated (peft's modules_to_save)
    additional_target: Optional[str] = comma_list(None)
    #: rank-stabilised scaling alpha / sqrt(r)
    use_rslora: bool = False
    #: weight-decomposed LoRA
    use_dora: bool = False
    #: adapters to start from, comma-separated: all but the last are merged into the base, the last trains
    #: on (with create_new_adapter, all are merged and a new adapter trains); prefix takes one
    adapter_name_or_path: Optional[str] = comma_list(None)
    create_new_adapter: bool = False

    # qlora (also lora/prefix on a quantized base): bitsandbytes, CUDA only
    #: 4 or 8; None = not quantized (adapter=qlora sets 4)
    quantization_bit: Optional[int] = allowed(None, choices=(4, 8), hint="bitsandbytes quantizes to 4 or 8 bits "
                                              "(4: QLoRA)")
    quantization_type: QuantizationType = QuantizationType.nf4
    double_quantization: bool = True

    # prefix (P-Tuning v2)
    #: virtual tokens prepended to the keys/values of every layer
    pre_seq_len: int = allowed(128, ge=1, hint="typical values are 16-128")
    #: reparameterise the prefix with a two-layer MLP (P-Tuning v2's prefix_projection)
    prefix_projection: bool = False
    #: width of that MLP; None = the model's hidden_size
    prefix_hidden_size: Optional[int] = allowed(None, ge=1, hint="or null for the model's hidden_size")


@dataclass
class PrecisionConfig:
    name: Precision = Precision.auto


@dataclass
class DataConfig:
    #: dataset names from dataset_dir/dataset_info.json and/or paths (a .json/.jsonl/.parquet/.csv file, a
    #: directory of them, a `save_to_disk` directory): a quoted comma string 'a,b' or a list [a,b]
    dataset: Any = comma_list(MISSING)
    #: where dataset_info.json and the files it names live
    dataset_dir: str = "${project_root:}/data"
    template: str = "${model.template}"
    cutoff_len: int = allowed(1024, ge=8, hint="tokens; typical values are 1024-4096")
    #: rows taken from each dataset (not from the mixture)
    max_samples: Optional[int] = allowed(None, ge=1, hint="rows per dataset, or null for all rows")
    #: eval split: a fraction (< 1) or a row count (>= 1); 0 = none
    val_size: float = allowed(0.0, ge=0.0, hint="a fraction like 0.1 or a row count like 50; 0: none")
    #: eval split from other datasets instead of val_size (LLaMA-Factory's eval_dataset): names/paths as in
    #: data.dataset, each through the same pipeline (template, cutoff_len, max_samples), concatenated
    eval_dataset: Any = comma_list(None)
    mix_strategy: MixStrategy = MixStrategy.concat
    #: sampling probabilities of the datasets for interleave_*: a comma string or a list
    interleave_probs: Any = comma_list(None)
    #: read and tokenize lazily (needs train.max_steps); nothing is cached
    streaming: bool = False
    #: shuffle buffer of a streamed dataset
    buffer_size: int = allowed(16384, ge=1, hint="e.g. 16384")
    #: several examples per row, each attending only to itself (sft; pt: attention kept inside documents)
    packing: bool = False
    train_on_prompt: bool = False
    #: labels on the last answer only
    mask_history: bool = False
    #: tokenizing processes; null: one per 10,000 rows, at most one per usable core (and 8)
    preprocessing_num_workers: Optional[int] = allowed(None, ge=1, hint="or null")
    #: rebuild the tokenized cache even if one with the same inputs exists
    overwrite_cache: bool = False
    #: tokenized datasets, keyed by a hash of their inputs; shared by runs
    cache_dir: str = "${oc.env:LAUNCHER_DATA_CACHE,'~/.cache/launcher/data'}"
    #: how long a rank waits for another to tokenize (or for the cache lock) before giving up
    cache_timeout_s: int = allowed(3600, ge=1, hint="seconds; e.g. 3600")
    # ChatGLM2's ptuning keys, an alternative to cutoff_len (set both: they decide; see validate/predict.py)
    #: tokens kept of the prompt (its beginning); None = cutoff_len's budget
    max_source_length: Optional[int] = allowed(None, ge=1, hint="tokens, e.g. 64; or null for cutoff_len")
    #: tokens kept of the response; None = cutoff_len's budget
    max_target_length: Optional[int] = allowed(None, ge=1, hint="tokens, e.g. 128; or null for cutoff_len")


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
    """Where the run happens. The Slurm keys are sbatch's own option names (unused by cluster=local)."""

    name: ClusterType = ClusterType.local
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    #: wall-clock limit in Slurm's format (minutes, HH:MM:SS, D-HH:MM:SS)
    time: Optional[str] = None
    #: GPUs requested per node; default `gpus` (ignored with device=cpu)
    gpus_per_node: Optional[int] = allowed(None, ge=1, hint="or null for gpus")
    #: CPUs for each node's launcher task (torchrun and its ranks); default: Slurm's
    cpus_per_task: Optional[int] = allowed(None, ge=1, hint="or null for the default")
    mem: Optional[str] = None
    constraint: Optional[str] = None
    exclusive: bool = False
    nodelist: Optional[str] = None
    exclude: Optional[str] = None
    #: default: the run's name
    job_name: Optional[str] = None
    #: stdout/stderr of the batch script; default RUN_DIR/slurm/%j.out (errors go there too)
    output: Optional[str] = None
    error: Optional[str] = None
    #: a multirun sweep is one job array; at most this many of its tasks run at once (sbatch --array=...%N)
    array_parallelism: Optional[int] = allowed(None, ge=1, hint="or null for no limit")
    dependency: Optional[str] = None
    #: shell lines run before training on the batch host (module load, venv activation, exports)
    setup: list[str] = field(default_factory=list)
    #: extra srun options, e.g. ["--container-image=nvcr.io#nvidia/pytorch:24.05-py3"] (pyxis)
    srun_args: list[str] = field(default_factory=list)
    #: the interpreter launch.sh runs on the nodes (inside the container, with srun_args' --container-image,
    #: apptainer or enroot), with this project installed; default: the one running `launch`
    python: Optional[str] = None
    #: any other sbatch option, name -> value ("" for a flag): the escape hatch
    additional_parameters: dict[str, str] = field(default_factory=dict)
    #: warning signal before the time limit / preemption (NCCL may use USR1)
    signal: str = "USR2"
    #: seconds before the end at which the signal arrives: enough to write a checkpoint
    signal_time: int = allowed(120, ge=1, hint="seconds before the end, e.g. 120")
    #: requeues after a preemption/time-limit signal before the job gives up
    max_requeues: int = allowed(3, ge=0, hint="0: never requeue")


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
    per_device_train_batch_size: int = allowed(1, ge=1, hint="e.g. 1-8")
    gradient_accumulation_steps: int = allowed(1, ge=1, hint="e.g. 1-16")
    learning_rate: float = allowed(5e-5, gt=0.0, hint="typical values are 1e-5 (full) to 2e-4 (LoRA)")
    num_train_epochs: float = allowed(3.0, gt=0.0, hint="e.g. 3; or set max_steps")
    #: -1 = train num_train_epochs
    max_steps: int = allowed(-1, ge=1, also=(-1,), hint="-1 trains num_train_epochs")
    lr_scheduler_type: str = allowed("cosine", choices=LR_SCHEDULERS, hint="e.g. cosine")
    warmup_steps: int = allowed(0, ge=0, hint="optimizer steps; 0: no warmup")
    #: warmup as a fraction of the total steps (LLaMA-Factory's warmup_ratio); > 0 wins over warmup_steps
    warmup_ratio: float = allowed(0.0, ge=0.0, lt=1.0, hint="e.g. 0.1; 0: use warmup_steps")
    weight_decay: float = allowed(0.0, ge=0.0, hint="e.g. 0.0 or 0.01")
    #: 0 = no clipping
    max_grad_norm: float = allowed(1.0, ge=0.0, hint="e.g. 1.0; 0 turns clipping off")
    optim: str = allowed("adamw_torch", choices=OPTIMIZERS, hint="e.g. adamw_torch")
    logging_steps: int = allowed(10, ge=1, hint="e.g. 10")
    #: no | steps | epoch; anything but no needs an eval split: data.val_size or data.eval_dataset (with one, the
    #: run also evaluates at the end)
    eval_strategy: str = "no"
    #: None = logging_steps
    eval_steps: Optional[int] = allowed(None, ge=1, hint="or null for logging_steps")
    per_device_eval_batch_size: int = allowed(8, ge=1, hint="e.g. 8")
    # evaluation while training (launcher/metrics/training.py; LLaMA-Factory's and transformers' names)
    #: pt, sft: next-token accuracy on the label tokens, logged as eval_accuracy (argmax ids kept, not logits)
    compute_accuracy: bool = False
    #: end with the best evaluation's weights in final/ (its checkpoint is never rotated away)
    load_best_model_at_end: bool = False
    #: the eval metric that decides the best checkpoint and early stopping (eval_ prefix optional)
    metric_for_best_model: str = allowed("eval_loss", choices=EVAL_METRIC_NAMES,
                                         hint="eval_loss, eval_perplexity, or eval_accuracy (with compute_accuracy)")
    #: None = derived: lower is better for loss and perplexity, higher for accuracy
    greater_is_better: Optional[bool] = None
    #: stop after this many evaluations in a row without improvement (patience); None = never stop early
    early_stopping_steps: Optional[int] = allowed(None, ge=1, hint="evaluations, e.g. 3; or null")
    #: an improvement of metric_for_best_model by no more than this counts as none
    early_stopping_threshold: float = allowed(0.0, ge=0.0, hint="e.g. 0.001; 0: any improvement counts")
    save_steps: int = allowed(500, ge=1, hint="e.g. 500")
    save_total_limit: Optional[int] = allowed(None, ge=1, hint="checkpoints kept, or null for all")
    gradient_checkpointing: bool = False
    dataloader_num_workers: int = allowed(0, ge=0, hint="0: load in the rank's process")
    dataloader_drop_last: bool = False
    #: seconds a rank waits in a collective (and in the preflight) before the run ends naming it
    #: (TrainingArguments' and LLaMA-Factory's ddp_timeout)
    ddp_timeout: int = allowed(1800, ge=1, hint="seconds; default 1800")
    # predict with generation (TrainingArguments' do_train/do_predict; predicting always generates)
    #: false: no training; with do_predict, the model (+ adapter.adapter_name_or_path) only predicts
    do_train: bool = True
    #: after training (or alone): generate an answer for every eval row (data.val_size's split, or every row of
    #: data.dataset when do_train=false and there is no split) -> generated_predictions.jsonl, ROUGE/BLEU
    do_predict: bool = False


@dataclass
class GenerationConfig:
    """How train.do_predict generates (LLaMA-Factory's GeneratingArguments names, transformers' generate())."""

    max_new_tokens: int = allowed(128, ge=1, hint="tokens, e.g. 128")
    #: false: greedy (or beam search with num_beams > 1)
    do_sample: bool = False
    #: sampling only (do_sample=true)
    temperature: float = allowed(0.95, gt=0.0, hint="e.g. 0.7-1.0")
    top_p: float = allowed(0.7, gt=0.0, le=1.0, hint="1 samples the full distribution")
    top_k: int = allowed(50, ge=0, hint="0: no top-k")
    #: > 1: beam search (not with do_sample)
    num_beams: int = allowed(1, ge=1, hint="1: no beam search")
    repetition_penalty: float = allowed(1.0, gt=0.0, hint="1.0: none; e.g. 1.1")
    #: beam search only: > 0 favours longer answers
    length_penalty: float = 1.0


@dataclass
class EvalConfig:
    """stage=eval: few-shot benchmarks through lm-evaluation-harness (LLaMA-Factory's EvaluationArguments names)."""

    #: task (or group) names, comma-separated: yaml task definitions in task_dir, or the harness's own tasks
    #: where their data is already on this machine (nothing is downloaded at run time)
    task: Optional[str] = comma_list(None)
    #: lm-eval task yamls (and their data files, relative to each yaml)
    task_dir: str = "${project_root:}/evaluation/tasks"
    #: examples in each prompt (LLaMA-Factory's default 5)
    n_shot: int = allowed(5, ge=0, hint="e.g. 5; 0: zero-shot")
    #: requests per forward on each rank (LLaMA-Factory's default 4)
    batch_size: int = allowed(4, ge=1, hint="e.g. 4-32")
    #: rows per task (the first ones); None = all
    limit: Optional[int] = allowed(None, ge=1, hint="rows per task, or null for all")
    #: seed of few-shot sampling; None = the run's seed
    seed: Optional[int] = allowed(None, ge=0, hint="e.g. 42, or null for the run's seed")
    #: also write each row's prompt, loglikelihoods and score to eval_samples.jsonl (lm-eval's log_samples)
    log_samples: bool = False


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
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    #: run name: outputs/<name>/<timestamp>/
    name: str = "run"
    #: processes (GPUs) per node
    gpus: int = allowed(1, ge=1, hint="use gpus=1 for a single process")
    nodes: int = allowed(1, ge=1, hint="use nodes=1 on one machine")
    #: multi-node without a cluster: this node's rank in [0, nodes) (torchrun's --node-rank)
    node_rank: int = 0
    #: multi-node without a cluster: address of node 0 (torchrun); backend=deepspeed takes the hostfile's first host
    master_addr: Optional[str] = None
    #: rendezvous port; default a free port on one node, 29500 across nodes
    master_port: Optional[int] = allowed(None, ge=1, le=65535, hint="e.g. 29500, or null")
    #: backend=deepspeed across nodes: a DeepSpeed hostfile (`HOST slots=N` per line)
    hostfile: Optional[str] = None
    device: Device = Device.cuda
    #: print the plan as shell and exit 0, starting nothing
    dry_run: bool = False
    #: validate, plan and tokenize into the data cache on this machine's CPU, then exit 0 (no ranks started)
    prepare_only: bool = False
    #: the run dir; default <output_root>/<name>/<timestamp>
    output_dir: Optional[str] = None
    output_root: str = "outputs"
    #: true: continue from the newest complete checkpoint in output_dir (an error if there is none);
    #: auto: continue if there is one, start fresh otherwise; false: start fresh. Any: Hydra gives a bool for
    #: true/false and the string "auto"; validate refuses anything else.
    resume: Any = False
    #: replace a finished run in output_dir
    overwrite_output_dir: bool = False
    seed: int = allowed(42, ge=0, hint="e.g. 42")
    #: when set, gradient_accumulation_steps = global / (per_device x world)
    global_batch_size: Optional[int] = allowed(None, ge=1, hint="or null to use gradient_accumulation_steps")
    #: cluster=slurm: follow the submitted job and exit with its status
    wait: bool = False
    #: after a rank dies, restart the rank group this many times, resuming from the newest complete checkpoint
    max_restarts: int = allowed(3, ge=0, hint="0: never restart")
    #: every rank checks its device, free disk, the shared run dir and one collective before the model loads
    preflight: bool = True


def schema_fields(path: str) -> Optional[list[str]]:
    """Key names of the schema node at a dotted path ('' = top level, 'cluster', ...), None if not a node."""
    from dataclasses import fields, is_dataclass
    from typing import get_type_hints

    node: Any = LaunchConfig
    for part in [p for p in path.split(".") if p]:
        hints = get_type_hints(node)
        if part not in hints or not is_dataclass(hints[part]):
            return None
        node = hints[part]
    return [f.name for f in fields(node)]


def comma_keys(node: Any = LaunchConfig, prefix: str = "") -> list[str]:
    """Dotted keys of the schema fields marked comma_list."""
    from dataclasses import fields, is_dataclass

    out: list[str] = []
    for f in fields(node):
        if f.metadata.get("comma"):
            out.append(prefix + f.name)
        default = f.default_factory() if callable(f.default_factory) else None  # type: ignore[misc]
        if is_dataclass(default):
            out += comma_keys(type(default), f"{prefix}{f.name}.")
    return out


def split_list(value: Optional[str]) -> list[str]:
    """A comma-separated key (lora_target, adapter_name_or_path, ...) as a list of its non-empty items."""
    return [item.strip() for item in str(value or "").split(",") if item.strip()]


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="launch_schema", node=LaunchConfig)


def typed(config: Any) -> Any:
    """A resolved config (dict or loaded yaml) typed by the schema again: enums, attribute access."""
    return OmegaConf.merge(OmegaConf.structured(LaunchConfig), config)


def load_run_config(path: str) -> Any:
    """A run dir's config.yaml, typed by the schema (the worker's only input besides the run dir)."""
    return typed(OmegaConf.load(path))
