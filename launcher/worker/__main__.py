"""Entry point of every rank: `python -m launcher.worker RUN_DIR`."""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time

from launcher.pdeathsig import die_with_parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.worker")
    parser.add_argument("run_dir", help="a run dir written by `launch` (config.yaml is read from it)")
    args = parser.parse_args(argv)
    # No cyclic garbage collection while the rank imports and loads (torch, transformers, datasets, the model:
    # about a quarter of their import time goes to full collections over objects that all stay alive);
    # Worker.train() freezes what is alive then (gc.freeze) and turns it back on before training.
    gc.disable()
    # If torchrun is killed hard (SIGKILL), its ranks would live on as orphans; Linux SIGTERMs them instead.
    die_with_parent()
    # So does every process a rank forks (its data process, datasets' tokenizing pool, DataLoader workers): a
    # rank that ends at once would otherwise leave them behind, a pool's workers blocked forever.
    os.register_at_fork(after_in_child=die_with_parent)
    from launcher.visible_devices import restore

    restore(os.environ)  # before torch sees CUDA: the devices the deepspeed runner replaced by indices
    # First, before the slow imports: a signal while loading ends the rank at once (nothing to save yet).
    from launcher.worker.signals import StopSignals

    signals = StopSignals()
    signals.install()
    from launcher.data.registry import DataError
    from launcher.exitcodes import EXIT_USAGE
    from launcher.rundir import append_event
    from launcher.worker.preflight import fatal_event
    from launcher.worker.train import Worker

    worker = Worker(args.run_dir, signals)
    try:
        worker.setup()
        worker.train()
        if worker.rank == 0:  # every output is written: a rank that crashes from here on (at its exit) is no
            append_event(worker.run, {"event": "done", "time": time.time()})  # reason to train again
    except DataError as e:  # bad data found only now (past the first rows validate scans): no traceback
        logging.getLogger("launcher.worker").error("data: %s", e)
        print(f"error: {e}", file=sys.stderr)
        # a restart would meet the same rows: the restart loop reads this and stops
        append_event(worker.run, fatal_event(worker.rank, worker.host, "data", str(e), EXIT_USAGE))
        return EXIT_USAGE
    except RuntimeError as e:
        from launcher.worker.stuck import give_up, is_collective_timeout

        if is_collective_timeout(e):  # another rank hangs: name it, then end without a teardown that waits
            give_up(worker.run, worker.rank, worker.host, e, worker.cfg.train.ddp_timeout)
        raise
    finally:
        worker.cleanup()
    return 0


if __name__ == "__main__":
    rc = main()
    # Everything is written; the interpreter's final garbage collection over the model, optimizer and
    # DeepSpeed's object graph takes seconds (about 10 s under ZeRO on CPU) that a stopping job may not have.
    gc.freeze()
    sys.exit(rc)
