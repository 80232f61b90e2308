#!/usr/bin/env bash
# Stop the one-node SLURM cluster that .ci/slurm/setup.sh started: only the daemons whose PIDs
# it recorded in $CRYOSNAKE_SLURM_DIR/pids (default /tmp/cryosnake-slurm/pids), nothing else.
# Safe to run twice, or when nothing was started.
set -uo pipefail

STATE="${CRYOSNAKE_SLURM_DIR:-/tmp/cryosnake-slurm}"
PIDS="$STATE/pids"

stop_one() { # stop_one NAME PROCESS-NAME
    local f="$PIDS/$1.pid" pid
    [ -s "$f" ] || return 0
    pid="$(cat "$f")"
    # only signal the PID if it still is the daemon we started (PIDs get reused)
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "[slurm-stop] stopped $1 (pid $pid)"
    fi
    rm -f "$f"
}

# jobs still on our cluster first (their slurmstepd processes belong to our slurmd)
if [ -s "$PIDS/slurmctld.pid" ] && kill -0 "$(cat "$PIDS/slurmctld.pid")" 2>/dev/null \
        && [ -f "$STATE/slurm.conf" ]; then
    jobs="$(SLURM_CONF="$STATE/slurm.conf" timeout 10 squeue -h -t PD,R,CG -o %i 2>/dev/null)"
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        SLURM_CONF="$STATE/slurm.conf" timeout 10 scancel $jobs 2>/dev/null || true
        sleep 1
    fi
fi

# node daemon first, then the controller, then munge (the others authenticate through it)
stop_one slurmd slurmd
stop_one slurmctld slurmctld
stop_one munged munged

# the /etc/slurm/slurm.conf link that setup.sh made, if it is still ours: left behind, it points
# every SLURM client at a controller that is gone, and `scontrol show config` then waits 9-10 s
# for it; snakemake-executor-plugin-slurm runs that command on import, so every `snakemake`
# on this machine would start 9-10 s late (issue 16)
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$STATE/slurm.conf" ]; then
    rm -f /etc/slurm/slurm.conf && echo "[slurm-stop] removed the /etc/slurm/slurm.conf link"
fi
exit 0
