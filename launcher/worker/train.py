"""Worker(run_dir) -> setup() -> train() -> cleanup(): the same on every rank.

Reads the resolved config from the run dir (never re-composes), builds tokenizer, model, adapter and
data, and trains with transformers' Trainer, whose distributed sampling gives each rank other rows.
Rank 0 alone logs metrics, reports to TensorBoard/wandb and saves.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from launcher.rundir import RunDir
from launcher.schema import load_run_config
from launcher.worker.ranklog import rank_from_env, setup_rank_logging

log = logging.getLogger("launcher.worker")


def gather(value) -> list:
    """value from every rank, in rank order (just this one's when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


class Worker:
    def __init__(self, run_dir: str):
        self.run = RunDir(Path(run_dir).resolve())
        self.cfg = load_run_config(str(self.run.config))
        self.rank, self.local_rank, self.world_size = rank_from_env()
        self.started = time.time()

    def setup(self) -> None:
        setup_rank_logging(self.run.rank_log(self.rank), self.rank)
        from transformers import set_seed

        from launcher.worker.model import count_parameters, load_model, load_tokenizer, resolve_precision

        cfg = self.cfg
        log.info("rank %d/%d (local %d) starting in %s", self.rank, self.world_size, self.local_rank, self.run.root)
        set_seed(cfg.seed)
        self.precision = resolve_precision(cfg.precision.name.value, cfg.device.value)
        # Before the model: with a ZeRO-3 ds config, TrainingArguments makes from_pretrained load each
        # rank's partition only (deepspeed.zero.Init) instead of the whole model on every rank.
        self.args = self.training_args()
        log.info("device %s", self.args.device)  # sets up torch.distributed (accelerate's PartialState)
        if cfg.zero.name != "none":
            import deepspeed

            # zero.Init asks deepspeed.comm for the world size; on CPU accelerate set up torch.distributed
            # only, and deepspeed.comm would report a world of 1 (this wraps the existing process group).
            deepspeed.init_distributed()
        self.tokenizer = load_tokenizer(cfg)
        self.model = load_model(cfg, self.precision)
        self.trainable, self.total = count_parameters(self.model)
        log.info("trainable params: %d / %d (%.4f%%), adapter %s, precision %s", self.trainable, self.total,
                 100 * self.trainable / self.total, cfg.adapter.name.value, self.precision)
        from launcher.worker.dataset import build_sft_dataset

        self.dataset = build_sft_dataset(cfg, self.tokenizer)

    def training_args(self):
        from transformers import TrainingArguments

        cfg, t = self.cfg, self.cfg.train
        return TrainingArguments(
            output_dir=str(self.run.checkpoints),
            per_device_train_batch_size=t.per_device_train_batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            learning_rate=t.learning_rate, num_train_epochs=t.num_train_epochs, max_steps=t.max_steps,
            lr_scheduler_type=t.lr_scheduler_type, warmup_steps=t.warmup_steps, weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm, optim=t.optim,
            logging_steps=t.logging_steps, logging_first_step=True,
            save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
            gradient_checkpointing=t.gradient_checkpointing,
            dataloader_num_workers=t.dataloader_num_workers, dataloader_drop_last=t.dataloader_drop_last,
            bf16=self.precision == "bf16", fp16=self.precision == "fp16",
            # Without use_cpu, torchrun ranks on CPU silently skip DDP and train on identical batches.
            use_cpu=cfg.device.value == "cpu",
            seed=cfg.seed, report_to=list(cfg.logger.report_to), run_name=cfg.name,
            remove_unused_columns=False,  # the collator needs row_id
            include_num_input_tokens_seen="non_padding",
            disable_tqdm=True, save_only_model=False,
            # the planned ds config; transformers fills its "auto" values from the arguments above
            deepspeed=json.loads(self.run.ds_config_auto.read_text()) if cfg.zero.name != "none" else None,
        )

    def train(self) -> None:
        from transformers import Trainer
        from transformers.trainer_utils import get_last_checkpoint

        from launcher.data.collator import PaddingCollator
        from launcher.worker.callbacks import MetricsCallback, PeakMemory, SaveResolvedDsConfig

        metrics, peak = MetricsCallback(self.run.metrics), PeakMemory(self.cfg.device.value)
        trainer = Trainer(model=self.model, args=self.args, train_dataset=self.dataset,
                          data_collator=PaddingCollator(self.tokenizer.pad_token_id),
                          processing_class=self.tokenizer, callbacks=[metrics, peak])
        if trainer.is_deepspeed_enabled:
            trainer.add_callback(SaveResolvedDsConfig(self.run.ds_config, trainer))
        resume = get_last_checkpoint(str(self.run.checkpoints)) if self.cfg.resume and self.run.checkpoints.is_dir() else None
        if resume:
            log.info("resuming from %s", resume)
        result = trainer.train(resume_from_checkpoint=resume)
        # Every rank: under ZeRO-3 the 16-bit weights are gathered from all of them
        # (stage3_gather_16bit_weights_on_model_save), and rank 0 writes them.
        trainer.save_model(str(self.run.final))
        memory = {"peak_memory_mb_per_rank": gather(peak.peak_mb), "peak_memory_kind": peak.kind}
        if trainer.is_world_process_zero():
            self.tokenizer.save_pretrained(str(self.run.final))
            self.write_summary(trainer, result, metrics.history, resume, memory)

    def write_summary(self, trainer, result, history: list[dict], resumed_from: str | None,
                      memory: dict) -> None:
        state = trainer.state
        runtime = result.metrics.get("train_runtime") or (time.time() - self.started)
        summary = {
            "stage": self.cfg.stage.name.value, "adapter": self.cfg.adapter.name.value, "precision": self.precision,
            "world_size": self.world_size, "global_batch_size": trainer.args.per_device_train_batch_size
            * trainer.args.gradient_accumulation_steps * self.world_size,
            "steps": state.global_step, "epochs": state.epoch,
            "first_loss": history[0]["loss"] if history else None,
            "final_loss": history[-1]["loss"] if history else None,
            "train_loss": result.training_loss,
            "trained_tokens": state.num_input_tokens_seen,
            "train_runtime_s": round(runtime, 3),
            "tokens_per_s": round(state.num_input_tokens_seen / runtime, 1) if runtime else None,
            "wall_time_s": round(time.time() - self.started, 3),
            "trainable_params": self.trainable, "total_params": self.total,
            "zero_stage": trainer.deepspeed.zero_optimization_stage() if trainer.is_deepspeed_enabled else None,
            **memory,
            "resumed_from": resumed_from, "final_dir": str(self.run.final),
        }
        self.run.summary.write_text(json.dumps(summary, indent=2) + "\n")
        log.info("summary: %s", json.dumps(summary))

    def cleanup(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
