#!/usr/bin/env bash
# Stop the servers scripts/servers/start.sh started (by the pids it recorded), keeping their data.
set -uo pipefail
STATE=${1:-/tmp/incidentd-servers}
for name in es prometheus alertmanager; do
  pidfile="$STATE/$name.pid"; [[ $name == es ]] && pidfile="$STATE/es/es.pid"
  [[ -s $pidfile ]] || continue
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done
