#!/usr/bin/env bash
# Sets everything up and runs the demo: model server, sidecar and service on this machine, faults injected
# one at a time. Arguments go to `incidentd demo` (default: --fast).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash scripts/bootstrap.sh)
if [ $# -eq 0 ]; then set -- --fast; fi
exec "$VENV/bin/incidentd" demo "$@"
