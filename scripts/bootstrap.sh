#!/usr/bin/env bash
# Creates (once) the Python environment incidentd runs in and installs this checkout into it.
# The environment is cached per dependency set (hash of pyproject.toml), so a second clone or a CI run
# reuses it instead of unpacking PyTorch again. Prints the environment's path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "incidentd needs Python >= 3.11" >&2; exit 1; }
# Keyed on the dependency lists only, so editing other parts of pyproject.toml reuses the environment.
hash=$("$PY" - <<'PYEOF'
import hashlib, json, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = {"deps": p.get("dependencies", []), "extras": p.get("optional-dependencies", {})}
print(hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest()[:12])
PYEOF
)
VENV=${INCIDENTD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/incidentd/venv-$hash}
if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.complete" ]; then
  echo "setting up $VENV (first time: PyTorch is a large download)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --upgrade --quiet pip >&2
  # Dependencies first (cached), then this checkout without deps so the link always points here.
  "$VENV/bin/python" -m pip install --quiet --progress-bar off ".[dev]" >&2
  touch "$VENV/.complete"
fi
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e . >&2 2>/dev/null \
  || "$VENV/bin/python" -m pip install --quiet --no-deps -e . >&2
echo "$VENV"
