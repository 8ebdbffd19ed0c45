#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: redis-server, postgresql (the
# router's database tests start their own throwaway cluster with its initdb/pg_ctl), a running
# Docker engine (docker.io; dockerd is started in the background if it does not answer), the
# npm packages of the tests (solc and anvil for contracts/, nostr-tools for the identity tests,
# uPlot, playwright-core and nostr-tools for ui/), Debian's chromium (the browser tests),
# schemathesis from PyPI (the OpenAPI conformance test), promtool (Debian's prometheus) for the
# shipped alerting rules, and iproute2, iptables and openssl (the link tests: a node behind a
# firewall in its own network namespace, TLS certificates).
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
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
[ -x /usr/bin/chromium ] || missing+=(chromium)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# The router's link tests: a node in its own network namespace behind a firewall, and TLS
# certificates made for the test.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Docker engine: start it if it does not answer (containers in tests are managed through it).
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (log: /var/tmp/dockerd.log)"
  sudo_if_needed sh -c 'nohup dockerd >/var/tmp/dockerd.log 2>&1 &'
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not answer within 60 s; see /var/tmp/dockerd.log" >&2; exit 1; }
fi

# npm packages of the tests: reinstalled only when their package-lock.json changed. contracts/:
# solc and anvil; crates/identity/tests/js: nostr-tools, the independent Nostr signer; ui: uPlot
# (built into ui/dist), playwright-core (drives Chromium) and nostr-tools (the test's NIP-07 signer).
for dir in contracts crates/identity/tests/js ui; do
  stamp=$dir/node_modules/.lock-sha
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing $dir npm packages"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
  fi
done

# schemathesis: the OpenAPI checker the API conformance test runs.
if ! python3 -m schemathesis.cli --version >/dev/null 2>&1; then
  echo "installing schemathesis (pip)"
  python3 -m pip install --quiet schemathesis 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages schemathesis
fi
