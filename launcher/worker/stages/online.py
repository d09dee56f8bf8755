"""ppo, grpo, rloo: the policy samples answers to the prompts of sft-format rows and learns from their rewards.

ppo         TRL's PPOTrainer (trl.experimental.ppo, the last TRL to ship it is 1.12). Prompts arrive tokenized
            with the run's template. The reward model is an rm run's (stage.reward_model); the value model starts
            as a copy of it (trained through a new LoRA with adapter=lora/qlora, else whole). The reference is the
            policy as it starts: a frozen copy of the policy's adapter, or of the model (full/freeze), or
            stage.ref_model. ppo_target adapts kl_coef; ppo_score_norm standardises the scores.
grpo, rloo  TRL's GRPOTrainer / RLOOTrainer. Prompts are text rendered with the run's template (TRL tokenizes
            them as it generates); rewards come from launcher/rewards.py functions and/or an rm run.
"""
from __future__ import annotations

import copy
import json
import logging
import types

import torch
from transformers import TrainerCallback

from launcher import rewards
from launcher.precision import COMPUTE_DTYPES, DTYPE_NAMES
from launcher.rundir import RunDir, find_run_root
from launcher.topology import world_size
from launcher.worker.model import load_reference, load_run_model

log = logging.getLogger(__name__)

METRICS = {"ppo": ("objective/kl", "objective/scores", "objective/rlhf_reward", "kl_coef"),
           "grpo": ("reward", "reward_std", "kl", "completions/mean_length"),
           "rloo": ("reward", "reward_std", "kl", "completions/mean_length")}


def generation_tokenizer(tokenizer):
    """A copy for generation: pads on the left, and adds no special token itself (the rendered prompts carry
    the template's own bos, as in every other stage)."""
    tok = copy.deepcopy(tokenizer)
    tok.padding_side = "left"
    if tok("x")["input_ids"] != tok("x", add_special_tokens=False)["input_ids"]:
        tok.add_bos_token = tok.add_eos_token = False  # a fast tokenizer rebuilds its post-processor
        if tok("x")["input_ids"] != tok("x", add_special_tokens=False)["input_ids"]:
            log.warning("%s adds special tokens to every text; prompts may start with two bos", type(tok).__name__)
    return tok


@torch.no_grad()
def standardise_scores(reward_model, rm_run: str) -> None:
    """ppo_score_norm: (score - mean) / std with the rm run's reward statistics on its training pairs, folded
    into the score head, so the reward model TRL calls returns standardised scores."""
    stats = json.loads(RunDir(find_run_root(rm_run)).summary.read_text())
    mean, std = stats["reward_mean"], max(stats["reward_std"], 1e-6)
    head = reward_model.score
    folded = torch.nn.Linear(head.in_features, head.out_features, bias=True, dtype=head.weight.dtype,
                             device=head.weight.device)
    folded.weight.copy_(head.weight / std)
    folded.bias.copy_(((head.bias if head.bias is not None else 0.0) - mean) / std)
    reward_model.score = folded
    log.info("ppo_score_norm: scores standardised with the rm run's mean %.4f and std %.4f", mean, std)


def value_model(cfg, precision: str):
    """PPO's critic, started from the reward model: trained whole, or through a new LoRA with adapter=lora/qlora."""
    from peft import LoraConfig, get_peft_model

    from launcher.worker.adapters.lora import lora_kwargs, task_type

    model = load_run_model(cfg.stage.reward_model, precision, dtype="bf16" if precision == "pure_bf16" else "fp32")
    model.train()
    if cfg.adapter.name.value in ("lora", "qlora"):
        return get_peft_model(model, LoraConfig(task_type=task_type(model), **lora_kwargs(cfg.adapter)))
    return model.requires_grad_(True)


def frozen_adapter_copy(policy) -> dict:
    """The reference of a LoRA policy: a frozen copy of its adapter as it starts (what TRL's other trainers
    make), so continuing an sft adapter keeps the sft model as the reference. PPOConfig's adapter names."""
    policy.add_adapter("ref", policy.peft_config["default"])
    for name, param in policy.named_parameters():
        if ".default." in name:
            policy.get_parameter(name.replace(".default.", ".ref.")).data.copy_(param.data)
    policy.set_adapter("default")
    return {"model_adapter_name": "default", "ref_adapter_name": "ref"}


class AdaptiveKLCallback(TrainerCallback):
    """ppo_target: Ziegler et al. (2019)'s adaptive KL controller (TRL's PPO had it before 0.12; LLaMA-Factory's
    ppo_target): after each update kl_coef *= 1 + clip(kl / target - 1, -0.2, 0.2) x episodes / horizon."""

    def __init__(self, target: float, episodes_per_update: int, horizon: int = 10_000):
        self.target, self.episodes, self.horizon = target, episodes_per_update, horizon

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "objective/kl" in logs:
            error = min(max(logs["objective/kl"] / self.target - 1, -0.2), 0.2)
            args.kl_coef *= 1 + error * self.episodes / self.horizon
            logs["kl_coef"] = args.kl_coef


def ppo_trainer(**kwargs):
    """TRL's PPOTrainer, fixed for 2+ ranks. TRL 1.12 reads `self.model.policy` (the reference pass of a LoRA
    policy, save_model) and `self.model.config` (checkpoints), which the DistributedDataParallel wrapper lacks;
    and checkpoints on ranks > 0 read an attribute transformers' Trainer.__init__ sets, which PPOTrainer skips.
    Under a ds config: PPOTrainer makes a bare Accelerator(), which takes DeepSpeed only from an accelerator state
    that already has it, and would otherwise train with DDP (the ZeRO-3 policy's partitions left empty)."""
    from accelerate import Accelerator
    from trl.experimental.ppo import PPOTrainer

    args = kwargs["args"]
    if args.deepspeed_plugin is not None:
        Accelerator(deepspeed_plugin=args.deepspeed_plugin, gradient_accumulation_steps=args.gradient_accumulation_steps)
    trainer = PPOTrainer(**kwargs)
    trainer.is_distributed_loading_by_transformers = False
    if trainer.is_deepspeed_enabled:  # the engine, as train() sets it, for the callbacks that run before
        trainer.deepspeed = trainer.model
        # PPOTrainer builds its scheduler before DeepSpeed drops the optimizer's empty parameter groups (a LoRA
        # has no no-decay parameters): built again on what is left, or its first step fails
        optimizer, trainer.lr_scheduler = trainer.lr_scheduler.optimizer, None
        trainer.create_scheduler(num_training_steps=args.num_total_batches, optimizer=optimizer)
        trainer.save_model = types.MethodType(save_policy, trainer)
    wrapped = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.model is not wrapped:
        for name in ("policy", "config"):  # plain attributes, not registered submodules
            object.__setattr__(trainer.model, name, getattr(wrapped, name))
    return trainer


def save_policy(trainer, output_dir=None, _internal_call=False):
    """PPOTrainer.save_model under DeepSpeed (TRL 1.12 hands transformers the policy in place of the engine, and
    fails): the policy alone (its adapter, or the whole model), not the value model. Under ZeRO-3 every rank joins
    the gather of the 16-bit weights; rank 0 writes."""
    output_dir = output_dir or trainer.args.output_dir
    engine, state = trainer.model, None
    if engine.zero_optimization_partition_weights():
        gathered = engine._zero3_consolidated_16bit_state_dict() or {}
        state = {k.removeprefix("policy."): v for k, v in gathered.items() if k.startswith("policy.")}
    if trainer.accelerator.is_main_process:
        trainer.accelerator.unwrap_model(engine).policy.save_pretrained(output_dir, state_dict=state)


def build(inputs):
    return build_ppo(inputs) if inputs.cfg.stage.name.value == "ppo" else build_sampling(inputs)


def build_ppo(inputs):
    from trl.experimental.ppo import PPOConfig

    cfg, s, t = inputs.cfg, inputs.cfg.stage, inputs.cfg.train
    reward = load_run_model(s.reward_model, inputs.precision)
    if s.ppo_score_norm:
        standardise_scores(reward, s.reward_model)
    ref = load_reference(cfg, inputs.precision)
    adapter_names = frozen_adapter_copy(inputs.model) if ref is None else {}
    episodes = t.per_device_train_batch_size * t.gradient_accumulation_steps * world_size(cfg)
    args = PPOConfig(**inputs.args, num_ppo_epochs=s.ppo_epochs, num_mini_batches=s.ppo_num_mini_batches,
                     whiten_rewards=s.ppo_whiten_rewards, response_length=s.max_completion_length,
                     temperature=s.temperature, stop_token="eos", num_sample_generations=0,
                     local_rollout_forward_batch_size=t.per_device_train_batch_size,
                     # max_steps updates of `episodes` rollouts each; else num_train_epochs over the prompts
                     total_episodes=t.max_steps * episodes if t.max_steps > 0 else None,
                     # PPOConfig's own world_size field (None until the trainer sets it) hides TrainingArguments';
                     # with a ds config TrainingArguments multiplies by it before then
                     world_size=world_size(cfg),
                     **({"kl_coef": s.kl_coef} if s.kl_coef is not None else {}), **adapter_names)
    callbacks = ([AdaptiveKLCallback(s.ppo_target, episodes)] if s.ppo_target else []) + inputs.callbacks
    return ppo_trainer(args=args, processing_class=generation_tokenizer(inputs.tokenizer), model=inputs.model,
                       ref_model=ref, reward_model=reward, value_model=value_model(cfg, inputs.precision),
                       train_dataset=inputs.data.train.select_columns(["input_ids"]), callbacks=callbacks)


def build_sampling(inputs):
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    cfg, s = inputs.cfg, inputs.cfg.stage
    config, trainer = (GRPOConfig, GRPOTrainer) if s.name.value == "grpo" else (RLOOConfig, RLOOTrainer)
    tokenizer = generation_tokenizer(inputs.tokenizer)
    funcs = [rewards.resolve(name) for name in s.reward_funcs]
    if s.reward_model:
        funcs.append(load_run_model(s.reward_model, inputs.precision))
    kwargs = dict(inputs.args, num_generations=s.num_generations, max_completion_length=s.max_completion_length,
                  temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    if s.kl_coef is not None:
        kwargs["beta"] = s.kl_coef
    beta = kwargs.get("beta", config.__dataclass_fields__["beta"].default)
    if beta and cfg.adapter.name.value in ("full", "freeze"):  # TRL loads the reference itself: frozen dtype
        kwargs["model_init_kwargs"] = {"dtype": DTYPE_NAMES[COMPUTE_DTYPES[inputs.precision]],
                                       "attn_implementation": cfg.model.attn.value}
    return trainer(model=inputs.model, reward_funcs=funcs, args=config(**kwargs), train_dataset=inputs.data.train,
                   processing_class=tokenizer, reward_processing_classes=[tokenizer] * len(funcs),
                   callbacks=inputs.callbacks)
