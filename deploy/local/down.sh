#!/usr/bin/env bash
# Stop the processes `make up` started: SIGTERM lets consumers finish the batch in flight.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
shopt -s nullglob
pids=()
for pidfile in var/run/*.pid; do
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" && pids+=("$pid") && echo "stopping $(basename "$pidfile" .pid) ($pid)"
  fi
  rm -f "$pidfile"
done
for pid in "${pids[@]}"; do
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
done
exit 0
