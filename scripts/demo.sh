#!/usr/bin/env bash
# Sets everything up and runs the demo: model server, sidecar and service on this machine, faults injected
# one at a time, in fast mode (under 5 minutes). More arguments go to `incidentd demo`; run
# `incidentd demo` without --fast for production-like intervals.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash scripts/bootstrap.sh)
# `--server mlserver|torchserve|triton` runs the faults against a real MLServer, TorchServe or Triton (the
# server PyTriton ships), in a venv of its own (their pins clash with ours).
prev=""
for arg in "$@"; do
  kind=""
  [[ "$prev" == "--server" ]] && kind=$arg
  [[ "$arg" == --server=* ]] && kind=${arg#--server=}
  [[ "$kind" == triton ]] && kind=pytriton
  if [[ "$kind" == mlserver || "$kind" == torchserve || "$kind" == pytriton ]]; then
    INCIDENTD_VENV="$VENV" INCIDENTD_MODEL_SERVERS_STRICT=1 bash scripts/servers/install_model_servers.sh "$kind" >&2
  fi
  prev=$arg
done
exec "$VENV/bin/incidentd" demo --fast "$@"
