#!/usr/bin/env bash
# Run vLLM live on a GPU machine and check the sidecar's vLLM map against its real /metrics.
# Not run in CI (no GPU); meant for a lent GPU machine (the device tool's `status` says when one is).
#
#   scripts/device/vllm_live.sh [MODEL_DIR_OR_ID]
#
# MODEL defaults to a small model already present on the machine ($VLLM_MODEL or the argument); nothing
# is downloaded by this script when a local path is given. It:
#   1. creates/reuses a venv with vllm (and this checkout),
#   2. starts `vllm serve` on a free loopback port,
#   3. sends a few completions (streamed and not),
#   4. runs `incidentd sidecar --server-kind auto` against it and checks that it chose vllm and that
#      /metrics shows requests, TTFT, inter-token latency, waiting/running requests and KV-cache usage.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL="${1:-${VLLM_MODEL:-}}"
[[ -n "$MODEL" ]] || { echo "usage: $0 MODEL_DIR_OR_ID (or set VLLM_MODEL)" >&2; exit 2; }
nvidia-smi -L >/dev/null || { echo "no GPU visible (nvidia-smi failed)" >&2; exit 2; }
VENV="${VLLM_VENV:-$HOME/.cache/incidentd/model-servers/vllm}"
if [[ ! -f "$VENV/.complete" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet vllm
  "$VENV/bin/pip" install --quiet -e .
  touch "$VENV/.complete"
fi
free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); SC_PORT=$(free_port)
LOG=$(mktemp -d)
"$VENV/bin/vllm" serve "$MODEL" --host 127.0.0.1 --port "$PORT" --max-model-len 2048 --gpu-memory-utilization 0.5 \
  >"$LOG/vllm.log" 2>&1 &
VLLM_PID=$!
cleanup() { kill "${SC_PID:-}" 2>/dev/null || true; kill "$VLLM_PID" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 "$VLLM_PID" 2>/dev/null || { tail -50 "$LOG/vllm.log"; exit 1; }
  sleep 1
done
for i in $(seq 1 8); do
  curl -sf "http://127.0.0.1:$PORT/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\": \"$MODEL\", \"prompt\": \"Count to $i:\", \"max_tokens\": 32}" >/dev/null
  curl -sfN "http://127.0.0.1:$PORT/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\": \"$MODEL\", \"prompt\": \"Say $i\", \"max_tokens\": 16, \"stream\": true}" >/dev/null
done
curl -sf "http://127.0.0.1:$PORT/metrics" >"$LOG/vllm_metrics.prom"
"$VENV/bin/incidentd" sidecar --server-kind auto --target "http://127.0.0.1:$PORT" --port "$SC_PORT" \
  --interval 1 --gpu auto --model-name "$MODEL" >"$LOG/sidecar.log" 2>&1 &
SC_PID=$!
for _ in $(seq 1 60); do
  curl -sf "http://127.0.0.1:$SC_PORT/metrics" >"$LOG/sidecar_metrics.prom" 2>/dev/null &&
    grep -q '^model_time_to_first_token_seconds' "$LOG/sidecar_metrics.prom" && break
  sleep 1
done
grep -q "chose vllm" "$LOG/sidecar.log" || { echo "auto-detection did not choose vllm"; cat "$LOG/sidecar.log"; exit 1; }
status=0
for name in model_requests_total model_latency_seconds model_time_to_first_token_seconds \
            model_inter_token_latency_seconds model_requests_queued model_requests_in_flight model_kv_cache_usage_ratio; do
  if grep -q "^$name" "$LOG/sidecar_metrics.prom"; then echo "ok   $name"; else echo "MISS $name"; status=1; fi
done
echo "vLLM exposition kept at $LOG/vllm_metrics.prom (add it to tests/collector/adapters/expositions/)"
exit $status
