#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, on loopback, for bob's SLURM tests
# (tests/test_slurm_cluster.py) and for trying `bob sweep -x slurm` without a real cluster.
#
#   sudo bash scripts/slurm_local.sh          # install (apt), configure, start, wait until idle
#   sudo bash scripts/slurm_local.sh stop     # stop the daemons this script started
#
# It installs Debian's slurmctld, slurmd, munge and slurm-client, writes a minimal slurm.conf
# (one node named localhost with SLURM_LOCAL_CPUS CPUs, default 2; partition `debug`; no cgroups:
# proctrack/linuxproc and task/none, so it runs inside containers), creates a munge key when none
# exists, starts munged, slurmctld and slurmd, and waits until `sinfo` shows the node idle.
# Daemon logs go to /var/log/slurm/. Set SLURM_LOCAL_NO_INSTALL=1 to skip apt.
set -euo pipefail

CPUS="${SLURM_LOCAL_CPUS:-2}"
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
WAIT_S="${SLURM_LOCAL_WAIT_S:-60}"

stop() {
    for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
        if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            kill "$(cat "$pidfile")"
        fi
    done
}

if [[ "${1:-}" == "stop" ]]; then
    stop
    exit 0
fi

if [[ $EUID -ne 0 ]]; then
    echo "scripts/slurm_local.sh: run it as root (it installs packages and starts daemons)." >&2
    exit 2
fi

if [[ "${SLURM_LOCAL_NO_INSTALL:-0}" != 1 ]] && ! command -v slurmd >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# munge: one key shared by the controller and the node (they are the same machine here).
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null

install -d -m 0755 "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster on loopback, no cgroups.
ClusterName=bob-local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MaxArraySize=10001
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

stop_slurm_only() {
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            kill "$(cat "$pidfile")"
            sleep 1
        fi
    done
}
stop_slurm_only
/usr/sbin/slurmctld -c -i
/usr/sbin/slurmd -N localhost

for _ in $(seq "$WAIT_S"); do
    state="$(sinfo -h -n localhost -o %T 2>/dev/null || true)"
    if [[ "$state" == "idle" ]]; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "scripts/slurm_local.sh: the node did not become idle in ${WAIT_S}s (state: ${state:-none})." >&2
echo "--- $LOG_DIR/slurmctld.log" >&2
tail -n 20 "$LOG_DIR/slurmctld.log" >&2 || true
echo "--- $LOG_DIR/slurmd.log" >&2
tail -n 20 "$LOG_DIR/slurmd.log" >&2 || true
exit 1
