#!/usr/bin/env bash
# Makes sure a nats-server binary is available for the NATS tests and the
# benchmark. Order: $NATS_SERVER_BIN, then PATH, then Debian's package
# (installed with apt-get when running as root). Prints what it found.
set -euo pipefail

if [ -n "${NATS_SERVER_BIN:-}" ] && [ -x "${NATS_SERVER_BIN}" ]; then
  echo "nats-server: ${NATS_SERVER_BIN} ($("${NATS_SERVER_BIN}" --version))"
  exit 0
fi
if command -v nats-server >/dev/null 2>&1; then
  echo "nats-server: $(command -v nats-server) ($(nats-server --version))"
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "nats-server not found; installing Debian's nats-server package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq nats-server >/dev/null
  echo "nats-server: $(command -v nats-server) ($(nats-server --version))"
  exit 0
fi
echo "nats-server is required for the NATS tests: install it (Debian/Ubuntu: sudo apt-get install nats-server)" >&2
echo "or set NATS_SERVER_BIN to its path" >&2
exit 1
