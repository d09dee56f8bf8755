"""Exit codes every part of the launcher agrees on (launch, launch.sh, the sbatch script, the worker)."""

#: a user mistake (bad key, bad value, bad data): nothing was started, or the rank stopped before training
EXIT_USAGE = 2
#: stopped by a signal after saving a checkpoint: resumable with resume=true (sysexits' EX_TEMPFAIL)
EXIT_INTERRUPTED = 75
