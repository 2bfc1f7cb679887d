#!/usr/bin/env bash
# Makes sure the binaries of the local stack exist. On Debian/Ubuntu as root (or with sudo) it installs
# the packages; elsewhere it stops and names what to install.
set -euo pipefail
need=()
for bin in prometheus promtool prometheus-alertmanager amtool prometheus-node-exporter; do
  command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
[ ${#need[@]} -eq 0 ] && exit 0
pkgs="prometheus prometheus-alertmanager prometheus-node-exporter"
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; else
    echo "modelwatch: missing ${need[*]}; run as root or with sudo: apt-get install -y $pkgs" >&2; exit 1
  fi
  echo "modelwatch: installing $pkgs (missing: ${need[*]})"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  exit 0
fi
echo "modelwatch: missing ${need[*]}. Install Prometheus >= 2.42 (prometheus, promtool), Alertmanager >= 0.25" \
     "(as prometheus-alertmanager, amtool) and node-exporter (as prometheus-node-exporter), then retry." >&2
exit 1
