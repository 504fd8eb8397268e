#!/usr/bin/env bash
# Install the real servers (idempotent, cached) and run the integration tests against them.
#   scripts/servers/integration-tests.sh [pytest args...]
# Uses $PYTHON (default: python3 on PATH). Set CI=true to turn "server unavailable" skips into failures.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ENV_FILE=$("$HERE/install.sh")
export INCIDENTD_SERVERS_ENV="$ENV_FILE"
cd "$REPO"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m pytest tests/integration -q "$@"
