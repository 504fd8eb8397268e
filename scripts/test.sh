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
export PATH="$VENV/bin:$PATH"
exec "$VENV/bin/python" -m pytest "$@"
