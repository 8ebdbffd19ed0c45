#!/usr/bin/env bash
# Counts the user-space instructions the node spends per streamed job, and the bare forwarding
# proxy of the stream benchmark per forwarded request, under valgrind's callgrind. Unlike
# throughput on a shared machine, the count hardly moves between runs, so it shows a change of a
# few percent in what the node does per request.
#
# Needs valgrind (`apt-get install -y valgrind`) and the release builds (`make bench` makes them).
# Usage: scripts/count-instructions.sh [requests]   (default 2000)
# With KEEP_PROFILES=DIR the callgrind profiles are left in DIR (for callgrind_annotate).
set -euo pipefail

requests=${1:-2000}
target=${CARGO_TARGET_DIR:-target}/release
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 2; }
for bin in hello-world infernet-node; do
    [[ -x $target/$bin ]] || { echo "$target/$bin is missing: run make bench first" >&2; exit 2; }
done
bench=$(ls -t "$target"/deps/stream-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
[[ -n $bench ]] || { echo "the stream benchmark is not built: run make bench first" >&2; exit 2; }

dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 300); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    exit 1
}
# Sends $3 identical requests over 16 kept-alive connections, as the stream benchmark does.
post() {
    local url=$1 body=$2 n=$3 args=()
    for _ in $(seq 1 "$n"); do args+=("$url"); done
    curl -sf --no-progress-meter --parallel --parallel-max 16 -X POST -H "content-type: application/json" -d "$body" "${args[@]}" >/dev/null
}
# Runs "$@" under callgrind, warms it up, counts $requests requests of $url with $body.
count() {
    local name=$1 port=$2 url=$3 body=$4
    shift 4
    valgrind --tool=callgrind --callgrind-out-file="$dir/$name.out" "$@" 2>/dev/null &
    # count runs in a command substitution: its own trap stops what it started. Not local: the
    # trap runs after the function has returned.
    counted=$!
    trap 'kill "$counted" 2>/dev/null || true' EXIT
    wait_port "$port"
    post "$url" "$body" 200
    sleep 1
    callgrind_control -z "$counted" >/dev/null 2>&1
    post "$url" "$body" "$requests"
    callgrind_control -d "$counted" >/dev/null 2>&1
    sleep 1
    kill "$counted"
    if [[ -n ${KEEP_PROFILES:-} ]]; then
        mkdir -p "$KEEP_PROFILES"
        cp "$dir/$name.out".* "$KEEP_PROFILES/"
    fi
    local total
    total=$(grep -h '^totals:' "$dir/$name.out".* | awk '{s += $2} END {print s}')
    echo "$((total / requests))"
}

service_port=$(free_port)
HOST=127.0.0.1 PORT=$service_port "$target/hello-world" 2>/dev/null &
pids+=($!)
wait_port "$service_port"

node_port=$(free_port)
cat >"$dir/config.json" <<EOF
{"server": {"port": $node_port, "bind": "127.0.0.1", "rate_limit": {"num_requests": 1000000000, "period": 1}},
 "manage_containers": false, "store": {"path": "$dir/jobs.redb"}, "log": {"path": "$dir/node.log"},
 "containers": [{"id": "hello-world", "port": $service_port}]}
EOF
node=$(RUST_LOG=warn count node "$node_port" "http://127.0.0.1:$node_port/api/jobs/stream" \
    '{"containers": ["hello-world"], "data": {"prompt": "hi"}}' "$target/infernet-node" --config "$dir/config.json")

floor_port=$(free_port)
floor=$(STREAM_BENCH_FORWARD="$floor_port:$service_port" count floor "$floor_port" \
    "http://127.0.0.1:$floor_port/service_output" '{"source": 1, "destination": 2, "data": {"prompt": "hi"}}' "$bench")

echo "user-space instructions per request, $requests requests over 16 connections (callgrind):"
echo "  node  POST /api/jobs/stream : $node"
echo "  floor forwarding proxy      : $floor"
python3 -c "print(f'  node / floor                : {$node / $floor:.2f}')"
