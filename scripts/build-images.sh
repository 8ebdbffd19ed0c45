#!/usr/bin/env bash
# Builds the local images the tests and the examples use, without any registry access:
#   infernet/hello-world:dev        services/hello-world as a static binary in a FROM scratch image
#   infernet/hello-world:unhealthy  the same with a HEALTHCHECK that always fails (tests health monitoring)
# Usage: scripts/build-images.sh   (needs a running Docker engine; honours CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
target_dir="${CARGO_TARGET_DIR:-target}"
RUSTFLAGS='-C target-feature=+crt-static' "${CARGO:-cargo}" build --release -p hello-world --target "$target"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$target_dir/$target/release/hello-world" "$context/"
docker build --quiet -f services/hello-world/Dockerfile -t infernet/hello-world:dev "$context" >/dev/null
printf 'FROM infernet/hello-world:dev\nHEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD ["/no-such-probe"]\n' |
  docker build --quiet -t infernet/hello-world:unhealthy - >/dev/null
echo "built infernet/hello-world:dev and infernet/hello-world:unhealthy"
