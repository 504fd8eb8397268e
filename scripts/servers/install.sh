#!/usr/bin/env bash
# Install the real servers that tests/integration/ runs against, idempotently.
#
#   scripts/servers/install.sh            # install what is missing, print the env file
#   . "$(scripts/servers/install.sh --env-file)"   # then export its variables
#
# What it installs (see scripts/servers/README.md):
#   * Prometheus, promtool, Alertmanager, amtool from Debian's packages
#     (`prometheus`, `prometheus-alertmanager`); their daemons are kept stopped:
#     the tests start their own instances on free loopback ports.
#   * Elasticsearch: the newest `org.elasticsearch.distribution.integ-test-zip:elasticsearch`
#     zip on Maven Central whose Java requirement a JDK on this machine meets
#     (8.x needs Java 17+, 9.x needs Java 21+); the zip is cached under $CACHE_DIR
#     so a second run downloads nothing, its SHA-1 is checked against Maven's.
#   * an unprivileged system user ($ES_USER) to run Elasticsearch, which refuses root.
#
# Environment knobs:
#   INCIDENTD_SERVERS_CACHE   zip cache (default ~/.cache/incidentd/servers)
#   INCIDENTD_SERVERS_DIR     where Elasticsearch is unpacked, readable by $ES_USER
#                             (default /opt/incidentd-servers as root, else $CACHE_DIR)
#   INCIDENTD_ES_VERSION      force a version instead of resolving the newest usable one
#   INCIDENTD_ES_REFRESH=1    re-read Maven's version list even if a version is cached
#   INCIDENTD_ES_USER         the unprivileged user (default incidentd-es)
set -euo pipefail

MAVEN="${INCIDENTD_MAVEN_URL:-https://repo1.maven.org/maven2}"
ES_PATH="org/elasticsearch/distribution/integ-test-zip/elasticsearch"
CACHE_DIR="${INCIDENTD_SERVERS_CACHE:-${HOME:-/root}/.cache/incidentd/servers}"
if [[ $(id -u) -eq 0 ]]; then
  SERVERS_DIR="${INCIDENTD_SERVERS_DIR:-/opt/incidentd-servers}"
else
  SERVERS_DIR="${INCIDENTD_SERVERS_DIR:-$CACHE_DIR}"
fi
ES_USER="${INCIDENTD_ES_USER:-incidentd-es}"
ENV_FILE="$SERVERS_DIR/servers.env"

if [[ "${1:-}" == "--env-file" ]]; then
  echo "$ENV_FILE"
  exit 0
fi

log() { echo "[install.sh] $*" >&2; }
is_root() { [[ $(id -u) -eq 0 ]]; }

mkdir -p "$CACHE_DIR" "$SERVERS_DIR"

# --- Prometheus / Alertmanager from Debian -------------------------------------------------
have_prom_tools() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null &&
    command -v prometheus-alertmanager >/dev/null && command -v amtool >/dev/null
}

apt_install() {
  # Keep package maintainer scripts from starting daemons on the default ports: a
  # policy-rc.d that denies every start (only ours, removed afterwards).
  local added_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "$@" >/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "$@" >/dev/null
  fi
  if [[ $added_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
}

stop_debian_daemons() {
  # The packages enable systemd units; a machine booted later would start them on
  # :9090/:9093. We disable them; tests never use the default ports anyway.
  local unit
  for unit in prometheus prometheus-alertmanager prometheus-node-exporter; do
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/$unit ]]; then
      /etc/init.d/"$unit" stop >/dev/null 2>&1 || true
    fi
  done
}

if ! have_prom_tools; then
  if is_root; then
    log "installing prometheus and prometheus-alertmanager from Debian"
    apt_install prometheus prometheus-alertmanager
    stop_debian_daemons
  else
    log "prometheus/alertmanager missing and not root: install the Debian packages" \
        "'prometheus' and 'prometheus-alertmanager' first"
    exit 1
  fi
elif is_root; then
  stop_debian_daemons
fi

# --- PostgreSQL (tests/postgres.py starts its own server: initdb in a temp dir, loopback port) ---
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [[ -z "$(pg_bindir)" || ! -x "$(pg_bindir)/initdb" ]]; then
  if is_root; then
    log "installing postgresql from Debian"
    apt_install postgresql
    for unit in postgresql; do
      if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
      elif [[ -x /etc/init.d/$unit ]]; then
        /etc/init.d/"$unit" stop >/dev/null 2>&1 || true
      fi
    done
  else
    log "postgresql missing and not root: install the Debian package 'postgresql' first"
    exit 1
  fi
fi
PG_BINDIR=$(pg_bindir)

# --- tools the Elasticsearch install needs -------------------------------------------------
need_pkgs=()
command -v curl >/dev/null || need_pkgs+=(curl ca-certificates)
command -v unzip >/dev/null || need_pkgs+=(unzip)
if ((${#need_pkgs[@]})); then
  is_root || { log "missing: ${need_pkgs[*]}"; exit 1; }
  apt_install "${need_pkgs[@]}"
fi

# --- JDKs ----------------------------------------------------------------------------------
# Prints "<major> <java_home>" for every JDK/JRE found, newest first.
list_jdks() {
  local rel home ver
  for rel in /usr/lib/jvm/*/release ${JAVA_HOME:+$JAVA_HOME/release} ${ES_JAVA_HOME:+$ES_JAVA_HOME/release}; do
    [[ -f $rel ]] || continue
    home=$(dirname "$rel")
    [[ -x $home/bin/java ]] || continue
    ver=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$rel")
    [[ -n $ver ]] && echo "$ver $(readlink -f "$home")"
  done | sort -u -k2,2 | sort -rn -k1,1
}

# The oldest JDK that meets the requirement: the most conservative, best-tested choice.
pick_jdk() {
  local min=$1
  list_jdks | sort -n -k1,1 | awk -v m="$min" '$1 >= m { print $2; exit }'
}

es_java_min() {
  local major=${1%%.*}
  if ((major >= 9)); then echo 21; else echo 17; fi
}

max_jdk=$(list_jdks | awk 'NR == 1 { print $1 }')
if [[ -z $max_jdk ]]; then
  if is_root; then
    log "no JDK found: installing openjdk-17-jre-headless"
    apt_install openjdk-17-jre-headless
    max_jdk=$(list_jdks | awk 'NR == 1 { print $1 }')
  fi
  [[ -n $max_jdk ]] || { log "no JDK >= 17 available"; exit 1; }
fi

# --- resolve the Elasticsearch version -----------------------------------------------------
resolve_es_version() {
  local meta versions v
  meta=$(curl -fsSL --retry 3 "$MAVEN/$ES_PATH/maven-metadata.xml")
  versions=$(sed -n 's:.*<version>\([0-9][0-9.]*\)</version>.*:\1:p' <<<"$meta" | sort -V -r)
  for v in $versions; do
    if ((max_jdk >= $(es_java_min "$v"))); then
      echo "$v"
      return 0
    fi
  done
  return 1
}

pinned="$CACHE_DIR/es-version"
if [[ -n ${INCIDENTD_ES_VERSION:-} ]]; then
  ES_VERSION=$INCIDENTD_ES_VERSION
elif [[ -s $pinned && ${INCIDENTD_ES_REFRESH:-0} != 1 ]]; then
  ES_VERSION=$(cat "$pinned")
else
  ES_VERSION=$(resolve_es_version) || { log "no usable Elasticsearch on $MAVEN/$ES_PATH"; exit 1; }
  echo "$ES_VERSION" >"$pinned"
fi
ES_JAVA=$(pick_jdk "$(es_java_min "$ES_VERSION")")
[[ -n $ES_JAVA ]] || { log "Elasticsearch $ES_VERSION needs Java $(es_java_min "$ES_VERSION")+"; exit 1; }

# --- download (cached) and unpack ----------------------------------------------------------
zip="$CACHE_DIR/elasticsearch-$ES_VERSION.zip"
url="$MAVEN/$ES_PATH/$ES_VERSION/elasticsearch-$ES_VERSION.zip"
verify_zip() {
  [[ -s $zip && -s $zip.sha1 ]] && [[ $(sha1sum "$zip" | cut -d' ' -f1) == $(tr -d ' \n' <"$zip.sha1" | cut -c1-40) ]]
}
if ! verify_zip; then
  log "downloading $url"
  curl -fsSL --retry 3 -o "$zip.sha1" "$url.sha1"
  curl -fsSL --retry 3 -o "$zip.part" "$url"
  mv "$zip.part" "$zip"
  verify_zip || { log "SHA-1 mismatch for $zip"; rm -f "$zip" "$zip.sha1"; exit 1; }
fi

ES_HOME="$SERVERS_DIR/elasticsearch-$ES_VERSION"
if [[ ! -x $ES_HOME/bin/elasticsearch ]]; then
  log "unpacking into $ES_HOME"
  tmp=$(mktemp -d "$SERVERS_DIR/.unpack.XXXXXX")
  unzip -q "$zip" -d "$tmp"
  rm -rf "$ES_HOME"
  mv "$tmp/elasticsearch-$ES_VERSION" "$ES_HOME"
  rmdir "$tmp"
fi

# --- the unprivileged user -----------------------------------------------------------------
if is_root; then
  id "$ES_USER" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$ES_USER"
  # The distribution stays root-owned and read-only; each test run copies config/ to a
  # temporary ES_PATH_CONF owned by $ES_USER. The user needs to traverse the path only.
  chmod 755 "$SERVERS_DIR"
  chmod -R a+rX "$ES_HOME"
else
  ES_USER=$(id -un)
fi

cat >"$ENV_FILE.tmp" <<EOF
# written by scripts/servers/install.sh; read by tests/integration/conftest.py
INCIDENTD_PROMETHEUS_BIN=$(command -v prometheus)
INCIDENTD_PROMTOOL_BIN=$(command -v promtool)
INCIDENTD_ALERTMANAGER_BIN=$(command -v prometheus-alertmanager)
INCIDENTD_AMTOOL_BIN=$(command -v amtool)
INCIDENTD_ES_HOME=$ES_HOME
INCIDENTD_ES_VERSION=$ES_VERSION
INCIDENTD_ES_JAVA_HOME=$ES_JAVA
INCIDENTD_ES_USER=$ES_USER
INCIDENTD_PG_BINDIR=$PG_BINDIR
EOF
mv "$ENV_FILE.tmp" "$ENV_FILE"
chmod 644 "$ENV_FILE"
log "ready: Elasticsearch $ES_VERSION (Java $ES_JAVA), $(prometheus --version 2>&1 | head -1)"
echo "$ENV_FILE"
