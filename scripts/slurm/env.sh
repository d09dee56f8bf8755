# shellcheck shell=bash
# Source this file to talk to the local test Slurm cluster started by up.sh:
#     source scripts/slurm/env.sh && sinfo
# Only exports variables; safe under `set -euo pipefail`, safe to source twice.

export LAUNCHER_SLURM_DIR="${LAUNCHER_SLURM_DIR:-/tmp/launcher-slurm}"
# Every Slurm command (sbatch, srun, squeue, scontrol, sinfo, scancel) and the
# daemons honour SLURM_CONF; up.sh also symlinks /etc/slurm/slurm.conf to it
# when that path is free, so commands run without this file still work.
export SLURM_CONF="$LAUNCHER_SLURM_DIR/etc/slurm.conf"
# Name of the (default) partition; any other -p value is rejected by sbatch.
export LAUNCHER_SLURM_PARTITION="${LAUNCHER_SLURM_PARTITION:-debug}"
