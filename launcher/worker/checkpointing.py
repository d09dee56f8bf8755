"""Atomic checkpoints: a checkpoint counts once every rank has written its part (ZeRO shards included).

The Trainer's on_save comes on every rank after its _save_checkpoint; there all ranks meet (barrier), rank 0
writes the completion marker (launcher.checkpoints) and only then rotates: the Trainer gets
save_total_limit=None, because its own rotation runs before the marker and would delete the newest complete
checkpoint to make room for one that may never be finished.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import torch.distributed as dist
from transformers import TrainerCallback

from launcher.checkpoints import PREFIX, mark_complete, to_rotate

log = logging.getLogger(__name__)

#: test hook: seconds every save sleeps after its files are written and before the marker
SAVE_DELAY_ENV = "LAUNCHER_TEST_SAVE_DELAY_S"


class CompleteCheckpoints(TrainerCallback):
    def __init__(self, checkpoints_dir: Path, save_total_limit: int | None, world_size: int, zero_stage):
        self.dir = Path(checkpoints_dir)
        self.keep = save_total_limit
        self.world_size = world_size
        self.zero_stage = zero_stage
        self.delay = float(os.environ.get(SAVE_DELAY_ENV) or 0)
        #: the newest checkpoint this attempt marked complete
        self.last: Path | None = None

    def on_save(self, args, state, control, **kwargs):
        path = self.dir / f"{PREFIX}{state.global_step}"
        if self.delay:
            log.info("test hook %s: sleeping %.1f s before marking %s complete", SAVE_DELAY_ENV, self.delay, path)
            time.sleep(self.delay)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank's files are written
        if state.is_world_process_zero:
            mark_complete(path, {"step": state.global_step, "world_size": self.world_size,
                                 "zero_stage": self.zero_stage, "time": time.time()})
            log.info("checkpoint %s complete", path)
            # the best checkpoint stays while load_best_model_at_end may still load it
            best = state.best_model_checkpoint if args.load_best_model_at_end else None
            for old in to_rotate(self.dir, self.keep, best):
                log.info("rotating out %s", old)
                shutil.rmtree(old, ignore_errors=True)
        self.last = path
        return control
