#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: unit tests, the real-server integration tests
# (Prometheus, Alertmanager, Elasticsearch installed and started on loopback) and the end-to-end demo.
# Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash scripts/bootstrap.sh)
if [ -x scripts/servers/install.sh ] || [ -f scripts/servers/install.sh ]; then
  bash scripts/servers/install.sh
fi
# Third-party model servers (MLServer, KServe, TorchServe, Triton via PyTriton), one cached venv each;
# under CI a server that cannot be installed fails here, elsewhere its tests skip with the reason.
if [ -f scripts/servers/install_model_servers.sh ]; then
  if [ "${CI:-}" = "true" ]; then export INCIDENTD_MODEL_SERVERS_STRICT=1; fi
  INCIDENTD_VENV="$VENV" bash scripts/servers/install_model_servers.sh
fi
export PATH="$VENV/bin:$PATH"
exec "$VENV/bin/python" -m pytest "$@"
