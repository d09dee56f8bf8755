# shellcheck shell=bash
# Helpers shared by up.sh / down.sh / smoke.sh. Not meant to be used directly.

SLURM_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$SLURM_SCRIPTS_DIR/env.sh"

D="$LAUNCHER_SLURM_DIR"
NODES=(node1 node2)
MUNGE_MARK="$D/run/munged.started-by-up"

log() { printf '[slurm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# proc_alive PID -> 0 if PID exists and is not a zombie. (PID 1 on these
# machines is not a real init and may reap orphans late, so a killed daemon
# can linger as a zombie that still has /proc/PID and its old comm.)
proc_alive() {
    local st
    st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    st="${st##*) }"
    [[ -n "$st" && "${st%% *}" != Z && "${st%% *}" != X ]]
}

# pid_alive PIDFILE COMM -> 0 if the pid in PIDFILE is a live process named COMM
pid_alive() {
    local pf="$1" comm="$2" pid
    [[ -s "$pf" ]] || return 1
    pid="$(tr -dc '0-9' <"$pf")"
    [[ -n "$pid" ]] && proc_alive "$pid" || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]]
}

pid_of() { tr -dc '0-9' <"$1"; }

ctld_pidfile() { echo "$D/run/slurmctld.pid"; }
slurmd_pidfile() { echo "$D/run/slurmd.$1.pid"; }

munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

ctld_responding() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

# Print tails of all logs (used on failures).
dump_logs() {
    local f
    for f in "$D"/log/*.log; do
        [[ -f "$f" ]] || continue
        echo "----- last lines of $f (harmless PMIx/MPI plugin errors filtered) -----" >&2
        grep -vE 'pmix|MPI: Cannot create context' "$f" | tail -n 15 >&2
    done
    echo "Logs: $D/log/  (slurmctld.log, slurmd.node1.log, slurmd.node2.log); munge: /var/log/munge/munged.log" >&2
}
