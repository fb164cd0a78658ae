#!/usr/bin/env bash
# Distributed mode on this machine: each service's API and consumer as separate processes,
# against the local PostgreSQL and Kafka (started by `make infra`). Logs go to var/log.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source deploy/local/env.sh
BIN="$ROOT/.venv/bin"
mkdir -p var/log var/run

"$BIN/retention" migrate all
"$BIN/retention" topics ensure

start() {  # name, command...
  local name=$1; shift
  local pidfile="var/run/$name.pid"
  if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$pidfile"))"
    return
  fi
  nohup "$@" >>"var/log/$name.log" 2>&1 &
  echo $! >"$pidfile"
  echo "started $name (pid $!), log: var/log/$name.log"
}

for entry in "${RETENTION_LOCAL_SERVICES[@]}"; do
  read -r service api_port consumer_port <<<"$entry"
  start "$service-api" "$BIN/retention" run api "$service" --port "$api_port"
  start "$service-consumer" "$BIN/retention" run consumer "$service" --port "$consumer_port"
done

for entry in "${RETENTION_LOCAL_SERVICES[@]}"; do
  read -r service api_port consumer_port <<<"$entry"
  for port in "$api_port" "$consumer_port"; do
    for _ in $(seq 1 100); do
      curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
      sleep 0.2
    done
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { echo "$service on :$port did not come up; see var/log" >&2; exit 1; }
  done
  echo "$service: API http://127.0.0.1:$api_port/docs  consumer http://127.0.0.1:$consumer_port/metrics"
done
