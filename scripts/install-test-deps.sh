#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: redis-server, and the npm
# packages of contracts/ (solc for the contract build check, anvil for chain tests).
# Idempotent: skips what is already there. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v pgrep >/dev/null 2>&1 || missing+=(procps)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# contracts/node_modules: reinstall only when package-lock.json changed.
stamp=contracts/node_modules/.lock-sha
want=$(sha256sum contracts/package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing contracts/ npm packages"
  (cd contracts && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi
