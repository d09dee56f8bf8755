"""Worker(run_dir) -> setup() -> train() -> cleanup(): the same on every rank and for every stage.

Reads the resolved config from the run dir (never re-composes), builds tokenizer, data, model and adapter,
then the stage's trainer (launcher/worker/stages: transformers' Trainer for pt/sft, TRL's for the others),
whose distributed sampling gives each rank other rows. Metrics, preemption, resume, final/ and summary.json
are common to all stages. Rank 0 alone logs metrics, reports to TensorBoard/wandb and saves.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import socket
import time
from pathlib import Path

from launcher.data.formats import ONLINE_STAGES
from launcher.rundir import RunDir, _write, append_event, read_events
from launcher.schema import load_run_config
from launcher.worker.ranklog import local_world_size, rank_from_env, setup_rank_logging
from launcher.worker.signals import StopSignals

log = logging.getLogger("launcher.worker")


def gather(value) -> list:
    """value from every rank, in rank order (just this one's when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def without_deepspeed() -> None:
    """A run without DeepSpeed never imports it: accelerate's unwrap_model imports deepspeed (about 0.5 s and
    tens of MB per rank) only to ask whether the model is a DeepSpeedEngine, which no model of such a run is."""
    import accelerate.utils.other

    accelerate.utils.other.is_deepspeed_available = lambda: False


class Worker:
    def __init__(self, run_dir: str, signals: StopSignals | None = None):
        self.run = RunDir(Path(run_dir).resolve())
        self.cfg = load_run_config(str(self.run.config))
        self.rank, self.local_rank, self.world_size = rank_from_env()
        self.host = socket.gethostname()
        self.started = time.time()
        self.signals = signals or StopSignals()
        self.background = None  # local rank 0's data process (launcher.data.background) until its cache is read

    def setup(self) -> None:
        uses_deepspeed = self.cfg.zero.name != "none" or self.cfg.backend.name.value == "deepspeed"
        setup_rank_logging(self.run.rank_log(self.rank), self.rank, uses_deepspeed=uses_deepspeed)
        cfg = self.cfg
        log.info("rank %d/%d (node %s, local %d) on %s%s starting in %s", self.rank, self.world_size,
                 os.environ.get("GROUP_RANK", "0"), self.local_rank, socket.gethostname(),
                 f" (slurm node {os.environ['SLURMD_NODENAME']})" if "SLURMD_NODENAME" in os.environ else "",
                 self.run.root)
        from launcher.worker.model import (count_parameters, load_for_eval, load_model, load_tokenizer,
                                           resolve_precision)

        self.precision = resolve_precision(cfg.precision.name.value, cfg.device.value)
        from launcher.worker.node import check_node

        check_node(cfg, self.run, self.rank, self.local_rank, self.host)  # validate saw the launching host only
        if cfg.preflight:
            self.preflight_alone()
        self.tokenizer = load_tokenizer(cfg)
        evaluating = cfg.stage.name.value == "eval"  # reads its benchmark's rows itself (worker/benchmark.py)
        from launcher.data import background

        # Where a core is free, local rank 0's data is tokenized by a child process from here on, while this one
        # imports the rest and loads its model (as the other ranks do while they wait for the cache).
        if (self.local_rank == 0 and not evaluating and not cfg.data.streaming
                and background.spare_core(local_world_size())):
            self.background = background.start(cfg, self.tokenizer, rank=self.rank, run_dir=str(self.run.root))
        if not uses_deepspeed:
            without_deepspeed()
        # Before the model: with a ZeRO-3 ds config, TrainingArguments makes from_pretrained load each
        # rank's partition only (deepspeed.zero.Init) instead of the whole model on every rank. Kept on self:
        # transformers holds that ds config by a weak reference. Each stage builds its own (TRL) config too.
        from transformers import TrainingArguments

        if cfg.device.value == "cpu" and self.world_size > 1:
            self.init_gloo(cfg.train.ddp_timeout)
        self.train_kwargs = self.training_kwargs()
        self.args = TrainingArguments(**self.train_kwargs)
        log.info("device %s", self.args.device)  # sets up torch.distributed (accelerate's PartialState)
        if cfg.preflight:
            self.preflight_together()
        if cfg.zero.name != "none":
            import deepspeed

            # zero.Init asks deepspeed.comm for the world size; on CPU accelerate set up torch.distributed
            # only, and deepspeed.comm would report a world of 1 (this wraps the existing process group).
            deepspeed.init_distributed()
            if cfg.device.value == "cpu" and self.world_size > 1:
                self.release_shm_buffer()
        # Every rank loads its model before it reads the data: no rank waits on tokenization first, so ZeRO-3's
        # collective loading (zero.Init) finds every rank there.
        from transformers import set_seed

        set_seed(cfg.seed)  # a new head (rm) or adapter starts the same on every rank
        load = load_for_eval if evaluating else load_model  # eval: nothing trains
        self.model = load(cfg, self.precision, self.local_rank)
        self.data = None if evaluating else self.prepare_data()
        self.trainable, self.total = count_parameters(self.model)
        log.info("trainable params: %d / %d (%.4f%%), adapter %s, precision %s", self.trainable, self.total,
                 100 * self.trainable / self.total, cfg.adapter.name.value, self.precision)

    def preflight_alone(self) -> None:
        """This rank's own checks (device, disk), before torch.distributed: a failure exits at once."""
        from launcher.worker import preflight

        problems = preflight.local_checks(self.cfg, self.run, self.local_rank, self.precision)
        if problems:
            preflight.fail(self.run, [preflight.Failure(self.rank, self.host, c, m) for c, m in problems], self.rank)
        log.info("preflight: device and disk ok")

    def release_shm_buffer(self) -> None:
        """DeepSpeed's shared-memory all-reduce on CPU never removes its /dev/shm files (launcher.shm_buffers):
        once every rank has mapped them all (the barrier), each rank unlinks the name of its own."""
        import torch.distributed as dist

        from launcher import shm_buffers

        dist.barrier()
        if shm_buffers.release_own(self.rank):
            log.info("deepspeed: this rank's shared-memory all-reduce buffer is unlinked (freed when the ranks end)")

    @staticmethod
    def init_gloo(timeout_s: int) -> None:
        """transformers (5.25) passes ddp_timeout to init_process_group on GPUs but not with use_cpu, where a
        rank that hangs would hold the others for torch's default 30 minutes: set up gloo here, with it; accelerate
        then uses this process group."""
        import datetime

        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))

    def preflight_together(self) -> None:
        """Checks of all ranks together (one collective with a timeout, the shared run dir)."""
        import torch.distributed as dist

        from launcher.worker import preflight

        if not (dist.is_available() and dist.is_initialized()):
            return
        timeout = min(self.cfg.train.ddp_timeout, preflight.COLLECTIVE_TIMEOUT_S)
        failures = preflight.collective_checks(self.run, self.rank, timeout)
        if failures:
            preflight.fail(self.run, failures, self.rank)
        log.info("preflight: all %d ranks reached the barrier and share %s", self.world_size, self.run.root)

    def prepare_data(self):
        """Local rank 0 (or its data process) builds the cache or finds it; the other ranks wait for it."""
        from launcher.data.cache import prepare

        located = self.background.located() if self.background is not None else None
        data = prepare(self.cfg, self.tokenizer, local_rank=self.local_rank, rank=self.rank,
                       run_dir=str(self.run.root), located=located)
        if self.rank == 0:
            self.run.data.write_text(json.dumps(data.record, indent=2) + "\n")
        return data

    def training_kwargs(self) -> dict:
        """transformers TrainingArguments kwargs; every stage's config (TRL's *Config subclass it) takes them, so
        precision, device, logging and checkpoints behave the same in every stage. TRL's own defaults that
        differ (bf16 and gradient checkpointing on) are overridden here."""
        from launcher.precision import trainer_precision
        from launcher.worker.evaluation import best_model_kwargs

        cfg, t = self.cfg, self.cfg.train
        return dict(
            output_dir=str(self.run.checkpoints),
            per_device_train_batch_size=t.per_device_train_batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            learning_rate=t.learning_rate, num_train_epochs=t.num_train_epochs, max_steps=t.max_steps,
            lr_scheduler_type=t.lr_scheduler_type, weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm, optim=t.optim,
            # transformers reads a float in (0, 1) as a fraction of the total steps
            warmup_steps=t.warmup_ratio or t.warmup_steps,
            logging_steps=t.logging_steps, logging_first_step=True,
            eval_strategy=t.eval_strategy, eval_steps=t.eval_steps,
            per_device_eval_batch_size=t.per_device_eval_batch_size,
            # load_best_model_at_end, metric_for_best_model, greater_is_better (worker/evaluation.py)
            **best_model_kwargs(t),
            # the launcher rotates (CompleteCheckpoints) once a checkpoint is complete; the Trainer's rotation
            # runs before that and could delete the newest complete one for one never finished
            save_strategy="steps", save_steps=t.save_steps, save_total_limit=None,
            ddp_timeout=t.ddp_timeout,
            # transformers' new name; its default is non-reentrant, so gradients reach an adapter even when the
            # inputs (frozen embeddings) need none
            activation_checkpointing=t.gradient_checkpointing,
            # every adapter uses all its trainable parameters in each forward: no extra graph walk per step
            ddp_find_unused_parameters=False,
            dataloader_num_workers=t.dataloader_num_workers, dataloader_drop_last=t.dataloader_drop_last,
            **trainer_precision(self.precision),
            # Without use_cpu, torchrun ranks on CPU silently skip DDP and train on identical batches.
            use_cpu=cfg.device.value == "cpu",
            seed=cfg.seed, report_to=list(cfg.logger.report_to), run_name=cfg.name,
            remove_unused_columns=False,  # collators and reward functions read their own columns
            # a sampling stage's batches are prompts, not token rows (its trainer counts tokens itself)
            include_num_input_tokens_seen="no" if cfg.stage.name.value in ONLINE_STAGES else "non_padding",
            disable_tqdm=True, save_only_model=False,
            # A stream is sharded per rank; dispatching would concatenate batches of unequal widths.
            accelerator_config={"dispatch_batches": False} if cfg.data.streaming else None,
            # the planned ds config; transformers fills its "auto" values from the arguments above
            deepspeed=json.loads(self.run.ds_config_auto.read_text()) if cfg.zero.name != "none" else None,
        )

    def train(self) -> None:
        from launcher.worker.callbacks import AttemptBegins, MetricsCallback, PeakMemory, SaveResolvedDsConfig
        from launcher.worker.checkpointing import CompleteCheckpoints
        from launcher.worker import evaluation as eval_callbacks
        from launcher.worker.preempt import PreemptionCallback
        from launcher.worker.progress import ProgressCallback
        from transformers import PrinterCallback
        from launcher.worker.stages import StageInputs, stage_of

        if not self.cfg.train.do_train:
            self.predict_only()
            return
        stage_name = self.cfg.stage.name.value
        if stage_name == "eval":
            from launcher.worker.benchmark import evaluate

            return evaluate(self)
        stage = stage_of(stage_name)
        resume = self.resume_from(stage_name)
        metrics, peak = MetricsCallback(self.run.metrics), PeakMemory(self.cfg.device.value)
        saves = CompleteCheckpoints(self.run.checkpoints, self.cfg.train.save_total_limit, self.world_size,
                                    self.zero_stage())
        # SIGTERM/SIGINT always; the request file of the Slurm batch script (USR2) when there is one
        preempt = PreemptionCallback(self.signals, os.environ.get("LAUNCHER_PREEMPT_FILE") or None)
        begins = AttemptBegins(self.run, {
            "restart": int(os.environ.get("LAUNCHER_RESTART", 0)),
            "slurm_restart": int(os.environ.get("LAUNCHER_RESTART_COUNT", 0)),
            "host": self.host, "world_size": self.world_size, "resumed_from": str(resume) if resume else None})
        # the best checkpoint saved as it happens, early stopping (train.load_best_model_at_end, early_stopping_steps)
        best_and_stop = eval_callbacks.callbacks(self.cfg.train)
        stop = next((c for c in best_and_stop if isinstance(c, eval_callbacks.EarlyStopping)), None)
        callbacks = [metrics, peak, saves, preempt, begins, *best_and_stop]
        inputs = StageInputs(cfg=self.cfg, tokenizer=self.tokenizer, model=self.model, data=self.data,
                             args=self.train_kwargs, callbacks=callbacks, precision=self.precision)
        trainer = stage.build(inputs)
        if trainer.is_deepspeed_enabled:
            trainer.add_callback(SaveResolvedDsConfig(self.run.ds_config, trainer))
        # our progress line (progress.py) instead of transformers' raw dicts (disable_tqdm: no tqdm bar either)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(ProgressCallback())
        # Everything loading left alive (modules, model, data) moves to the collector's permanent generation, so
        # no collection walks it again: not this one, nor accelerate's gc.collect() at train start, nor the
        # automatic ones while training (each a pass over every object of the process otherwise).
        gc.freeze()
        gc.enable()
        result = trainer.train(resume_from_checkpoint=str(resume)) if resume else trainer.train()
        stopped = preempt.stopped_at is not None
        early = {"early_stopped_at": stop.stopped_at} if stop is not None and stop.stopped_at is not None else {}
        if trainer.is_world_process_zero():
            append_event(self.run, {"event": "train_end", "time": time.time(), "step": trainer.state.global_step,
                                    "tokens": trainer.state.num_input_tokens_seen,
                                    "outcome": "interrupted" if stopped else "finished", **early})
        if stopped:
            self.stopped(trainer, preempt, saves)
            return
        evaluation = self.final_eval(trainer) if self.data.eval is not None else {}
        # Every rank: under ZeRO-3 the 16-bit weights are gathered from all of them
        # (stage3_gather_16bit_weights_on_model_save), and rank 0 writes them.
        trainer.save_model(str(self.run.final))
        memory = {"peak_memory_mb_per_rank": gather(peak.peak_mb), "peak_memory_kind": peak.kind}
        # A stage's own summary entries (rm: reward statistics), on every rank: under ZeRO-3 a forward needs them all.
        finish = getattr(stage, "finish", None)
        extra = {**(finish(trainer, inputs) if finish else {}), **eval_callbacks.summary_entries(trainer, stop)}
        if trainer.is_world_process_zero():
            eval_callbacks.copy_best_prefix(trainer, self.run.final)
            self.tokenizer.save_pretrained(str(self.run.final))
            self.write_summary(trainer, result, metrics.history, resume, evaluation, stage.METRICS[stage_name], extra,
                               memory)
            self.plot(stage.METRICS[stage_name])
        if self.cfg.train.do_predict:  # after final/ and summary.json: a failed prediction loses no training
            if getattr(trainer, "best_prefix_checkpoint", None):
                # load_best_model_at_end on a prefix: final/ holds the best checkpoint's prefix, the model in memory
                # the last one (trainer.py); predict with final/'s, on a base of its own, whole on this rank
                self.predict(self.final_prefix_model(trainer.args.device), trainer.args.device, zero3=False)
            else:
                self.predict(trainer.accelerator.unwrap_model(trainer.model), trainer.args.device,
                             trainer.is_deepspeed_enabled and trainer.deepspeed.zero_optimization_stage() == 3)

    def final_prefix_model(self, device):
        from launcher.worker.adapters import prefix
        from launcher.worker.model import load_base, load_dtype, quantization_kwargs, whole_on_this_rank

        quantization = quantization_kwargs(self.cfg.adapter, self.precision)
        with whole_on_this_rank():
            base = load_base(self.cfg, load_dtype(self.precision, "prefix"), quantization=quantization,
                             device_index=self.local_rank)
        model = prefix.load(base, self.run.final)
        return model if quantization else model.to(device)

    def predict(self, model, device, zero3: bool) -> None:
        """train.do_predict on every rank (launcher/worker/predict.py); rank 0 writes the results. The eval split,
        or, with no training and no split, every row of data.dataset."""
        from launcher.worker import predict

        dataset = self.data.eval if self.data.eval is not None else self.data.train
        log.info("predict: generating for %d rows on %d rank(s)", len(dataset), self.world_size)
        result = predict.predict(model, self.tokenizer, self.cfg, dataset, rank=self.rank, world=self.world_size,
                                 device=device, precision=self.precision, zero3=zero3, gather=gather)
        if result is not None:
            predict.write(self.run, result)

    def predict_only(self) -> None:
        """train.do_train=false: the model (with adapter.adapter_name_or_path) predicts; nothing trains or saves."""
        if self.rank == 0:
            self.run.summary.write_text(json.dumps({
                "stage": self.cfg.stage.name.value, "adapter": self.cfg.adapter.name.value, "mode": "predict",
                "precision": self.precision, "world_size": self.world_size,
                "adapter_name_or_path": self.cfg.adapter.adapter_name_or_path,
                "total_params": self.total}, indent=2) + "\n")
        if self.cfg.adapter.quantization_bit is None:  # a quantized model is placed on its GPU as it loads
            self.model.to(self.args.device)
        self.predict(self.model, self.args.device, zero3=False)
        if self.rank == 0:
            summary = json.loads(self.run.summary.read_text())
            summary["wall_time_s"] = round(time.time() - self.started, 3)
            self.run.summary.write_text(json.dumps(summary, indent=2) + "\n")

    def resume_from(self, stage_name: str) -> Path | None:
        """The newest complete checkpoint, when resume=true/auto or a restart/requeue (LAUNCHER_RESUME=1) asks
        for one; a checkpoint whose save did not finish on every rank is never resumed from."""
        from launcher.checkpoints import all_checkpoints, checkpoint_step, is_complete, last_complete_checkpoint
        from launcher.worker.stages import CANNOT_RESUME

        wants = str(self.cfg.resume).lower() in ("true", "auto") or os.environ.get("LAUNCHER_RESUME") == "1"
        if not wants:
            return None
        resume = last_complete_checkpoint(self.run.checkpoints)
        newest = checkpoint_step(resume) if resume else -1
        torn = [p.name for p in all_checkpoints(self.run.checkpoints)
                if not is_complete(p) and checkpoint_step(p) > newest]
        if torn:
            log.warning("not resuming from %s: the save did not complete on every rank", ", ".join(torn))
        if resume is None:
            log.warning("no complete checkpoint in %s: training from the start", self.run.checkpoints)
            return None
        if stage_name in CANNOT_RESUME:
            log.warning("stage=%s cannot resume from %s (TRL's trainer has no resume); training from the start",
                        stage_name, resume)
            return None
        log.info("resuming from %s", resume)
        return resume

    def zero_stage(self):
        from launcher import zero

        if self.cfg.zero.name == "none":
            return None
        return zero.stage(json.loads(self.run.ds_config_auto.read_text()))

    def stopped(self, trainer, preempt, saves) -> None:
        """Stopped on request after every rank saved this step's checkpoint. On a signal rank 0 writes
        interrupted.json (launch.sh exits "interrupted, resumable"); the rank then exits 0."""
        step = preempt.stopped_at
        if preempt.by_signal and trainer.is_world_process_zero():
            _write(self.run.interrupted, json.dumps({
                "step": step, "checkpoint": str(saves.last) if saves.last else None,
                "signal": preempt.describe(), "time": time.time()}, indent=2) + "\n")
        log.warning("stopped at step %d (%s) after saving %s; resume=true continues from it", step,
                    preempt.describe(), saves.last)

    @staticmethod
    def final_eval(trainer) -> dict:
        """The eval metrics of the weights final/ gets: evaluated after the last step unless eval_strategy just
        did; with load_best_model_at_end, the best evaluation's (those weights were loaded back)."""
        from launcher.worker.evaluation import best_step

        state = trainer.state
        evals = [h for h in state.log_history if "eval_loss" in h]
        best = best_step(trainer)
        at_best = next((h for h in evals if h.get("step") == best), None) if best is not None else None
        if at_best is not None:
            return at_best
        last = evals[-1] if evals else None
        if last is None or last.get("step") != state.global_step:
            return trainer.evaluate()
        return last

    def write_summary(self, trainer, result, history: list[dict], resumed_from: Path | None, evaluation: dict,
                      stage_metrics: tuple[str, ...], extra: dict, memory: dict) -> None:
        """The whole run (every attempt in this run dir: metrics.jsonl and attempts.jsonl), not this attempt."""
        from launcher.worker.history import metrics_rows, whole_run

        state = trainer.state
        runtime = (result.metrics.get("train_runtime") if result else None) or (time.time() - self.started)
        rows = metrics_rows(self.run.metrics.read_text()) if self.run.metrics.is_file() else history
        run = whole_run(read_events(self.run), rows, state.num_input_tokens_seen)
        summary = {
            "stage": self.cfg.stage.name.value, "adapter": self.cfg.adapter.name.value, "precision": self.precision,
            "world_size": self.world_size, "global_batch_size": trainer.args.per_device_train_batch_size
            * trainer.args.gradient_accumulation_steps * self.world_size,
            "steps": state.global_step, "epochs": state.epoch,
            # the first attempt's first loss, the last attempt's last
            "first_loss": run["first_loss"], "final_loss": run["final_loss"],
            "train_loss": result.training_loss if result else None,
            "eval_loss": evaluation.get("eval_loss"),
            **{k: evaluation[k] for k in ("eval_perplexity", "eval_accuracy") if k in evaluation},
            # the stage's own metrics as its trainer logged them: first and last logged value
            "metrics": {m: {"first": values[0], "last": values[-1]}
                        for m in stage_metrics if (values := [h[m] for h in rows if m in h])},
            "eval_metrics": {m: evaluation[f"eval_{m}"] for m in stage_metrics if f"eval_{m}" in evaluation},
            **extra,
            "trained_tokens": state.num_input_tokens_seen,
            # this attempt's training time; train_time_s: every attempt's (tokens_per_s divides by it)
            "train_runtime_s": round(runtime, 3),
            "train_time_s": run["train_time_s"],
            "tokens_per_s": run["tokens_per_s"],
            "wall_time_s": round(time.time() - self.started, 3),
            "trainable_params": self.trainable, "total_params": self.total,
            "zero_stage": trainer.deepspeed.zero_optimization_stage() if trainer.is_deepspeed_enabled else None,
            **memory,
            "resumed_from": str(resumed_from) if resumed_from else None, "final_dir": str(self.run.final),
            "restart_count": int(os.environ.get("LAUNCHER_RESTART_COUNT", 0)),
            "data_cache": self.data.record.get("cache_path"), "non_pad_share": self.data.record.get("non_pad_share"),
            "attempts": run["attempts"],
        }
        self.run.summary.write_text(json.dumps(summary, indent=2) + "\n")
        log.info("summary: %s", json.dumps(summary))

    def plot(self, stage_metrics: tuple[str, ...]) -> None:
        """training_loss.png, eval_loss.png and the stage's metrics in the run dir; a plot that fails is a warning:
        the run itself finished."""
        from launcher.plot import plot_run

        try:
            written = plot_run(self.run.root, stage_metrics)
        except Exception as e:  # noqa: BLE001
            log.warning("plots not written (%s: %s); `launch-plot %s` tries again", type(e).__name__, e, self.run.root)
            return
        log.info("plots: %s", ", ".join(p.name for p in written))

    def cleanup(self) -> None:
        import torch.distributed as dist

        if self.background is not None:
            self.background.cancel()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
