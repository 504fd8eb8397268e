#!/usr/bin/env bash
# Install the third-party model servers that tests/integration/test_model_servers.py runs, one venv each,
# idempotently (a venv that finished installing carries a .complete marker and is reused).
#
#   scripts/servers/install_model_servers.sh              # install what is missing (all kinds)
#   scripts/servers/install_model_servers.sh mlserver     # only some kinds
#   scripts/servers/install_model_servers.sh --env-file   # path of the env file the tests read
#
# Kinds and venvs (under $INCIDENTD_MODEL_SERVERS_DIR, default ~/.cache/incidentd/model-servers):
#   mlserver    mlserver (Seldon MLServer), Python 3.11
#   kserve      kserve (the Python ModelServer), Python 3.11
#   torchserve  torchserve + torch-model-archiver (Java 17 must be on PATH), Python 3.11
#   pytriton    nvidia-pytriton (ships the Triton server binary); its Python-backend stub needs
#               Python 3.12 (on 3.11 it fails with '_thread.RLock' object has no attribute
#               '_recursion_count'), so this venv is made from pyenv's 3.12 and the env file records
#               that Python's lib/ for LD_LIBRARY_PATH (the stub dlopens libpython3.12.so).
# A kind that fails to install is reported and left out of the env file; the script fails only with
# INCIDENTD_MODEL_SERVERS_STRICT=1 (CI).
set -uo pipefail

ROOT="${INCIDENTD_MODEL_SERVERS_DIR:-${HOME:-/root}/.cache/incidentd/model-servers}"
ENV_FILE="$ROOT/model-servers.env"
if [[ "${1:-}" == "--env-file" ]]; then
  echo "$ENV_FILE"
  exit 0
fi
KINDS=("$@")
[[ ${#KINDS[@]} -eq 0 ]] && KINDS=(mlserver kserve torchserve pytriton)
mkdir -p "$ROOT"
log() { echo "[install_model_servers.sh] $*" >&2; }

find_python() {  # find_python 3.12 -> a python3.12 interpreter (pyenv first, then PATH)
  local want=$1 p
  for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/python"$want" \
           "$(command -v "python$want" 2>/dev/null)"; do
    [[ -x "$p" ]] && { echo "$p"; return 0; }
  done
  return 1
}

# Pinned lower bounds that are known to work here; pip picks the newest that fits.
declare -A PKGS=(
  [mlserver]="mlserver>=1.6 numpy"
  [kserve]="kserve>=0.14 numpy"
  [torchserve]="torchserve>=0.11 torch-model-archiver>=0.11 numpy"
  [pytriton]="nvidia-pytriton>=0.5 numpy"
)
declare -A PYVER=([mlserver]=3.11 [kserve]=3.11 [torchserve]=3.11 [pytriton]=3.12)

failed=()
for kind in "${KINDS[@]}"; do
  venv="$ROOT/$kind"
  if [[ -f "$venv/.complete" ]]; then
    # The torch that TorchServe's venv borrows lives in incidentd's venv, which a dependency change
    # replaces: point the .pth line at the current one.
    if [[ $kind == torchserve && -n "${INCIDENTD_VENV:-}" && -d "${INCIDENTD_VENV:-}" ]]; then
      own=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
      "$INCIDENTD_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
        >"$own/zz_incidentd_torch.pth"
    fi
    log "$kind: cached at $venv"
    continue
  fi
  py=$(find_python "${PYVER[$kind]}") || { log "$kind: no Python ${PYVER[$kind]} found"; failed+=("$kind"); continue; }
  log "$kind: creating $venv with $py"
  rm -rf "$venv"
  "$py" -m venv "$venv" && "$venv/bin/python" -m pip install --quiet --upgrade pip >&2 &&
    "$venv/bin/python" -m pip install --quiet --progress-bar off ${PKGS[$kind]} >&2
  rc=$?
  if [[ $kind == torchserve && $rc -eq 0 ]]; then
    # TorchServe's worker imports torch. Rather than download another copy of PyTorch (GBs with its CUDA
    # wheels), the venv sees incidentd's own environment *after* its own packages (a .pth line).
    inc_venv="${INCIDENTD_VENV:-}"
    if [[ -n "$inc_venv" && -d "$inc_venv" ]]; then
      site=$("$inc_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
      own=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
      echo "$site" >"$own/zz_incidentd_torch.pth"
    fi
    "$venv/bin/python" -c 'import torch' 2>/dev/null || "$venv/bin/python" -m pip install --quiet torch >&2
    rc=$?
  fi
  if [[ $rc -eq 0 ]]; then
    touch "$venv/.complete"
    log "$kind: installed"
  else
    log "$kind: install failed (rc=$rc)"
    failed+=("$kind")
  fi
done

# The env file: one INCIDENTD_<KIND>_VENV per kind that is installed (all kinds, not only this run's).
{
  for kind in mlserver kserve torchserve pytriton; do
    [[ -f "$ROOT/$kind/.complete" ]] || continue
    echo "INCIDENTD_${kind^^}_VENV=$ROOT/$kind"
  done
  if [[ -f "$ROOT/pytriton/.complete" ]]; then
    base=$("$ROOT/pytriton/bin/python" -c 'import sys; print(sys.base_prefix)')
    echo "INCIDENTD_PYTRITON_LIBDIR=$base/lib"
  fi
} >"$ENV_FILE"
log "env file: $ENV_FILE"
if [[ ${#failed[@]} -gt 0 ]]; then
  log "not installed: ${failed[*]}"
  [[ "${INCIDENTD_MODEL_SERVERS_STRICT:-0}" == 1 ]] && exit 1
fi
exit 0
