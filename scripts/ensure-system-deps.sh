#!/usr/bin/env bash
# Makes sure the binaries of the local stack exist. On Debian/Ubuntu as root (or with sudo) it installs
# the packages; elsewhere it stops and names what to install.
# docker-compose (Debian's 1.29) is not part of the running stack: tests/unit/test_compose.py reads
# docker-compose.yaml through `docker-compose config` (no Docker engine needed). Without apt it is only
# named, not required. chromium is the headless browser the page tests drive (tests/browser.py).
set -euo pipefail
need=()
for bin in prometheus promtool prometheus-alertmanager amtool prometheus-node-exporter prometheus-pushgateway chromium docker-compose redis-server; do
  command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
# The PostgreSQL server of devstack/engine.py: Debian keeps initdb and postgres in /usr/lib/postgresql/<version>/bin, off PATH.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
pkgs="prometheus prometheus-alertmanager prometheus-node-exporter prometheus-pushgateway chromium docker-compose redis-server postgresql"
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; else
    echo "modelwatch: missing ${need[*]}; run as root or with sudo: apt-get install -y $pkgs" >&2; exit 1
  fi
  echo "modelwatch: installing $pkgs (missing: ${need[*]})"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  exit 0
fi
if [ "${need[*]}" = "docker-compose" ]; then
  echo "modelwatch: docker-compose is not installed: tests/unit/test_compose.py will skip its compose checks" \
       "(install docker-compose >= 1.29, or Docker Compose v2 as docker-compose, to run them)." >&2
  exit 0
fi
echo "modelwatch: missing ${need[*]}. Install Prometheus >= 2.42 (prometheus, promtool), Alertmanager >= 0.25" \
     "(as prometheus-alertmanager, amtool), node-exporter (as prometheus-node-exporter), Pushgateway >= 1.5" \
     "(as prometheus-pushgateway), chromium (the page tests' headless browser), docker-compose" \
     ">= 1.29, redis-server and the PostgreSQL server (initdb, postgres), then retry." >&2
exit 1
