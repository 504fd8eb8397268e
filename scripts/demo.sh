#!/usr/bin/env bash
# Sets everything up and runs the demo: model server, sidecar and service on this machine, faults injected
# one at a time, in fast mode (under 5 minutes). More arguments go to `incidentd demo`; run
# `incidentd demo` without --fast for production-like intervals.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash scripts/bootstrap.sh)
# `--server mlserver` runs the faults against a real MLServer, in a venv of its own (its pins clash with ours).
prev=""
for arg in "$@"; do
  if [[ "$prev $arg" == "--server mlserver" || "$arg" == "--server=mlserver" ]]; then
    INCIDENTD_VENV="$VENV" INCIDENTD_MODEL_SERVERS_STRICT=1 bash scripts/servers/install_model_servers.sh mlserver >&2
  fi
  prev=$arg
done
exec "$VENV/bin/incidentd" demo --fast "$@"
