#!/usr/bin/env bash
# smoke.sh - end-to-end check of the local cluster (runs up.sh first; leaves
# the cluster running). Checks: 2-node jobs with srun (1 and 2 tasks per
# node), requeue on a signal with SLURM_RESTART_COUNT=1 in the second run,
# rejection of an unknown partition. Prints one PASS/FAIL line per check and
# a final "N passed, N failed" line; exits non-zero if any check failed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
"$HERE/up.sh"

W="$(mktemp -d "$D/smoke.XXXXXX")"
cd "$W"
PASS=0
FAIL=0
ok() { echo "PASS: $*"; PASS=$((PASS + 1)); }
bad() { echo "FAIL: $*"; FAIL=$((FAIL + 1)); }

# job_state ID -> e.g. COMPLETED (finished jobs stay visible for MinJobAge=300 s)
job_state() { scontrol -o show job "$1" 2>/dev/null | grep -oE 'JobState=[A-Z_]+' | cut -d= -f2; }

# wait_done ID TIMEOUT -> 0 when the job reached a final state
wait_done() {
    local i st
    for ((i = 0; i < $2 * 5; i++)); do
        st="$(job_state "$1")"
        case "$st" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) return 0 ;; esac
        sleep 0.2
    done
    return 1
}

# ---------------------------------------------------------------- multi-node
cat >multi.sh <<'EOF'
#!/bin/bash
echo "batch $SLURMD_NODENAME nodes=$SLURM_JOB_NODELIST ntasks=$SLURM_NTASKS"
srun hostname
srun bash -c 'echo "task $SLURM_NODEID $SLURM_PROCID $SLURMD_NODENAME"'
EOF
for tpn in 1 2; do
    j="$(sbatch --parsable -N 2 --ntasks-per-node="$tpn" -o "multi.$tpn.out" multi.sh)"
    if ! wait_done "$j" 60; then
        bad "2 nodes x $tpn tasks: job $j not finished after 60 s (state $(job_state "$j"))"
        continue
    fi
    out="$(cat "multi.$tpn.out")"
    ntasks=$((2 * tpn))
    want="$(for ((r = 0; r < ntasks; r++)); do n=$((r / tpn)); echo "task $n $r node$((n + 1))"; done)"
    got="$(grep '^task ' <<<"$out" | sort -k3n)"
    nhost="$(grep -vcE '^(task|batch) ' <<<"$out" || true)"
    if [[ "$(job_state "$j")" == COMPLETED && "$got" == "$want" && "$nhost" == "$ntasks" ]]; then
        ok "2 nodes x $tpn tasks (job $j): $(grep '^task ' <<<"$out" | awk '{print $4"/"$3}' | sort | tr '\n' ' ')"
    else
        bad "2 nodes x $tpn tasks (job $j, state $(job_state "$j")); output:"
        sed 's/^/    /' "multi.$tpn.out"
    fi
done

# ------------------------------------------------------------------- requeue
cat >requeue.sh <<'EOF'
#!/bin/bash
echo "run restart=${SLURM_RESTART_COUNT:-unset} start=$(date +%s.%N)"
if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then echo "second run done"; exit 0; fi
trap 'echo "got USR2 at $(date +%s.%N)"; scontrol requeue "$SLURM_JOB_ID"' USR2
# Work in the background + wait: bash runs a trap only between commands, and
# 'wait' is interrupted by a trapped signal, a foreground 'sleep' is not.
sleep 300 &
wait
EOF
j="$(sbatch --parsable --requeue --signal=B:USR2@60 --open-mode=append -o requeue.out requeue.sh)"
for ((i = 0; i < 150; i++)); do grep -q 'start=' requeue.out 2>/dev/null && break; sleep 0.2; done
sleep 0.5 # let the trap be installed
t_sig="$(date +%s.%N)"
scancel --signal=USR2 --batch "$j"
for ((i = 0; i < 600; i++)); do grep -q 'second run done' requeue.out 2>/dev/null && break; sleep 0.2; done
if grep -q 'run restart=1 ' requeue.out && grep -q 'second run done' requeue.out && wait_done "$j" 30 &&
    [[ "$(job_state "$j")" == COMPLETED ]]; then
    t_run2="$(grep 'run restart=1 ' requeue.out | sed 's/.*start=//')"
    ok "requeue on USR2 (job $j): second run (SLURM_RESTART_COUNT=1) started $(awk -v a="$t_sig" -v b="$t_run2" 'BEGIN{printf "%.1f", b-a}') s after the signal"
else
    bad "requeue (job $j, state $(job_state "$j")); output:"
    sed 's/^/    /' requeue.out 2>/dev/null || true
fi

# --------------------------------------------------------- unknown partition
set +e
msg="$(sbatch --parsable -p nosuchpartition --wrap true 2>&1)"
rc=$?
set -e
if ((rc != 0)) && grep -q 'Invalid partition name specified' <<<"$msg"; then
    ok "unknown partition rejected (rc=$rc): $(tail -n 1 <<<"$msg")"
else
    bad "unknown partition: rc=$rc, output: $msg"
fi

echo "work dir: $W"
echo "$PASS passed, $FAIL failed"
((FAIL == 0))
