"""Stages: their keys, the data kind they train on, and the earlier runs they chain from."""
from __future__ import annotations

from typing import Any, Iterator, Optional

from launcher import rewards
from launcher.data.formats import ONLINE_STAGES
from launcher.facts import Facts, RunRefFacts, is_local_path
from launcher.topology import plan_batch
from launcher.schema import StageConfig
from launcher.validate.problem import Problem, show
from launcher.validate.runs import PEFT_TYPES, check_same_base

#: TRL's DPO loss types (DPOConfig.loss_type; "sft" is dpo_ftx's term)
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")


#: the stages that read each stage.* key (another stage ignores it: a warning when it is set)
STAGE_KEYS = {
    "dpo_beta": ("dpo", "kto"), "dpo_loss": ("dpo",), "dpo_ftx": ("dpo",), "kto_chosen_weight": ("kto",),
    "kto_rejected_weight": ("kto",), "ref_model": ("dpo", "kto", "ppo"), "precompute_ref_log_probs": ("dpo", "kto"),
    "reward_model": ONLINE_STAGES, "reward_funcs": ("grpo", "rloo"), "kl_coef": ONLINE_STAGES,
    "num_generations": ("grpo", "rloo"), "max_completion_length": ONLINE_STAGES, "temperature": ONLINE_STAGES,
    "top_p": ("grpo", "rloo"), "top_k": ("grpo", "rloo"), "ppo_epochs": ("ppo",), "ppo_num_mini_batches": ("ppo",),
    "ppo_target": ("ppo",), "ppo_score_norm": ("ppo",), "ppo_whiten_rewards": ("ppo",),
}


def check_stage(cfg: Any, facts: Facts) -> Iterator[Problem]:
    s, stage, a = cfg.stage, show(cfg.stage.name), cfg.adapter
    defaults = StageConfig()
    for k, stages in STAGE_KEYS.items():
        if stage not in stages and getattr(s, k) != getattr(defaults, k):
            yield Problem(f"stage.{k}", getattr(s, k), f"stage={stage} does not read it (only "
                          f"{', '.join(stages)}); drop it", error=False)
    if stage in ("pt", "sft"):
        return
    # prefix tuning and packing with these stages: refused by the combination matrix (launcher/matrix.py)
    if stage == "rm" and a.adapter_name_or_path and not a.create_new_adapter and a.name in PEFT_TYPES:
        yield Problem("adapter.create_new_adapter", False, "stage=rm trains a new score head, which an adapter "
                      "trained for generation lacks: set adapter.create_new_adapter=true (the adapter is merged "
                      "into the base and a new one trains with the head)")
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
            yield from check_same_base(cfg, "stage.ref_model", s.ref_model, run)


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
    d = cfg.data
    if d.val_size or d.eval_dataset is not None or t.eval_strategy != "no":
        key, value = ("data.val_size", d.val_size) if d.val_size else ("data.eval_dataset", d.eval_dataset) \
            if d.eval_dataset is not None else ("train.eval_strategy", t.eval_strategy)
        yield Problem(key, value, f"stage={stage} evaluates nothing here (its metrics come from its own samples): "
                      "set data.val_size=0, data.eval_dataset=null and train.eval_strategy=no")
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
    if cfg.resume is True:  # resume=auto starts ppo fresh (the worker never resumes it)
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
    if s.ppo_num_mini_batches < 1 or rollouts % s.ppo_num_mini_batches:
        yield Problem("stage.ppo_num_mini_batches", s.ppo_num_mini_batches, f"must divide the rollouts per rank "
                      f"(per_device_train_batch_size x gradient_accumulation_steps = {rollouts}) into mini-batches")
    elif s.ppo_whiten_rewards and rollouts // s.ppo_num_mini_batches < 8:
        yield Problem("stage.ppo_whiten_rewards", True, f"whitening needs >= 8 rollouts per mini-batch and rank, "
                      f"got {rollouts // s.ppo_num_mini_batches}; raise the batch or lower ppo_num_mini_batches")


def _check_rm_run(cfg: Any, key: str, path: Optional[str], facts: Facts) -> Iterator[Problem]:
    """stage.reward_model: a finished rm run dir (or its final/) on the same base model."""
    fix = "give the run dir of a finished stage=rm run on the same base model (e.g. recipe=tiny_rm's)"
    run = facts.runs.get(path, RunRefFacts()) if path else RunRefFacts()
    if not path:
        yield Problem(key, path, f"stage={show(cfg.stage.name)} scores its samples with a reward model: {fix}")
    elif not run.exists:
        yield Problem(key, path, f"no such directory; {fix}")
    elif run.run_dir is None:
        yield Problem(key, path, f"not a run dir (no launcher config.yaml there or above it); {fix}")
    elif run.stage != "rm":
        yield Problem(key, path, f"a stage={run.stage} run, not a reward model; {fix}")
    elif not run.has_final:
        yield Problem(key, path, f"the rm run {run.run_dir} has no final/ (it has not finished); {fix}")
    else:
        yield from check_same_base(cfg, key, path, run)
