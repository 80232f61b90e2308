#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (for CI and for trying the SLURM profile).
#
#   bash .ci/slurm/setup.sh        # install (once), configure and start; idempotent
#   bash .ci/slurm/stop.sh         # stop exactly what this script started
#
# What it does, as root on Debian 12 (bookworm, SLURM 22.05 from Debian):
#   1. apt-get installs slurm-wlm and munge if slurmctld/slurmd/munged are missing, and pip
#      installs snakemake-executor-plugin-slurm (the `cluster` extra) if it does not import.
#   2. Writes everything it needs under one state folder, $CRYOSNAKE_SLURM_DIR
#      (default /tmp/cryosnake-slurm): its own munge key and socket, slurm.conf, spool and
#      state folders, logs and the daemons' PID files. No system service is touched: munged
#      listens on its own socket (slurm.conf points SLURM there with AuthInfo=socket=...).
#   3. Links /etc/slurm/slurm.conf to that slurm.conf so that sinfo/sbatch/squeue find it
#      without SLURM_CONF, but only if /etc/slurm/slurm.conf does not exist yet (or already is
#      our link). If another slurm.conf is there it is left alone: export
#      SLURM_CONF=$CRYOSNAKE_SLURM_DIR/slurm.conf before using the cluster (.ci/slurm/run_tests.sh
#      always does).
#      stop.sh removes the link again (a link to a stopped controller makes every SLURM client,
#      and so every `snakemake` start, wait 9-10 s for it).
#   4. Starts munged, slurmctld and slurmd as background daemons (no systemd in the sandbox;
#      the Debian packages' postinst cannot start them either), records their PIDs in
#      $CRYOSNAKE_SLURM_DIR/pids/, waits until `sinfo` shows the node idle and prints the time.
#
# Sandbox notes (a small VM without systemd: PID 1 is the sandbox's own init):
#   - ProctrackType=proctrack/linuxproc and TaskPlugin=task/none: no cgroup plugins. The
#     machine shows a cgroup v1 tree, but SLURM's cgroup plugins want it set up the systemd
#     way; linuxproc follows a job's processes through /proc, which is all a one-node test
#     cluster needs. Consequence: mem_mb and cpus are scheduled but NOT enforced here (a job
#     over its memory request is not killed, as it would be on most real clusters).
#   - No accounting (no slurmdbd): the executor plugin must query job status with `squeue`
#     (profiles/slurm sets slurm-status-command: squeue); MinJobAge=86400 keeps finished jobs
#     visible to squeue --states=all for a day.
#   - Everything runs as root (SlurmUser=root); fine for a throw-away CI cluster only.
#
# Environment: CRYOSNAKE_SLURM_DIR (state folder), CRYOSNAKE_SLURM_PARTITION (default `debug`,
# the partition name the profile uses by default too).
set -euo pipefail

t0=$(date +%s)
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
STATE="${CRYOSNAKE_SLURM_DIR:-/tmp/cryosnake-slurm}"
PARTITION="${CRYOSNAKE_SLURM_PARTITION:-debug}"
PIDS="$STATE/pids"
CONF="$STATE/slurm.conf"
SOCKET="$STATE/munge/munge.socket"
NODE="$(hostname -s)"
export SLURM_CONF="$CONF"

say() { echo "[slurm-setup] $*"; }
die() { echo "[slurm-setup] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (installs packages and starts the SLURM daemons)"

alive() { # alive NAME: the daemon recorded under NAME is running
    local f="$PIDS/$1.pid"
    [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

node_state() { sinfo -h -n "$NODE" -o %t 2>/dev/null | head -1 || true; }

# --- already up? -------------------------------------------------------------------------
if alive munged && alive slurmctld && alive slurmd && [ "$(node_state)" = idle ]; then
    say "already running (state in $STATE); nothing to do"
    exit 0
fi

# --- 1. packages ---------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    say "installing slurm-wlm and munge from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
fi
if ! python -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
    say "installing snakemake-executor-plugin-slurm (pip install -e .[cluster])"
    python -m pip install -q -e "$REPO[cluster]"
fi

# --- 2. leftovers of an earlier run ----------------------------------------------------------
# A daemon that died (or a machine that was handed back with stale PID files) is restarted
# from scratch: stop whatever of ours is still alive first.
if [ -d "$PIDS" ]; then
    bash "$REPO/.ci/slurm/stop.sh" >/dev/null 2>&1 || true
fi
mkdir -p "$STATE"/{munge,ctld,spool,log,pids}
chmod 755 "$STATE" "$STATE/munge"

# --- 3. munge ----------------------------------------------------------------------------------
KEY="$STATE/munge/munge.key"
if [ ! -s "$KEY" ]; then
    dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
fi
chmod 400 "$KEY"
# --force: munged refuses to run as root otherwise (it would also refuse a missing
# /run/munge, which we avoid by using our own socket folder).
munged --force \
    --socket="$SOCKET" --key-file="$KEY" --pid-file="$PIDS/munged.pid" \
    --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed"
for _ in $(seq 50); do
    alive munged && [ -S "$SOCKET" ] && break
    sleep 0.1
done
munge -n -S "$SOCKET" | unmunge -S "$SOCKET" >/dev/null || die "munge does not work; see $STATE/log/munged.log"

# --- 4. slurm.conf -----------------------------------------------------------------------------
# The node's real topology from `slurmd -C`, with RealMemory 10 % below the real one (the OS
# and the Snakemake main process need some too; a node that reports less memory than
# configured would be drained).
HW="$(slurmd -C | head -1)"
REALMEM="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")"
MEM=$(( REALMEM * 9 / 10 ))
TOPO="$(sed -e 's/^NodeName=[^ ]* //' -e 's/ RealMemory=[0-9]*//' <<<"$HW")"

cat >"$CONF" <<EOF
# Written by cryosnake .ci/slurm/setup.sh: a one-node test cluster. Do not edit; rerun setup.sh.
ClusterName=cryosnake
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# no cgroup plugins (see setup.sh): requests are scheduled, not enforced
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
# no accounting database: job status comes from slurmctld (squeue); keep finished jobs a day
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=86400
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdTimeout=300
SlurmctldTimeout=120
InactiveLimit=0
KillWait=30
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 $TOPO RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    mkdir -p /etc/slurm
    ln -sfn "$CONF" /etc/slurm/slurm.conf
else
    say "/etc/slurm/slurm.conf belongs to someone else: export SLURM_CONF=$CONF to use this cluster"
fi

# --- 5. daemons ------------------------------------------------------------------------------
# Both fork into the background and write the PID files named in slurm.conf.
# slurmctld -c: start with a clean job state (a throw-away cluster).
slurmctld -c -f "$CONF"
for _ in $(seq 100); do
    scontrol ping 2>/dev/null | grep -q UP && break
    sleep 0.2
done
scontrol ping | grep -q UP || die "slurmctld did not come up; see $STATE/log/slurmctld.log"
slurmd -f "$CONF"

for _ in $(seq 150); do
    state="$(node_state)"
    case "$state" in
        idle) break ;;
        down*|drain*|drng*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
done
alive munged || die "munged is not running"
alive slurmctld || die "slurmctld is not running; see $STATE/log/slurmctld.log"
alive slurmd || die "slurmd is not running; see $STATE/log/slurmd.log"
[ "$(node_state)" = idle ] || {
    sinfo -N -l || true
    tail -20 "$STATE/log/slurmd.log" "$STATE/log/slurmctld.log" >&2 || true
    die "node $NODE is not idle"
}

sinfo
say "SLURM up: node $NODE ($TOPO, RealMemory=$MEM MB), partition $PARTITION, state in $STATE"
say "setup took $(( $(date +%s) - t0 )) s"
