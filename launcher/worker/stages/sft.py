"""pt and sft: transformers' Trainer (LauncherTrainer) on rows the data pipeline tokenized (and packed), our padding collator."""
from __future__ import annotations

METRICS: dict[str, tuple[str, ...]] = {"pt": (), "sft": ()}


def build(inputs):
    from transformers import TrainingArguments

    from launcher.data.collator import PaddingCollator
    from launcher.metrics.training import argmax_ids, compute_accuracy
    from launcher.worker.trainer import LauncherTrainer

    data = inputs.data
    # Eval rows keep no row_id: the rank log's "rows" lines list the rows trained on.
    evaluation = data.eval.remove_columns(["row_id"]) if data.eval is not None else None
    # compute_accuracy: each eval batch's logits become argmax ids at once; the full logits are never kept
    accuracy = dict(compute_metrics=compute_accuracy, preprocess_logits_for_metrics=argmax_ids) \
        if inputs.cfg.train.compute_accuracy else {}
    return LauncherTrainer(model=inputs.model, args=TrainingArguments(**inputs.args), train_dataset=data.train,
                           eval_dataset=evaluation, data_collator=PaddingCollator(inputs.tokenizer.pad_token_id),
                           processing_class=inputs.tokenizer, callbacks=inputs.callbacks, **accuracy)
