#!/usr/bin/env bash
# Connection soak: a node with a connection limit, flooded with idle and slow-header
# connections (twice the limit by default), while a normal client keeps sending requests on
# new connections. Prints the client's p50/p99, refusals, and the node's RSS (now and peak).
#
#   scripts/soak-connections.sh [path/to/infernet-node]
#   HOSTILE=2000 LIMIT=1000 REQUESTS=400 scripts/soak-connections.sh
#
# Exit status 1 if the normal client was ever refused.
set -euo pipefail

NODE=${1:-${CARGO_TARGET_DIR:-target}/release/infernet-node}
HOSTILE=${HOSTILE:-2000}
LIMIT=${LIMIT:-1000}
REQUESTS=${REQUESTS:-400}
[ -x "$NODE" ] || { echo "no node binary at $NODE (cargo build --release -p infernet-node)" >&2; exit 2; }

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$dir/config.json" <<JSON
{"containers": [], "server": {"port": $port, "bind": "127.0.0.1", "max_connections": $LIMIT,
 "rate_limit": {"num_requests": 1000000, "period": 1}},
 "log": {"path": "$dir/node.log"}, "store": {"path": "$dir/jobs.db"}}
JSON
"$NODE" --config "$dir/config.json" > "$dir/stdout" 2>&1 &
node=$!
trap 'kill $node 2>/dev/null; wait $node 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
  sleep 0.1
done

python3 - "$port" "$HOSTILE" "$REQUESTS" "$node" <<'PY'
import socket, sys, time, resource
port, hostile, requests, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def rss():
    status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
    return status["VmRSS"].strip(), status["VmHWM"].strip()

def normal():
    start = time.perf_counter()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = s.recv(64)
        s.close()
        ok = answer.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    return ok, time.perf_counter() - start

print(f"idle RSS before: {rss()[0]}")
held, latencies, refused = [], [], 0
per_request = max(1, hostile // requests)
for i in range(requests):
    for j in range(per_request):
        if len(held) >= hostile:
            break
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if (i + j) % 2:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # slow header, never finished
            held.append(s)
        except OSError:
            pass
    ok, took = normal()
    refused += not ok
    latencies.append(took)
latencies.sort()
p = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000
now, peak = rss()
print(f"hostile connections opened: {len(held)}, normal requests: {requests}, refused: {refused}")
print(f"normal client p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {latencies[-1]*1000:.2f} ms")
print(f"node RSS now {now}, peak {peak}")
sys.exit(1 if refused else 0)
PY
grep -o '"soft_before":[0-9]*,"soft":[0-9]*,"hard":[0-9]*' "$dir/stdout" "$dir/node.log" 2>/dev/null | head -1 || true
