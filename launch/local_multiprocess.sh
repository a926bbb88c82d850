#!/usr/bin/env bash
# Runs one multi-process JAX job as N processes on this machine (CPU collectives via gloo).
#
#   launch/local_multiprocess.sh N -- <command> [args...]
#   launch/local_multiprocess.sh 2 -- diff2lip-train --config=configs/diff2lip.py:tiny --workdir=runs/mp ...
#
# Every process gets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, which
# diff2lip_jax.parallel.initialize_distributed() reads. Output lines are prefixed with
# "[rank]". If one process fails, the others are stopped and its exit code is returned.
#
# Variables (all optional):
#   COORDINATOR_PORT      port of process 0's coordinator on 127.0.0.1 (default: a free port)
#   DEVICES_PER_PROCESS   fake CPU devices per process (default 1)
#   JAX_PLATFORMS         default cpu
set -euo pipefail

usage() { echo "usage: $0 N -- <command> [args...]" >&2; exit 2; }
[ $# -ge 3 ] || usage
NUM_PROCESSES=$1; shift
[[ "$NUM_PROCESSES" =~ ^[1-9][0-9]*$ ]] || { echo "$0: N must be a positive integer, got '$NUM_PROCESSES'" >&2; exit 2; }
[ "$1" = "--" ] || usage
shift

PORT=${COORDINATOR_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
DEVICES=${DEVICES_PER_PROCESS:-1}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
export JAX_COORDINATOR_ADDRESS="127.0.0.1:${PORT}"
export JAX_NUM_PROCESSES="$NUM_PROCESSES"
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES}"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup INT TERM

for ((rank = 0; rank < NUM_PROCESSES; rank++)); do
  JAX_PROCESS_ID=$rank "$@" > >(sed -u "s/^/[$rank] /") 2> >(sed -u "s/^/[$rank] /" >&2) &
  pids+=($!)
done

status=0
for pid in "${pids[@]}"; do
  if ! wait "$pid"; then
    code=$?
    if [ "$status" -eq 0 ]; then status=$code; cleanup; fi
  fi
done
exit "$status"
