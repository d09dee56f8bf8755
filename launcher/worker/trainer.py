"""transformers' Trainer with what the launcher adds to saving."""
from __future__ import annotations

from transformers import Trainer

from launcher.worker.adapters.prefix import prefix_saveable


class LauncherTrainer(Trainer):
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # Called on every rank (checkpoints and final/), so collective gathers inside are safe.
        with prefix_saveable(self):
            super().save_model(output_dir, _internal_call)
