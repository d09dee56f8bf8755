"""LLaMA-Factory import: a LLaMA-Factory train yaml -> our Hydra overrides (or an equivalent recipe) plus the
keys we do not support. Pure: reads a yaml, imports nothing heavy.

  launch lf=examples/train_lora/llama3_lora_sft.yaml gpus=4 [our overrides win]
  launch-import-lf train.yaml -o recipes/my_recipe.yaml

No key is dropped silently: each one maps onto ours, is accepted as a no-op that the mapping names, or is
refused (all of them in one list, exit 2).
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from launcher.exitcodes import EXIT_USAGE

#: LLaMA-Factory's examples/deepspeed files, by name -> our zero group option (same contents, ours ship in
#: ds_configs/); any other file is zero=custom zero.config=PATH
LF_DEEPSPEED_FILES = {"ds_z0_config.json": "0", "ds_z2_config.json": "2", "ds_z2_offload_config.json": "2_offload",
                      "ds_z3_config.json": "3", "ds_z3_offload_config.json": "3_offload"}

#: LLaMA-Factory key -> our key, value unchanged
DIRECT = {
    "model_name_or_path": "model.model_name_or_path", "trust_remote_code": "model.trust_remote_code",
    "template": "model.template", "rope_scaling": "model.rope_scaling",
    "finetuning_type": None,  # handled below (adapter group)
    "lora_rank": "adapter.lora_rank", "lora_alpha": "adapter.lora_alpha", "lora_dropout": "adapter.lora_dropout",
    "lora_target": "adapter.lora_target", "additional_target": "adapter.additional_target",
    "use_dora": "adapter.use_dora", "use_rslora": "adapter.use_rslora",
    "create_new_adapter": "adapter.create_new_adapter", "adapter_name_or_path": "adapter.adapter_name_or_path",
    "freeze_trainable_layers": "adapter.freeze_trainable_layers",
    "freeze_trainable_modules": "adapter.freeze_trainable_modules",
    "freeze_extra_modules": "adapter.freeze_extra_modules",
    "quantization_bit": "adapter.quantization_bit", "quantization_type": "adapter.quantization_type",
    "double_quantization": "adapter.double_quantization",
    "dataset": "data.dataset", "dataset_dir": "data.dataset_dir", "cutoff_len": "data.cutoff_len",
    "max_samples": "data.max_samples", "overwrite_cache": "data.overwrite_cache",
    "preprocessing_num_workers": "data.preprocessing_num_workers", "val_size": "data.val_size",
    "eval_dataset": "data.eval_dataset",
    "mix_strategy": "data.mix_strategy", "interleave_probs": "data.interleave_probs",
    "streaming": "data.streaming", "buffer_size": "data.buffer_size", "packing": "data.packing",
    "train_on_prompt": "data.train_on_prompt", "mask_history": "data.mask_history",
    "pref_beta": "stage.dpo_beta", "pref_loss": "stage.dpo_loss", "pref_ftx": "stage.dpo_ftx",
    "kto_chosen_weight": "stage.kto_chosen_weight", "kto_rejected_weight": "stage.kto_rejected_weight",
    "ref_model": "stage.ref_model", "reward_model": "stage.reward_model",
    "ppo_buffer_size": "stage.ppo_num_mini_batches",  # it counts mini-batches (TRL's num_mini_batches)
    "ppo_epochs": "stage.ppo_epochs", "ppo_target": "stage.ppo_target", "ppo_score_norm": "stage.ppo_score_norm",
    "ppo_whiten_rewards": "stage.ppo_whiten_rewards",
    "do_predict": "train.do_predict",
    # ChatGLM2's ptuning script's names (LLaMA-Factory has cutoff_len only)
    "max_source_length": "data.max_source_length", "max_target_length": "data.max_target_length",
    "output_dir": "output_dir", "overwrite_output_dir": "overwrite_output_dir", "seed": "seed",
    "per_device_train_batch_size": "train.per_device_train_batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps", "learning_rate": "train.learning_rate",
    "num_train_epochs": "train.num_train_epochs", "max_steps": "train.max_steps",
    "lr_scheduler_type": "train.lr_scheduler_type", "warmup_steps": "train.warmup_steps",
    "warmup_ratio": "train.warmup_ratio", "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm", "optim": "train.optim", "logging_steps": "train.logging_steps",
    "save_steps": "train.save_steps", "save_total_limit": "train.save_total_limit",
    "eval_strategy": "train.eval_strategy", "eval_steps": "train.eval_steps",
    "per_device_eval_batch_size": "train.per_device_eval_batch_size",
    "compute_accuracy": "train.compute_accuracy", "load_best_model_at_end": "train.load_best_model_at_end",
    "metric_for_best_model": "train.metric_for_best_model", "greater_is_better": "train.greater_is_better",
    "early_stopping_steps": "train.early_stopping_steps",
    "dataloader_num_workers": "train.dataloader_num_workers", "ddp_timeout": "train.ddp_timeout",
    "gradient_checkpointing": None,  # with disable_gradient_checkpointing (_checkpointing)
    # EvaluationArguments (an eval yaml: `task` makes it stage=eval)
    "n_shot": "eval.n_shot", "batch_size": "eval.batch_size", "save_dir": "output_dir",
}
DIRECT = {k: v for k, v in DIRECT.items() if v}


def _trained(stage: str, lf: dict) -> bool:
    """Whether LLaMA-Factory trains the model (its is_trainable: do_train, which we take as true when unset)."""
    return stage != "eval" and lf.get("do_train", True) is not False


def _checkpoints(stage: str, ftype: str, lf: dict) -> bool | str:
    """LLaMA-Factory's prepare_model_for_training checkpoints every model it trains, ppo's policy included."""
    if "gradient_checkpointing" in lf or not _trained(stage, lf):
        return False  # the file decides (_checkpointing); nothing is trained
    if stage == "ppo":
        return ("LLaMA-Factory checkpoints ppo's policy; TRL's PPOTrainer does not checkpoint activations, so "
                "train.gradient_checkpointing stays false")
    if ftype == "prefix":  # only typed after lf= (LLaMA-Factory has no prefix tuning)
        return ("LLaMA-Factory checkpoints every model it trains; peft's prefix tuning does not work with "
                "checkpointing, so train.gradient_checkpointing stays false")
    return True


#: LLaMA-Factory's (and TrainingArguments') defaults that differ from ours, applied when the file leaves the key
#: out. applies(stage, finetuning_type, the file's keys): True where the default matters, False where it does not,
#: or why it holds there in LLaMA-Factory but not here (shown as the key's line, nothing set)
LF_DEFAULTS: dict[str, tuple[Any, Callable[[str, str, dict], bool | str]]] = {
    "lora_target": ("all", lambda stage, ftype, lf: ftype == "lora"),
    "lora_alpha": (None, lambda stage, ftype, lf: ftype == "lora"),  # None: 2 x lora_rank (ours: 16)
    "lora_dropout": (0.0, lambda stage, ftype, lf: ftype == "lora"),  # ours: 0.05
    "cutoff_len": (2048, lambda stage, ftype, lf: True),
    "per_device_train_batch_size": (8, lambda stage, ftype, lf: True),
    "lr_scheduler_type": ("linear", lambda stage, ftype, lf: True),
    "logging_steps": (500, lambda stage, ftype, lf: True),
    "ppo_target": (6.0, lambda stage, ftype, lf: stage == "ppo"),
    # ModelArguments: checkpointing on unless disabled (ours is off unless asked)
    "disable_gradient_checkpointing": (False, _checkpoints),
}

#: LLaMA-Factory's GeneratingArguments: our generation node (predict), except that stage=ppo samples with stage.*
GENERATION_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty",
                   "length_penalty")
PPO_SAMPLING = {"max_new_tokens": "stage.max_completion_length", "top_k": "stage.top_k", "top_p": "stage.top_p",
                "temperature": "stage.temperature"}
#: LLaMA-Factory's generation defaults that differ from ours (we decode greedily, 128 tokens), for do_predict
LF_GENERATION_DEFAULTS = {"do_sample": True, "max_new_tokens": 1024}

#: LLaMA-Factory flash_attn -> our model.attn (auto keeps our default, sdpa)
ATTN = {"fa2": "flash_attention_2", "sdpa": "sdpa", "disabled": "eager"}
#: LLaMA-Factory pref_loss values TRL's DPO trains as such
PREF_LOSSES = ("sigmoid", "hinge", "ipo")
#: LLaMA-Factory's eval tasks (name_split) -> lm-eval's task of the same benchmark
LF_EVAL_TASKS = {"mmlu": "mmlu", "cmmlu": "cmmlu", "ceval": "ceval-valid"}
#: our groups an import chooses (the rest of its overrides are keys)
GROUPS = ("stage", "adapter", "precision", "zero", "logger")
REPORT_TO = {(): "none", ("none",): "none", ("tensorboard",): "tensorboard", ("wandb",): "wandb",
             ("tensorboard", "wandb"): "both"}


@dataclass
class Mapping:
    """The import's result: overrides in order (groups first), one explanation line per LLaMA-Factory key,
    and the keys we refuse with why."""

    overrides: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def add(self, lf_key: str, lf_value: Any, *ours: str) -> None:
        self.overrides.extend(ours)
        self.lines.append(f"{lf_key}={show(lf_value)} -> {' '.join(ours) if ours else '(nothing to set)'}")

    def noop(self, lf_key: str, lf_value: Any, why: str) -> None:
        self.lines.append(f"{lf_key}={show(lf_value)} -> ({why})")

    def refuse(self, lf_key: str, lf_value: Any, why: str) -> None:
        self.unsupported.append(f"{lf_key}={show(lf_value)}: {why}")


class _Loader(yaml.SafeLoader):
    """YAML 1.2's floats: PyYAML (YAML 1.1) reads `2e-5` (no dot) as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$"
               r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def load_yaml(path: str | Path) -> dict:
    data = yaml.load(Path(path).read_text(), Loader=_Loader) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a LLaMA-Factory train yaml is a mapping of keys, got {type(data).__name__}")
    return data


def fmt(value: Any) -> str:
    """A value as a Hydra override value: strings that Hydra's grammar would split or retype are quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(fmt(v) for v in value) + "]"
    text = str(value)
    if re.fullmatch(r"[A-Za-z_/.~][\w./~-]*", text) and text.lower() not in ("true", "false", "null", "none"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def show(value: Any) -> str:
    """A LLaMA-Factory value as its yaml spelled it (strings unquoted)."""
    return value if isinstance(value, str) else fmt(value)


def _set(key: str, value: Any) -> str:
    return f"{key}={fmt(value)}"


def _flag(m: Mapping, key: str, value: Any, ok: bool, why_ok: str, why_not: str) -> None:
    """A boolean LLaMA-Factory key we accept only at the value we behave like."""
    if bool(value) == ok:
        m.noop(key, value, why_ok)
    else:
        m.refuse(key, value, why_not)


def _eval_keys(m: Mapping, rest: dict) -> None:
    """LLaMA-Factory's EvaluationArguments that do not map one to one (n_shot, batch_size, save_dir do)."""
    task = str(rest.pop("task"))
    name, _, split = task.rpartition("_")
    if name in LF_EVAL_TASKS and split in ("test", "validation", "train"):
        m.add("task", task, _set("eval.task", LF_EVAL_TASKS[name]))
        m.lines[-1] += f" (lm-eval's {LF_EVAL_TASKS[name]}: its own split; stage=eval, `llamafactory-cli eval` is gone)"
    else:
        m.add("task", task, _set("eval.task", task))
    if "task_dir" in rest:
        m.refuse("task_dir", rest.pop("task_dir"), "LLaMA-Factory's task dir holds its own loader scripts; "
                 "eval.task_dir takes lm-eval task yamls (the project's: evaluation/tasks)")
    if "lang" in rest:
        m.noop("lang", rest.pop("lang"), "an lm-eval task has its prompt language: mmlu English, cmmlu and "
               "ceval-valid Chinese")
    if "template" in rest:
        m.noop("template", rest.pop("template"), "lm-eval writes the task's own few-shot prompt")
    if "download_mode" in rest:
        m.noop("download_mode", rest.pop("download_mode"), "nothing is downloaded at run time: task data is local")


def _checkpointing(m: Mapping, rest: dict, stage: str) -> None:
    """disable_gradient_checkpointing (ModelArguments, false unless set) and TrainingArguments'
    gradient_checkpointing -> train.gradient_checkpointing, as LLaMA-Factory behaves: prepare_model_for_training
    enables checkpointing unless disable_gradient_checkpointing, and the Trainer enables it (again) for
    gradient_checkpointing: true, so either one turns it on and `gradient_checkpointing: false` turns nothing off."""
    if "use_reentrant_gc" in rest:
        m.noop("use_reentrant_gc", rest.pop("use_reentrant_gc"), "we always checkpoint non-reentrant, so gradients "
               "reach an adapter whose inputs (frozen embeddings) need none")
    given = {k: rest.pop(k) for k in ("disable_gradient_checkpointing", "gradient_checkpointing") if k in rest}
    if not given:
        return
    keys = " ".join(f"{k}={show(v)}" for k, v in given.items())
    if not _trained(stage, rest):
        m.lines.append(f"{keys} -> (nothing is trained: no activations to checkpoint)")
        return
    disable, asked = given.get("disable_gradient_checkpointing", False), given.get("gradient_checkpointing")
    on = bool(asked) or not disable
    why = ""
    if on and disable:
        why = (" (as LLaMA-Factory: disable_gradient_checkpointing skips its own enabling, but the Trainer still "
               "checkpoints for gradient_checkpointing: true)")
    elif asked is False and not disable:
        if stage == "ppo":  # ours would warn that TRL's PPOTrainer does not checkpoint
            on, why = False, " (TRL's PPOTrainer does not checkpoint activations)"
        else:
            why = (" (as LLaMA-Factory: it checkpoints a trained model unless disable_gradient_checkpointing: true; "
                   "gradient_checkpointing: false turns nothing off)")
    m.lines.append(f"{keys} -> {_set('train.gradient_checkpointing', on)}{why}")
    m.overrides.append(_set("train.gradient_checkpointing", on))


#: our adapter choice -> the finetuning_type LF_DEFAULTS' callbacks see (qlora is LLaMA-Factory's lora, quantized)
FINETUNING_TYPE = {"qlora": "lora"}


def translate(lf: dict, choices: Optional[dict[str, str]] = None) -> Mapping:
    """LLaMA-Factory train yaml (a dict) -> our overrides. Pure. choices: stage/adapter chosen on the command line
    after lf=, which replace the file's, so LLaMA-Factory's defaults are applied for the run's own stage and
    adapter (adapter=prefix typed over a lora file gets no checkpointing, which prefix refuses)."""
    m = Mapping()
    groups: list[str] = []
    rest = dict(lf)

    stage = rest.pop("stage", "sft")
    if "task" in rest:  # an eval yaml (llamafactory-cli eval, removed in LLaMA-Factory v0.9.4)
        stage = "eval"
        groups.append("stage=eval")
        _eval_keys(m, rest)
    elif stage in ("pt", "sft", "rm", "dpo", "kto", "ppo"):
        groups.append(f"stage={stage}")
        m.lines.append(f"stage={stage} -> stage={stage}")
    else:
        m.refuse("stage", stage, "stages are pt, sft, rm, dpo, kto, ppo (and our grpo, rloo)")

    ftype = rest.pop("finetuning_type", "lora")
    bits = rest.get("quantization_bit")
    if ftype == "lora" and bits is not None:
        groups.append("adapter=qlora")
        m.lines.append(f"finetuning_type=lora (with quantization_bit={bits}) -> adapter=qlora")
    elif ftype in ("lora", "freeze", "full"):
        groups.append(f"adapter={ftype}")
        m.lines.append(f"finetuning_type={ftype} -> adapter={ftype}")
    else:
        m.refuse("finetuning_type", ftype, "adapters are lora, freeze, full (and our qlora, prefix)")

    # a key the file leaves out means LLaMA-Factory's default, where it differs from ours
    choices = choices or {}
    run_stage, adapter = choices.get("stage", stage), choices.get("adapter", ftype)
    run_ftype = FINETUNING_TYPE.get(adapter, adapter)
    where = {k: applies(run_stage, run_ftype, rest) for k, (value, applies) in LF_DEFAULTS.items()
             if k not in rest and run_stage != "eval"}
    defaulted = [k for k, applies in where.items() if applies]
    for k in defaulted:
        if where[k] is True:
            rest[k] = LF_DEFAULTS[k][0]
        else:
            m.noop(k, LF_DEFAULTS[k][0], where[k])
    if rest.get("do_predict") and stage != "ppo":
        generation_defaulted = [k for k in LF_GENERATION_DEFAULTS if k not in rest]
        rest.update({k: LF_GENERATION_DEFAULTS[k] for k in generation_defaulted})
        defaulted += generation_defaulted

    given = {k: rest.pop(k) for k in ("pure_bf16", "bf16", "fp16") if k in rest}
    precision = next((k for k, v in given.items() if v), None)
    if precision:
        groups.append(f"precision={precision}")
    if given:
        m.lines.append(" ".join(f"{k}={show(v)}" for k, v in given.items())
                       + (f" -> precision={precision}" if precision else " -> (our default, precision=auto)"))

    if "deepspeed" in rest:
        ds = rest.pop("deepspeed")
        if ds is None:
            m.noop("deepspeed", ds, "no DeepSpeed: zero=none")
        elif Path(str(ds)).name in LF_DEEPSPEED_FILES:
            choice = LF_DEEPSPEED_FILES[Path(str(ds)).name]
            groups.append(f"zero={choice}")
            m.lines.append(f"deepspeed={ds} -> zero={choice} (our ds_configs/ copy of that example)")
        else:
            groups.append("zero=custom")
            m.add("deepspeed", ds, _set("zero.config", str(ds)))
            m.lines[-1] = m.lines[-1].replace("-> ", "-> zero=custom ")

    if "report_to" in rest:
        value = rest.pop("report_to")
        items = tuple(sorted(value if isinstance(value, list) else [v for v in str(value or "none").split(",")]))
        items = tuple(i.strip() for i in items)
        if items in REPORT_TO:
            groups.append(f"logger={REPORT_TO[items]}")
            m.lines.append(f"report_to={show(value)} -> logger={REPORT_TO[items]}")
        else:
            m.refuse("report_to", value, "loggers are none, tensorboard, wandb or both")

    if "flash_attn" in rest:
        value = rest.pop("flash_attn")
        if value == "auto":
            m.noop("flash_attn", value, "our default, model.attn=sdpa")
        elif value in ATTN:
            m.add("flash_attn", value, _set("model.attn", ATTN[value]))
        else:
            m.refuse("flash_attn", value, "values are auto, fa2, sdpa, disabled")

    _checkpointing(m, rest, run_stage)
    # train and/or predict (with generation)
    if "do_train" in rest:
        value = rest.pop("do_train")
        if value:
            m.noop("do_train", value, "launch trains")
        else:
            m.add("do_train", value, "train.do_train=false")
    if "predict_with_generate" in rest:
        _flag(m, "predict_with_generate", rest.pop("predict_with_generate"), True,
              "train.do_predict always generates", "train.do_predict always generates: drop the key")
    for key in GENERATION_KEYS:
        if key in rest:
            value = rest.pop(key)
            m.add(key, value, _set(PPO_SAMPLING[key] if stage == "ppo" and key in PPO_SAMPLING
                                   else f"generation.{key}", value))
    # keys accepted at the value we behave like, refused otherwise
    for key, ok, why_ok, why_not in (
            ("save_only_model", False, "checkpoints keep the optimizer state, so runs resume",
             "checkpoints always keep the optimizer state (resume needs it)"),):
        if key in rest:
            _flag(m, key, rest.pop(key), ok, why_ok, why_not)
    if "plot_loss" in rest:  # shown either way: the plot is not optional here
        m.noop("plot_loss", rest.pop("plot_loss"), "training_loss.png is written at the end of every run")
    if rest.get("neat_packing"):
        if "packing" in rest:  # neat packing packs whatever `packing` says
            m.noop("packing", rest.pop("packing"), "see neat_packing")
        m.add("neat_packing", rest.pop("neat_packing"), "data.packing=true")
    elif "neat_packing" in rest:
        m.noop("neat_packing", rest.pop("neat_packing"), "see packing; our packing is always neat")

    if "quantization_method" in rest:
        value = rest.pop("quantization_method")
        if value == "bnb" or value == "bitsandbytes":
            m.noop("quantization_method", value, "bitsandbytes is our only quantizer")
        else:
            m.refuse("quantization_method", value, "only bnb (bitsandbytes) quantization is supported")
    if "pref_loss" in rest and rest["pref_loss"] not in PREF_LOSSES:
        m.refuse("pref_loss", rest.pop("pref_loss"), f"supported: {', '.join(PREF_LOSSES)}")
    if "reward_model_type" in rest:
        value = rest.pop("reward_model_type")
        if value in ("lora", "full"):
            m.noop("reward_model_type", value, "our reward_model is an rm run dir, which records its adapter")
        else:
            m.refuse("reward_model_type", value, "reward_model is an rm run dir (lora or full); api is not supported")
    if "resume_from_checkpoint" in rest:
        value = rest.pop("resume_from_checkpoint")
        if value in (None, False):
            m.noop("resume_from_checkpoint", value, "start fresh")
        else:
            m.refuse("resume_from_checkpoint", value,
                     "resume continues from the newest complete checkpoint of output_dir: use resume=true")

    for key, value in rest.items():
        if key in DIRECT:
            m.add(key, value, _set(DIRECT[key], value))
        else:
            m.refuse(key, value, "no equivalent in launcher")

    m.overrides[:0] = groups
    m.lines = [line + "  (unset: LLaMA-Factory's default)" if line.partition("=")[0] in defaulted else line
               for line in m.lines]
    return m


def import_file(path: str | Path, choices: Optional[dict[str, str]] = None) -> Mapping:
    return translate(load_yaml(path), choices)


def refusal_message(path: str | Path, m: Mapping) -> str:
    return (f"{path}: {len(m.unsupported)} LLaMA-Factory key(s) not supported (remove them, or drop the file and "
            "use our overrides):\n" + "\n".join(f"  {u}" for u in m.unsupported))


def recipe_text(m: Mapping, source: str) -> str:
    """The overrides as a recipe (`# @package _global_`, group choices as `override /group: x`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    defaults, values = [], {}
    for o in OverridesParser.create().parse_overrides(m.overrides):
        key, value = o.key_or_group, o.value()
        if key in GROUPS:
            defaults.append({f"override /{key}": str(value)})  # zero=3: a choice named "3"
            continue
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    body = yaml.safe_dump({"defaults": defaults, **values}, sort_keys=False, default_flow_style=False)
    return f"# @package _global_\n# Imported from LLaMA-Factory's {source} by launch-import-lf.\n{body}"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="launch-import-lf",
                                     description="Write the launcher recipe equivalent to a LLaMA-Factory train "
                                                 "yaml (exit 2, writing nothing, if it has keys we do not support).")
    parser.add_argument("yaml", help="LLaMA-Factory train yaml")
    parser.add_argument("-o", "--output", required=True, help="recipe to write, e.g. recipes/my_recipe.yaml")
    args = parser.parse_args(argv)
    try:
        m = import_file(args.yaml)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"launch-import-lf: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    for line in m.lines:
        print(line)
    if m.unsupported:
        print(refusal_message(args.yaml, m), file=sys.stderr)
        sys.exit(EXIT_USAGE)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(recipe_text(m, Path(args.yaml).name))
    print(f"wrote {out}: launch recipe={out.stem} (from recipes/ or conf/recipe/)")


def expand_lf_args(args: list[str], echo: Callable[[str], None] = print) -> list[str]:
    """`lf=FILE` in launch's arguments -> its overrides, placed before the other arguments so those win.
    Exits 2 listing the unsupported keys."""
    files = [a for a in args if a.startswith("lf=")]
    if not files:
        return args
    if len(files) > 1:
        print(f"launch: give one lf=FILE, got {len(files)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    path = files[0][3:]
    ours = [a for a in args if not a.startswith("lf=")]
    # the run's own stage and adapter decide LLaMA-Factory's defaults (a -m sweep's a,b: the file's)
    typed_choices = dict(a.split("=", 1) for a in ours
                         if a.partition("=")[0] in ("stage", "adapter") and "," not in a)
    try:
        m = import_file(path, typed_choices)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"launch: lf={path}: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if m.unsupported:
        print(refusal_message(path, m), file=sys.stderr)
        sys.exit(EXIT_USAGE)
    echo(f"LLaMA-Factory {path}:")
    for line in m.lines:
        echo(f"  {line}")
    # a group typed on the command line replaces the file's choice (Hydra refuses a group chosen twice)
    typed = {a.partition("=")[0].lstrip("+~") for a in ours}
    if "zero" in typed:  # the file's zero.config belongs to its own zero choice
        typed.add("zero.config")
    return [o for o in m.overrides if o.partition("=")[0] not in typed] + ours


if __name__ == "__main__":
    main()
