#!/usr/bin/env bash
# Makes sure `docker-compose` is available: the deploy tests validate
# docker-compose.yml with `docker-compose config` (no Docker engine needed).
# Order: $DOCKER_COMPOSE_BIN, then PATH, then Debian's docker-compose package
# (installed with apt-get, without the recommended engine, when running as
# root). Prints what it found.
set -euo pipefail

if [ -n "${DOCKER_COMPOSE_BIN:-}" ] && [ -x "${DOCKER_COMPOSE_BIN}" ]; then
  echo "docker-compose: ${DOCKER_COMPOSE_BIN} ($("${DOCKER_COMPOSE_BIN}" version --short))"
  exit 0
fi
if command -v docker-compose >/dev/null 2>&1; then
  echo "docker-compose: $(command -v docker-compose) ($(docker-compose version --short))"
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "docker-compose not found; installing Debian's docker-compose package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  echo "docker-compose: $(command -v docker-compose) ($(docker-compose version --short))"
  exit 0
fi
echo "docker-compose is required to validate docker-compose.yml: install it (Debian/Ubuntu: sudo apt-get install --no-install-recommends docker-compose)" >&2
echo "or set DOCKER_COMPOSE_BIN to its path" >&2
exit 1
