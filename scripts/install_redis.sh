#!/usr/bin/env bash
# Install Debian's redis-server for the queue's end-to-end test (the test starts its own server on a free port).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# the package enables a system service; the test needs only the binary
$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
redis-server --version
