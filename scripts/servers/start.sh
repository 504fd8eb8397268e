#!/usr/bin/env bash
# Start Prometheus, Alertmanager and Elasticsearch on loopback for manual work (the tests start
# their own instances through tests/integration/conftest.py; this is the same setup by hand).
#
#   scripts/servers/start.sh [STATE_DIR]     # default /tmp/incidentd-servers; prints the URLs
#   scripts/servers/stop.sh  [STATE_DIR]
#
# Ports: PROMETHEUS_PORT (19090), ALERTMANAGER_PORT (19093), ES_PORT (19200), ES_TRANSPORT_PORT (19300).
# Configuration: dashboards/prometheus/ (rules loaded), dashboards/alertmanager/alertmanager.yml is
# NOT used as is (its webhook points at the compose host name); a local receiver-less config is.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STATE=${1:-/tmp/incidentd-servers}
ENV_FILE=$("$HERE/install.sh" --env-file)
[[ -f $ENV_FILE ]] || "$HERE/install.sh" >/dev/null
# shellcheck disable=SC1090
. "$ENV_FILE"
PROMETHEUS_PORT=${PROMETHEUS_PORT:-19090}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-19093}
ES_PORT=${ES_PORT:-19200}
ES_TRANSPORT_PORT=${ES_TRANSPORT_PORT:-19300}

mkdir -p "$STATE"/{prometheus,alertmanager,es/config,es/data,es/logs,es/tmp}
chmod 755 "$STATE"

cat >"$STATE/prometheus/prometheus.yml" <<YML
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: ["$REPO/dashboards/prometheus/rules/*.yml"]
alerting:
  alertmanagers: [{static_configs: [{targets: ["127.0.0.1:$ALERTMANAGER_PORT"]}]}]
scrape_configs:
  - job_name: incidentd-sidecar
    static_configs: [{targets: ["127.0.0.1:9101"]}]
  - job_name: model-server
    static_configs: [{targets: ["127.0.0.1:8081"]}]
  - job_name: incidentd
    static_configs: [{targets: ["127.0.0.1:8080"]}]
YML
nohup "$INCIDENTD_PROMETHEUS_BIN" --config.file="$STATE/prometheus/prometheus.yml" \
  --storage.tsdb.path="$STATE/prometheus/tsdb" --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
  --web.enable-lifecycle >"$STATE/prometheus/log" 2>&1 &
echo $! >"$STATE/prometheus.pid"

cat >"$STATE/alertmanager/alertmanager.yml" <<YML
route: {receiver: incidentd, group_wait: 5s, group_interval: 30s}
receivers:
  - name: incidentd
    webhook_configs:
      - url: http://127.0.0.1:8080/webhooks/alertmanager
        send_resolved: true
        http_config:
          authorization: {type: Bearer, credentials_file: $REPO/dashboards/alertmanager/incidentd_webhook_token.example}
YML
nohup "$INCIDENTD_ALERTMANAGER_BIN" --config.file="$STATE/alertmanager/alertmanager.yml" \
  --storage.path="$STATE/alertmanager/data" --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" \
  --cluster.listen-address= >"$STATE/alertmanager/log" 2>&1 &
echo $! >"$STATE/alertmanager.pid"

cp -r "$INCIDENTD_ES_HOME/config/." "$STATE/es/config/"
mkdir -p "$STATE/es/config/jvm.options.d"
printf -- '-Xms512m\n-Xmx512m\n-XX:TieredStopAtLevel=1\n' >"$STATE/es/config/jvm.options.d/incidentd.options"
cat >"$STATE/es/config/elasticsearch.yml" <<YML
discovery.type: single-node
network.host: 127.0.0.1
http.port: $ES_PORT
transport.port: $ES_TRANSPORT_PORT
path.data: $STATE/es/data
path.logs: $STATE/es/logs
xpack.security.enabled: false
YML
run_es=(env ES_JAVA_HOME="$INCIDENTD_ES_JAVA_HOME" ES_PATH_CONF="$STATE/es/config" ES_TMPDIR="$STATE/es/tmp"
        "$INCIDENTD_ES_HOME/bin/elasticsearch" -d -p "$STATE/es/es.pid")
if [[ $(id -u) -eq 0 ]]; then
  chown -R "$INCIDENTD_ES_USER" "$STATE/es"
  runuser -u "$INCIDENTD_ES_USER" -- "${run_es[@]}" >"$STATE/es/stdout.log" 2>&1
else
  "${run_es[@]}" >"$STATE/es/stdout.log" 2>&1
fi

for i in $(seq 120); do
  curl -fs "http://127.0.0.1:$ES_PORT/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null && break
  sleep 1
done
echo "prometheus   http://127.0.0.1:$PROMETHEUS_PORT"
echo "alertmanager http://127.0.0.1:$ALERTMANAGER_PORT"
echo "elasticsearch http://127.0.0.1:$ES_PORT (version $INCIDENTD_ES_VERSION)"
