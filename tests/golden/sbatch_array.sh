#!/usr/bin/env bash
#SBATCH --array=0-2%2
#SBATCH --cpus-per-task=1
#SBATCH --job-name=tiny_sft_lora
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/runs/sweep/slurm-%A_%a.out
#SBATCH --requeue
#SBATCH --signal=B:USR2@120
# Written by `launch`; re-submit with: sbatch THIS_FILE
set -uo pipefail
cd /work
RUN_DIRS=(
  /runs/a0
  /runs/a1
  /runs/a2
)
RUN_DIR="${RUN_DIRS[$SLURM_ARRAY_TASK_ID]}"
MAX_REQUEUES=3
RESTART="${SLURM_RESTART_COUNT:-0}"
mkdir -p "$RUN_DIR/slurm"
echo "$(date -Is) job=$SLURM_JOB_ID restart=$RESTART nodes=$SLURM_JOB_NODELIST" >> "$RUN_DIR/slurm/attempts.log"
# Rendezvous on the allocation's first host; the port is derived from the job id (stable on requeue).
export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export MASTER_PORT="$(( 10000 + SLURM_JOB_ID % 20000 ))"
export LAUNCHER_RESTART_COUNT="$RESTART"
# A requeued job (by us after a warning signal, or by an admin) resumes from its last checkpoint.
if [ "$RESTART" -gt 0 ]; then export LAUNCHER_RESUME=1; fi
export LAUNCHER_PREEMPT_FILE="$RUN_DIR/slurm/preempt.request"
rm -f "$LAUNCHER_PREEMPT_FILE"
# The warning signal, and SIGTERM (the time limit, a preemption with a grace time, scancel --signal=TERM):
# the ranks checkpoint, then the job is requeued.
trap 'echo "launch: SIGUSR2 at $(date -Is): asking the ranks to checkpoint"; touch "$LAUNCHER_PREEMPT_FILE"' USR2
trap 'echo "launch: SIGTERM at $(date -Is): asking the ranks to checkpoint"; touch "$LAUNCHER_PREEMPT_FILE"' TERM
# srun in a session of its own: a SIGTERM to the batch shell's process group would make srun kill the
# step at once (Slurm signals the step's processes itself, which checkpoint and stop).
setsid srun --nodes=1 --ntasks-per-node=1 --kill-on-bad-exit=1 bash "$RUN_DIR/launch.sh" &
SRUN_PID=$!
while :; do
  wait "$SRUN_PID"; rc=$?
  # a trap interrupted `wait` while srun still runs: keep waiting
  if [ "$rc" -gt 128 ] && kill -0 "$SRUN_PID" 2>/dev/null; then continue; fi
  break
done
echo "$rc" > "$RUN_DIR/slurm/exit_code"
if [ -f "$LAUNCHER_PREEMPT_FILE" ] && [ ! -f "$RUN_DIR/summary.json" ]; then
  # scancel sends the same SIGTERM as a preemption: a cancelled (no longer running) job stays so
  if ! scontrol show job -o "$SLURM_JOB_ID" | grep -q "JobState=RUNNING"; then
    echo "launch: job $SLURM_JOB_ID is no longer running (cancelled?); not requeueing" >&2
    exit "$rc"
  fi
  if [ "$RESTART" -lt "$MAX_REQUEUES" ]; then
    echo "launch: checkpoint saved; requeueing job $SLURM_JOB_ID (restart $((RESTART + 1)) of at most $MAX_REQUEUES)"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  echo "launch: stopped by a signal after $RESTART requeue(s) = max_requeues; not requeueing" >&2
  exit 1
fi
exit "$rc"
