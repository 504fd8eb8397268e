#!/usr/bin/env bash
# Sets everything up and runs the demo: model server, sidecar and service on this machine, faults injected
# one at a time, in fast mode (under 5 minutes). More arguments go to `incidentd demo`; run
# `incidentd demo` without --fast for production-like intervals.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash scripts/bootstrap.sh)
exec "$VENV/bin/incidentd" demo --fast "$@"
