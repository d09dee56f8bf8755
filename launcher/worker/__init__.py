"""The worker: `python -m launcher.worker RUN_DIR` on every rank. Its only input is the run dir."""
