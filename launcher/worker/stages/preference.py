"""dpo and kto: TRL's DPOTrainer and KTOTrainer on rows our data cache tokenized with the run's template
(dpo: prompt_ids, chosen_ids, rejected_ids; kto: prompt_ids, completion_ids, label).

TRL 1.12 always re-tokenizes text rows on every rank (its own chat template, its own BOS/EOS handling, the
prompt/answer boundary found by tokenizing twice). Its collators and losses take the tokenized columns as
they are, so the trainers here skip that step and read the cache: the same token ids sft would train on.
"""
from __future__ import annotations

from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from launcher.worker.model import load_reference

METRICS = {"dpo": ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"),
           "kto": ("rewards/chosen", "rewards/rejected", "rewards/margins", "kl")}


class TokenizedDPOTrainer(DPOTrainer):
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


class TokenizedKTOTrainer(KTOTrainer):
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if not self.calculate_KL:
            return dataset

        # TRL's KL estimate: each row's completion paired with the previous row's prompt, within a batch
        def shifted(batch):
            return {"KL_completion_ids": batch["completion_ids"][-1:] + batch["completion_ids"][:-1]}

        # in memory: the cache directory stays as the data pipeline wrote it
        return dataset.map(shifted, batched=True, batch_size=args.per_device_train_batch_size, keep_in_memory=True,
                           desc=f"KL completions of {dataset_name}")


def build(inputs):
    cfg, s = inputs.cfg, inputs.cfg.stage
    stage = s.name.value
    common = dict(model=inputs.model, ref_model=load_reference(cfg, inputs.precision), train_dataset=inputs.data.train,
                  eval_dataset=inputs.data.eval, processing_class=inputs.tokenizer, callbacks=inputs.callbacks)
    # rows arrive cut to data.cutoff_len: TRL truncates nothing more
    shared = dict(inputs.args, beta=s.dpo_beta, precompute_ref_log_probs=s.precompute_ref_log_probs, max_length=None)
    if stage == "dpo":
        losses, weights = ([s.dpo_loss, "sft"], [1.0, s.dpo_ftx]) if s.dpo_ftx else ([s.dpo_loss], None)
        return TokenizedDPOTrainer(args=DPOConfig(**shared, loss_type=losses, loss_weights=weights), **common)
    args = KTOConfig(**shared, desirable_weight=s.kto_chosen_weight, undesirable_weight=s.kto_rejected_weight)
    return TokenizedKTOTrainer(args=args, **common)
