#!/bin/bash
# Stop what deploy/slurm/start.sh SLURM_DIR started: cancel jobs, then the daemons by pid file.
# Safe to run twice, or after a start that failed half-way.
set -uo pipefail
D=$(realpath -m "${1:?usage: $0 SLURM_DIR}")
export SLURM_CONF="$D/slurm.conf"
# Jobs first: a job whose slurmd is gone stays in slurmctld's saved state until it times out.
if [ -f "$D/run/slurmctld.pid" ] && kill -0 "$(cat "$D/run/slurmctld.pid")" 2>/dev/null; then
  jobs=$(squeue -h -o %i 2>/dev/null)
  [ -n "$jobs" ] && scancel --quiet $jobs 2>/dev/null  # word-split on purpose: one id a word
  for _ in $(seq 1 50); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
    sleep 0.2
  done
fi
# Each daemon takes about 2 s to exit, so TERM them all and wait together (KILL after 10 s).
pids=()
for f in "$D"/run/slurmd-n{1,2,3}.pid "$D/run/slurmctld.pid" "$D/munge/munged.pid"; do
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  case "$(cat "/proc/$pid/comm" 2>/dev/null)" in  # a stale pid file may name someone else now
    slurmd|slurmctld|munged) kill "$pid" 2>/dev/null && pids+=("$pid") ;;
  esac
done
for _ in $(seq 1 100); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && exit 0
  sleep 0.1
done
for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
exit 0
