#!/usr/bin/env bash
# Soak: the hostile cases of issue 19 all at once, against release builds of the node and the
# router on 127.0.0.1, while a normal client keeps submitting, reading back and streaming jobs.
#
#   - connections: SOAK_CONNECTIONS (2000) held open to the node, a quarter each idle, idle after
#     one keep-alive request, sending a header line every 5 s, sending a few body bytes every 5 s
#     (each reopened when the node closes it, as an attacker would);
#   - flood: containers whose output never ends (a stream, and a body announced as 16 GiB), with
#     jobs on them and streams of them (one read as fast as it comes, one 64 KiB a second), and a
#     hello-world stream of 1,000,000 tokens every 10 s;
#   - bodies: bodies just under and over server.max_body_size, two at a time;
#   - deep: `data` nested 124 and 200 levels deep; an accepted job must read back (main accepts
#     124 levels and then cannot read the job);
#   - batch: a 10,000-item batch, again and again;
#   - router: a node whose /info never ends and one that trickles it, listed next to the real node.
#
# It prints the node's and the router's peak RSS, the normal client's p50/p99 and what it was
# refused, and per-case counts; it exits 1 when a target fails (node peak RSS <= 150 MB, router
# <= 100 MB, normal client never refused nor failed, router keeps listing the real node, no
# accepted job unreadable). It is a script, not a timed test: figures depend on the machine.
#
# Settings (environment):
#   SOAK_SECONDS      hostile phase length (150); SOAK_WARMUP baseline before it (5)
#   SOAK_CASES        comma list of connections,flood,bodies,deep,batch,router (all)
#   SOAK_CONNECTIONS  connections held (2000)
#   SOAK_ABORT_MB     a node or router past this RSS is killed and the soak stops (1500),
#                     so an unbounded buffer cannot take the machine down
#   SOAK_NOFILE       soft open-file limit the node and router start with (1024, the usual
#                     default; the node is expected to raise it itself)
#   SOAK_NO_BUILD=1   use the release binaries as they are
#   SOAK_BIN_DIR      take the binaries from there (implies SOAK_NO_BUILD=1)
#   SOAK_KEEP=1       keep the work directory (config, logs, job store)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${SOAK_SECONDS:-150}
warmup=${SOAK_WARMUP:-5}
cases=${SOAK_CASES:-connections,flood,bodies,deep,batch,router}
connections=${SOAK_CONNECTIONS:-2000}
abort_mb=${SOAK_ABORT_MB:-1500}
nofile=${SOAK_NOFILE:-1024}
max_body=$((16 << 20))
max_output=$((32 << 20))
target=${SOAK_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/release}
helper="python3 $root/scripts/soak.py"

command -v python3 >/dev/null || { echo "soak: python3 is needed" >&2; exit 2; }
if [[ ${SOAK_NO_BUILD:-} != 1 && -z ${SOAK_BIN_DIR:-} ]]; then
    (cd "$root" && cargo build --release -p hello-world -p infernet-node -p infernet-router)
fi
for bin in hello-world infernet-node infernet-router; do
    [[ -x $target/$bin ]] || { echo "soak: $target/$bin is missing (cargo build --release)" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [[ ${SOAK_KEEP:-} == 1 ]]; then
        echo "soak: work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r node_port router_port hello_port flood_port evil_port drip_port < <($helper ports 6)
has_case() { [[ ,$cases, == *,$1,* ]]; }

# Starts "$@" in the background with the usual soft open-file limit; its PID is in $started.
start() {
    local name=$1
    shift
    (ulimit -S -n "$nofile" && exec "$@") >"$work/$name.log" 2>&1 &
    started=$!
    pids+=("$started")
}

HOST=127.0.0.1 PORT=$hello_port "$target/hello-world" >"$work/hello-world.log" 2>&1 &
pids+=($!)
$helper flood-server --port "$flood_port" >"$work/flood.log" 2>&1 &
pids+=($!)
hostile_ports=()
if has_case router; then
    $helper hostile-node --port "$evil_port" --behaviour flood >"$work/evil.log" 2>&1 &
    pids+=($!)
    $helper hostile-node --port "$drip_port" --behaviour drip >"$work/drip.log" 2>&1 &
    pids+=($!)
    hostile_ports=("$evil_port" "$drip_port")
fi

# The node: remote (`url`) containers only, so every process is the script's own. The keys
# max_connections, *_timeout and max_output_size are the hardening's (issue 19); a node without them
# only warns about them.
cat >"$work/node.json" <<EOF
{
  "server": {
    "port": $node_port, "bind": "127.0.0.1",
    "rate_limit": {"num_requests": 60, "period": 60},
    "max_body_size": $max_body,
    "max_connections": 10000, "header_timeout": 10, "body_timeout": 30, "idle_timeout": 60
  },
  "manage_containers": false,
  "forward_stats": false,
  "startup_wait": 10,
  "log": {"path": "$work/node-file.log"},
  "store": {"path": "$work/jobs.db"},
  "containers": [
    {"id": "hello-world", "url": "http://127.0.0.1:$hello_port", "max_output_size": $max_output},
    {"id": "flood-stream", "url": "http://127.0.0.1:$flood_port/stream", "max_output_size": $max_output},
    {"id": "flood-body", "url": "http://127.0.0.1:$flood_port/body", "max_output_size": $max_output}
  ]
}
EOF
{
    echo "127.0.0.1:$node_port"
    for port in "${hostile_ports[@]}"; do echo "127.0.0.1:$port"; done
} >"$work/ips.txt"

start node "$target/infernet-node" --config "$work/node.json"
node_pid=$started
start router "$target/infernet-router" --port "$router_port" --bind 127.0.0.1 \
    --ips-file "$work/ips.txt" --refresh-interval 2 --ratelimit-reqs-per-min 120 \
    --database-url "sqlite://$work/router.db" --key-file "$work/router.nsec"
router_pid=$started

common=(--node-port "$node_port" --router-port "$router_port" --seconds "$seconds" --warmup "$warmup"
    --cases "$cases" --stop-file "$work/stop")
[[ ${#hostile_ports[@]} -gt 0 ]] && common+=(--hostile-ports "${hostile_ports[@]}")
if ! $helper wait-ready "${common[@]}" --timeout 60; then
    echo "soak: the node or the router did not come up; last lines of their logs:" >&2
    tail -n 20 "$work/node.log" "$work/router.log" >&2
    exit 1
fi

echo "soak: node pid $node_pid on :$node_port, router pid $router_pid on :$router_port;" \
    "$warmup s baseline, then $seconds s of: $cases"
$helper client "${common[@]}" --out "$work/client.json" --abort-mb "$abort_mb" \
    --pids node="$node_pid" router="$router_pid" &
client_pid=$!
pids+=("$client_pid")
sleep "$warmup"
$helper hostile "${common[@]}" --out "$work/hostile.json" --connections "$connections" \
    --max-body "$max_body" &
hostile_pid=$!
pids+=("$hostile_pid")
wait "$client_pid"
wait "$hostile_pid" || true

status=0
$helper report "${common[@]}" --client "$work/client.json" --hostile "$work/hostile.json" \
    --flood-port "$flood_port" --abort-mb "$abort_mb" || status=$?
if [[ $status != 0 ]]; then
    echo
    echo "last node log lines:"
    tail -n 5 "$work/node.log" | cut -c1-300
fi
exit "$status"
