#!/usr/bin/env bash
#SBATCH --cpus-per-task=64
#SBATCH --gpus-per-node=8
#SBATCH --job-name=llama2_sft_lora
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/runs/r0/slurm/%j.out
#SBATCH --partition=a100
#SBATCH --requeue
#SBATCH --signal=B:USR2@120
# Written by `launch`; re-submit with: sbatch THIS_FILE
set -uo pipefail
cd /work
RUN_DIR=/runs/r0
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
setsid srun --nodes=2 --ntasks-per-node=1 --kill-on-bad-exit=1 bash "$RUN_DIR/launch.sh" &
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
# ---- launch.sh
#!/usr/bin/env bash
# run dir: /runs/r0
# backend: torchrun, nodes 2 x 8 process(es) per node = world size 16
# batch: per_device_train_batch_size 4 x gradient_accumulation_steps 1 x world size 16 = global batch 64 (grad accum derived from global_batch_size)
# ranks (rank: node/local_rank device): 0: 0/0 cuda:0, 1: 0/1 cuda:1, 2: 0/2 cuda:2, 3: 0/3 cuda:3, 4: 0/4 cuda:4, 5: 0/5 cuda:5, 6: 0/6 cuda:6, 7: 0/7 cuda:7, 8: 1/0 cuda:0, 9: 1/1 cuda:1, 10: 1/2 cuda:2, 11: 1/3 cuda:3, 12: 1/4 cuda:4, 13: 1/5 cuda:5, 14: 1/6 cuda:6, 15: 1/7 cuda:7
# zero: stage 3 from $PROJECT_ROOT/ds_configs/ds_z3_config.json
# optimizer: train.optim=adamw_torch (transformers)
# memory (mirrors DeepSpeed's estimate_zero3_model_states_mem_needs: 6,738.4M params -> per GPU 7.55 GiB, per node CPU 5.86 GiB (model states when every parameter trains; LoRA needs less))
set -uo pipefail
cd /work
RUN_DIR=/runs/r0
NODE="${SLURM_NODEID:-0}"
MAX_RESTARTS=3
BASE_PORT="$MASTER_PORT"
LOG="$RUN_DIR/logs/launcher.node$NODE.log"  # this node's launcher output (which rank failed)

# One attempt: this node's command; its ranks resume when LAUNCHER_RESUME=1.
attempt() {
  export PYTHONUNBUFFERED=1
  export TOKENIZERS_PARALLELISM=false
  export OMP_NUM_THREADS="$(( SLURM_CPUS_ON_NODE / 8 > 1 ? SLURM_CPUS_ON_NODE / 8 : 1 ))"
  export PET_MASTER_ADDR="$MASTER_ADDR"
  export PET_NNODES="$SLURM_NNODES"
  export PET_NODE_RANK="$SLURM_NODEID"
  exec /opt/venv/bin/python -m launcher.pdeathsig /opt/venv/bin/python -m torch.distributed.run --nproc-per-node=8 "--master-port=$PORT" --max-restarts=0 --shutdown-timeout=120 -m launcher.worker /runs/r0
}

# A signal stops the loop and reaches every rank once; the ranks checkpoint and stop.
# On Slurm, Slurm signals the step's processes itself (torchrun forwards to its ranks); the
# request file makes the ranks checkpoint and the batch script requeue the job.
forward() { touch "${LAUNCHER_PREEMPT_FILE:-/dev/null}"; }
SIG=0; PID=""
trap 'SIG=15; forward TERM' TERM; trap 'SIG=2; forward INT' INT; trap 'SIG=1; forward TERM' HUP

# A rank that dies ends the attempt; the rank group restarts (at most MAX_RESTARTS times) with a
# fresh rendezvous and resumes from the newest complete checkpoint. launcher.restarts records each
# attempt's end in attempts.jsonl and prints `restart` or the status to exit with.
RESTART=0
while [ "$SIG" = 0 ]; do
  export LAUNCHER_RESTART="$RESTART"
  if [ "$RESTART" -gt 0 ]; then export LAUNCHER_RESUME=1; fi
  PORT=$(( BASE_PORT + RESTART ))
  STARTED="$(date +%s.%N)"; OFFSET="$(stat -c %s "$LOG" 2>/dev/null || echo 0)"
  attempt 2> >(tee -a "$LOG" >&2) &
  PID=$!
  while wait "$PID"; rc=$?; kill -0 "$PID" 2>/dev/null; do :; done  # a trap ends `wait` early
  NEXT="$(/opt/venv/bin/python -m launcher.restarts "$RUN_DIR" --node "$NODE" --restart "$RESTART" --max-restarts "$MAX_RESTARTS" \
         --exit-code "$rc" --signal "$SIG" --log "$LOG" --log-offset "$OFFSET" --started "$STARTED")" || NEXT="$rc"
  [ "$NEXT" = restart ] || exit "$NEXT"
  RESTART=$(( RESTART + 1 ))
done
exit $(( 128 + SIG ))
