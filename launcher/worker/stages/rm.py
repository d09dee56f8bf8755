"""rm: TRL's RewardTrainer on pairwise rows (chosen_ids, rejected_ids: whole sequences tokenized with the run's
template); the model is a sequence classifier with one output (launcher.worker.model). Logs pairwise
accuracy, margin and reward; at the end the reward's mean and spread over the training pairs are recorded,
which ppo_score_norm standardises a later ppo run's scores with."""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

METRICS = {"rm": ("accuracy", "margin", "mean_reward")}
#: training pairs the reward statistics are measured on
STATS_ROWS = 256


def build(inputs):
    from trl import RewardConfig, RewardTrainer

    # rows arrive tokenized and cut to data.cutoff_len: TRL filters nothing more
    args = RewardConfig(**inputs.args, max_length=None)
    return RewardTrainer(model=inputs.model, args=args, train_dataset=inputs.data.train,
                         eval_dataset=inputs.data.eval, processing_class=inputs.tokenizer,
                         callbacks=inputs.callbacks)


@torch.no_grad()
def reward_stats(model, rows, pad_token_id: int, device, batch_size: int = 16) -> dict[str, float]:
    """Mean and standard deviation of the reward over the chosen and rejected sequences of `rows`."""
    sequences = [ids for row in rows for ids in (row["chosen_ids"], row["rejected_ids"])]
    scores = []
    for i in range(0, len(sequences), batch_size):
        batch = sequences[i:i + batch_size]
        width = max(len(s) for s in batch)
        ids = torch.tensor([s + [pad_token_id] * (width - len(s)) for s in batch], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch], device=device)
        scores.append(model(input_ids=ids, attention_mask=mask).logits[:, 0].float())
    scores = torch.cat(scores)
    return {"reward_mean": scores.mean().item(), "reward_std": scores.std().item()}


def finish(trainer, inputs) -> dict:
    """summary.json entries (called on every rank, written by rank 0): the reward's statistics on the first
    STATS_ROWS training pairs. Under ZeRO-3 each rank holds a slice of the weights and every forward gathers
    them from all ranks, so every rank scores the same pairs; otherwise rank 0 alone does."""
    zero3 = trainer.is_deepspeed_enabled and trainer.deepspeed.zero_optimization_stage() == 3
    if not (zero3 or trainer.is_world_process_zero()):
        return {}
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    rows = inputs.data.train.select(range(min(STATS_ROWS, len(inputs.data.train))))
    stats = reward_stats(model, rows, inputs.tokenizer.pad_token_id, trainer.args.device)
    log.info("reward on %d training pairs: mean %.4f, std %.4f", len(rows), stats["reward_mean"], stats["reward_std"])
    return stats
