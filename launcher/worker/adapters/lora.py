"""LoRA and QLoRA (peft): rank, alpha, dropout, targets (`all` = every linear layer but the head),
additional fully-trained modules, rsLoRA, DoRA; continuing from earlier adapters (LLaMA-Factory's
adapter_name_or_path / create_new_adapter)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from launcher.schema import split_list

log = logging.getLogger(__name__)


def lora_kwargs(a: Any) -> dict[str, Any]:
    """peft LoraConfig(**kwargs) for the adapter config."""
    targets = split_list(a.lora_target)
    return {"r": a.lora_rank, "lora_alpha": a.lora_alpha or 2 * a.lora_rank, "lora_dropout": a.lora_dropout,
            # peft finds every nn.Linear (and bitsandbytes Linear4bit/8bit) except the output layer
            "target_modules": "all-linear" if targets == ["all"] else targets,
            "modules_to_save": split_list(a.additional_target) or None,
            "use_rslora": bool(a.use_rslora), "use_dora": bool(a.use_dora)}


def task_type(model) -> str:
    """peft's task: a sequence classifier (stage=rm, a value model) trains and saves its new score head along
    with the adapter; anything else is a causal LM."""
    from peft import TaskType

    return TaskType.SEQ_CLS if type(model).__name__.endswith("ForSequenceClassification") else TaskType.CAUSAL_LM


def merge_earlier(model, a: Any) -> tuple[Any, Optional[str]]:
    """Merge adapter_name_or_path's adapters into the base in order, all but the last (all of them with
    create_new_adapter); returns the model and the adapter that trains on, if any."""
    from peft import PeftConfig, PeftModel

    paths = split_list(a.adapter_name_or_path)
    merge, resume = (paths, None) if a.create_new_adapter or not paths else (paths[:-1], paths[-1])
    for path in merge:
        # no task wrapper: an sft adapter merges into a reward model's (sequence classifier's) base as well
        config = PeftConfig.from_pretrained(path)
        config.task_type = None
        model = PeftModel.from_pretrained(model, path, config=config).merge_and_unload()
        log.info("lora: merged adapter %s into the base", path)
    return model, resume


def attach(model, cfg: Any):
    from peft import LoraConfig, PeftModel, get_peft_model

    model, resume = merge_earlier(model, cfg.adapter)
    if resume:
        log.info("lora: continuing to train adapter %s (its rank and targets apply)", resume)
        return PeftModel.from_pretrained(model, resume, is_trainable=True)
    model = get_peft_model(model, LoraConfig(task_type=task_type(model), **lora_kwargs(cfg.adapter)))
    targets = model.peft_config["default"].target_modules
    log.info("lora: %d target modules (%s)", len(targets), ",".join(sorted({t.rsplit(".", 1)[-1] for t in targets})))
    return model


def load(model, cfg: Any, adapter_dir: Path):
    from peft import PeftModel

    model, _ = merge_earlier(model, cfg.adapter)
    return PeftModel.from_pretrained(model, str(adapter_dir))
