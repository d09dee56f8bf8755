#!/usr/bin/env bash
# down.sh - stop the local Slurm cluster started by up.sh. Idempotent.
#
#   down.sh               cancel all jobs, stop slurmd x2 and slurmctld, stop
#                         leftover slurmstepd of this cluster, and stop munged
#                         if (and only if) up.sh started it.
#   down.sh --keep-munge  same, but leave munged running.
#   down.sh --purge       also delete the state dir (jobs, logs, config; the
#                         next up.sh starts with job ids from 1 again).
# Processes are found only through this cluster's pid files (and, for
# slurmstepd, its SLURM_CONF in the process environment) - never by name alone.
set -euo pipefail
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

KEEP_MUNGE=0
PURGE=0
for a in "$@"; do
    case "$a" in
    --keep-munge) KEEP_MUNGE=1 ;;
    --purge) PURGE=1 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument: $a" ;;
    esac
done

# stop_pids NAME GRACE PID...: SIGTERM all, wait up to GRACE s, SIGKILL the rest.
stop_pids() {
    local name="$1" grace="$2" p i left=()
    shift 2
    (($#)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i <= grace * 5; i++)); do
        left=()
        for p in "$@"; do proc_alive "$p" && left+=("$p"); done
        ((${#left[@]})) || return 0
        ((i < grace * 5)) && sleep 0.2
    done
    log "$name (pid ${left[*]}) still running after SIGTERM + ${grace} s, sending SIGKILL"
    kill -KILL "${left[@]}" 2>/dev/null || true
}

# stop_pidfiles COMM NAME PIDFILE...: stop the live COMM processes named in
# the pid files, then remove the pid files.
stop_pidfiles() {
    local comm="$1" name="$2" pf pids=()
    shift 2
    for pf in "$@"; do
        pid_alive "$pf" "$comm" && pids+=("$(pid_of "$pf")")
    done
    if ((${#pids[@]})); then
        log "stopping $name (pid ${pids[*]})"
        stop_pids "$name" 15 "${pids[@]}"
    fi
    rm -f "$@"
}

# slurmstepd processes forked by *our* slurmd (they inherit its SLURM_CONF).
our_stepds() {
    local p
    for p in /proc/[0-9]*; do
        [[ "$(cat "$p/comm" 2>/dev/null)" == slurmstepd ]] || continue
        proc_alive "${p#/proc/}" || continue
        grep -qzxF "SLURM_CONF=$SLURM_CONF" "$p/environ" 2>/dev/null || continue
        echo "${p#/proc/}"
    done
}

# Job processes of this cluster (batch scripts, srun, tasks): they carry
# SLURM_JOB_ID plus our SLURM_CONF or our SLURM_WORKING_CLUSTER. Skips this
# script and its ancestors.
our_job_procs() {
    local p pid port wc skip=" " a
    port="$(sed -n 's/^SlurmctldPort=//p' "$SLURM_CONF" 2>/dev/null)"
    wc="SLURM_WORKING_CLUSTER=launcher:127.0.0.1:${port:-6817}:"
    a=$$
    while [[ -n "$a" && "$a" != 0 ]]; do
        skip+="$a "
        a="$(awk '/^PPid:/ {print $2}' "/proc/$a/status" 2>/dev/null)"
    done
    for p in /proc/[0-9]*; do
        pid="${p#/proc/}"
        [[ "$skip" == *" $pid "* ]] && continue
        proc_alive "$pid" || continue
        grep -qz '^SLURM_JOB_ID=' "$p/environ" 2>/dev/null || continue
        grep -qzxF "SLURM_CONF=$SLURM_CONF" "$p/environ" 2>/dev/null ||
            grep -qzF "$wc" "$p/environ" 2>/dev/null || continue
        echo "$pid"
    done
}

# 1. Cancel jobs so their steps end cleanly (slurmstepd outlives slurmd).
if [[ -f "$SLURM_CONF" ]] && pid_alive "$(ctld_pidfile)" slurmctld && ctld_responding; then
    jobs_=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ') || jobs_=""
    if [[ -n "${jobs_// /}" ]]; then
        log "cancelling jobs: $jobs_"
        # shellcheck disable=SC2086
        scancel $jobs_ 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [[ -z "$(our_stepds)" ]] && break
            sleep 0.2
        done
    fi
fi

# 2. Daemons.
stop_pidfiles slurmd "slurmd node1+node2" "$(slurmd_pidfile node1)" "$(slurmd_pidfile node2)"
stop_pidfiles slurmctld slurmctld "$(ctld_pidfile)"

# 3. Leftovers when the daemons died without cleaning up (e.g. killed by
#    hand): job processes first (TERM, 5 s, KILL), then their slurmstepd,
#    which ignores SIGTERM.
mapfile -t jobps < <(our_job_procs)
if ((${#jobps[@]})); then
    log "stopping leftover job processes (pid ${jobps[*]})"
    stop_pids "job processes" 5 "${jobps[@]}"
fi
mapfile -t stepds < <(our_stepds)
if ((${#stepds[@]})); then
    log "stopping leftover slurmstepd (pid ${stepds[*]})"
    kill -KILL "${stepds[@]}" 2>/dev/null || true
fi

# 4. munged, only if up.sh started it.
if ((!KEEP_MUNGE)) && [[ -f "$MUNGE_MARK" ]]; then
    if pid_alive /run/munge/munged.pid munged &&
        [[ "$(pid_of /run/munge/munged.pid)" == "$(tr -dc '0-9' <"$MUNGE_MARK")" ]]; then
        log "stopping munged (pid $(pid_of /run/munge/munged.pid), started by up.sh)"
        stop_pids munged 15 "$(pid_of /run/munge/munged.pid)"
    fi
    rm -f "$MUNGE_MARK"
fi

# 5. Optional purge.
if ((PURGE)); then
    if [[ -L /etc/slurm/slurm.conf && "$(readlink /etc/slurm/slurm.conf)" == "$SLURM_CONF" ]]; then
        rm -f /etc/slurm/slurm.conf
    fi
    case "$D" in
    "" | / | /tmp | /root | /home | /etc | /var) die "refusing to purge '$D'" ;;
    esac
    rm -rf "$D"
    log "purged $D"
fi
log "cluster down"
