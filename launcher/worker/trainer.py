"""transformers' Trainer with what the launcher adds to saving and to evaluation (pt, sft)."""
from __future__ import annotations

from transformers import Trainer

from launcher.metrics.training import perplexity
from launcher.worker.adapters.prefix import prefix_saveable


class LauncherTrainer(Trainer):
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # Called on every rank (checkpoints and final/), so collective gathers inside are safe.
        with prefix_saveable(self):
            super().save_model(output_dir, _internal_call)

    #: load_best_model_at_end on a prompt-learning adapter (prefix): the checkpoint whose adapter files final/ gets
    best_prefix_checkpoint: str | None = None

    def _load_best_model(self) -> None:
        # A prefix checkpoint holds the computed prefix, not the prefix encoder (prefix_projection's MLP) being
        # trained, so peft cannot load it back into this model (transformers raises). The checkpoint's adapter
        # files are what save_model would write for those weights: the worker copies them into final/.
        model = self.accelerator.unwrap_model(self.model)
        config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", "default"))
        if config is not None and config.is_prompt_learning:
            self.best_prefix_checkpoint = self.state.best_model_checkpoint
            return
        super()._load_best_model()

    def evaluation_loop(self, dataloader, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"):
        # eval_perplexity beside eval_loss in the loop's own metrics: logged with them (metrics.jsonl,
        # TensorBoard, wandb) and seen by metric_for_best_model and early stopping
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        loss = output.metrics.get(f"{metric_key_prefix}_loss")
        if loss is not None:
            output.metrics[f"{metric_key_prefix}_perplexity"] = perplexity(loss)
        return output
