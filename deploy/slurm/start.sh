#!/bin/bash
# Start a single-host Slurm: munged + slurmctld + slurmd n1..n3 on 127.0.0.1, no systemd.
# Usage: deploy/slurm/start.sh SLURM_DIR   (an empty folder the munge user can reach; as root)
# Prints the SLURM_CONF path last. Stop with deploy/slurm/stop.sh SLURM_DIR.
set -euo pipefail
D=$(realpath -m "${1:?usage: $0 SLURM_DIR}")
H=$(hostname -s)
for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
    echo "$0: $tool is not installed (apt-get install slurm-wlm munge)" >&2; exit 1; }
done
for port in 16817 17001 17002 17003; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "$0: 127.0.0.1:$port is in use (another Slurm? stop it with stop.sh)" >&2; exit 1
  fi
done
mkdir -p "$D"/{state,log,run,jobs} "$D"/spool/{n1,n2,n3} "$D/munge"
chown munge:munge "$D/munge"; chmod 755 "$D/munge"  # munged wants o+x on its socket folder
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024
  chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key
fi
runuser -u munge -- /usr/sbin/munged --socket="$D/munge/munge.socket" \
  --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" \
  --seed-file="$D/munge/munged.seed"
# cred_expire=10: otherwise a requeued job waits 120 s before it restarts.
cat > "$D/slurm.conf" <<CONF
ClusterName=vigil
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/munge.socket,cred_expire=10
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=16817
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=1
ReturnToService=2
KillWait=2
MinJobAge=300
NodeName=n1 NodeHostname=$H NodeAddr=127.0.0.1 Port=17001 CPUs=2 RealMemory=1000 State=UNKNOWN
NodeName=n2 NodeHostname=$H NodeAddr=127.0.0.1 Port=17002 CPUs=2 RealMemory=1000 State=UNKNOWN
NodeName=n3 NodeHostname=$H NodeAddr=127.0.0.1 Port=17003 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$D/slurm.conf"
slurmctld -f "$SLURM_CONF" -i
for n in n1 n2 n3; do slurmd -f "$SLURM_CONF" -N "$n"; done
for _ in $(seq 1 100); do
  [ "$(sinfo -h -t idle -o '%D' 2>/dev/null)" = 3 ] && break
  sleep 0.2
done
[ "$(sinfo -h -t idle -o '%D' 2>/dev/null)" = 3 ] || {
  echo "$0: the 3 nodes did not come up idle; see $D/log" >&2; sinfo -N >&2 || true; exit 1; }
echo "$SLURM_CONF"
