#!/usr/bin/env python3
"""Helper of scripts/soak.sh (Python standard library only).

Modes:
  ports N           print N free TCP ports on 127.0.0.1
  flood-server      a container service whose output never ends: `/stream/service_output`
                    streams forever, `/body/service_output` declares a huge body and sends it
  hostile-node      a node whose `/info` (and `/resources`) body never ends (`--behaviour flood`),
                    or trickles a byte a second (`--behaviour drip`)
  wait-ready        waits until the node answers and the router lists it
  client            the normal client (node and router) and the RSS monitor
  hostile           the hostile cases against the node
  report            prints the figures and the targets; exits 1 when a target fails

Every hostile case and the normal client use their own loopback source address (127.0.0.0/8 is
all loopback on Linux), so the node's per-client rate limit charges each of them separately: the
normal client is refused only when the node fails it, not because an attacker spent its budget.
"""

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"
NORMAL_SRC = "127.0.0.2"
ROUTER_CLIENT_SRC = "127.0.0.3"
READY_SRC = "127.0.0.4"


# ---------------------------------------------------------------------------------------------
# A small HTTP/1.1 client on asyncio streams: one connection per request, every read bounded.


class NoAnswer(Exception):
    """No HTTP answer came back: refused, reset, closed, or nothing within the timeout."""


class Resp:
    def __init__(self, status, headers, body, total, complete, ttfb, elapsed, error=None):
        self.status = status
        self.headers = headers
        self.body = body  # the first `keep` bytes
        self.total = total  # body bytes read
        self.complete = complete  # the whole body was read
        self.ttfb = ttfb
        self.elapsed = elapsed
        self.error = error  # why the body is incomplete

    def json(self):
        return json.loads(self.body.decode("utf-8", "replace"))


async def open_conn(port, src, limit=1 << 20):
    return await asyncio.open_connection(HOST, port, local_addr=(src, 0), limit=limit)


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def read_body(reader, headers, keep, cap, progress=None):
    """Reads at most `cap` body bytes; returns (first `keep` bytes, bytes read, whole body read).
    `progress`, a dict, has the bytes read so far under "total", also when the body breaks."""
    kept = bytearray()
    total = 0
    progress = {} if progress is None else progress

    def take(data):
        nonlocal total
        if len(kept) < keep:
            kept.extend(data[: keep - len(kept)])
        total += len(data)
        progress["total"] = total

    if headers.get("transfer-encoding", "").lower() == "chunked":
        while total < cap:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(kept), total, True
            left = size
            while left > 0:
                data = await reader.read(min(left, 1 << 18))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                take(data)
                left -= len(data)
            await reader.readexactly(2)
        return bytes(kept), total, False
    if "content-length" in headers:
        length = int(headers["content-length"])
        while total < min(length, cap):
            data = await reader.read(min(length - total, 1 << 18))
            if not data:
                raise asyncio.IncompleteReadError(b"", length - total)
            take(data)
        return bytes(kept), total, total >= length
    while total < cap:
        data = await reader.read(1 << 18)
        if not data:
            return bytes(kept), total, True
        take(data)
    return bytes(kept), total, False


async def request(port, method, path, body=b"", src=HOST, timeout=10.0, keep=1 << 20, cap=1 << 20):
    """One request on a new connection. Raises NoAnswer when no status line came back."""
    t0 = time.monotonic()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer = None
    status = None
    progress = {}
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await open_conn(port, src)
            except ConnectionRefusedError as e:
                raise NoAnswer("connection refused") from e
            try:
                writer.write(head)
                if body:
                    writer.write(body)
                await writer.drain()
            except (ConnectionError, OSError):
                pass  # a server may answer (413) and close before reading the whole body
            try:
                status, headers = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
                raise NoAnswer("closed without an answer") from e
            except (ValueError, IndexError, asyncio.LimitOverrunError) as e:
                raise NoAnswer("malformed answer") from e
            ttfb = time.monotonic() - t0
            try:
                kept, total, complete = await read_body(reader, headers, keep, cap, progress)
                error = None
            except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError) as e:
                # What came before the cut counts (a stream cut at its output limit).
                kept, total, complete = b"", progress.get("total", 0), False
                error = f"body cut: {type(e).__name__}"
    except TimeoutError as e:
        if status is None:
            raise NoAnswer("no answer within the timeout") from e
        return Resp(status, headers, b"", progress.get("total", 0), False, ttfb, time.monotonic() - t0,
                    "body timeout")
    except OSError as e:
        raise NoAnswer(f"connect failed: {e.strerror or e}") from e
    finally:
        if writer is not None:
            writer.close()
    return Resp(status, headers, kept, total, complete, ttfb, time.monotonic() - t0, error)


class Counter(dict):
    def add(self, key, n=1):
        self[key] = self.get(key, 0) + n


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))]


def left(deadline, most):
    """A request timeout: at most `most` seconds, and not much past the deadline."""
    return max(1.0, min(most, deadline - time.monotonic()))


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


def stop_requested(args):
    return args.stop_file and os.path.exists(args.stop_file)


async def sleep_or_stop(args, deadline, seconds):
    """Sleeps `seconds`, less when the deadline or a stop request comes first; False then."""
    end = min(deadline, time.monotonic() + seconds)
    while time.monotonic() < end:
        if stop_requested(args):
            return False
        await asyncio.sleep(min(0.5, end - time.monotonic()))
    return time.monotonic() < deadline and not stop_requested(args)


# ---------------------------------------------------------------------------------------------
# Hostile servers.


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = Counter()

    def add(self, key, n=1):
        with self.lock:
            self.counts.add(key, n)

    def snapshot(self):
        with self.lock:
            return dict(self.counts)


def serve(port, handler_class, stats):
    handler_class.stats = stats
    handler_class.protocol_version = "HTTP/1.1"
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer((HOST, port), handler_class)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()


class Quiet(BaseHTTPRequestHandler):
    stats = None

    def log_message(self, *args):
        pass

    def send_json(self, value, status=200):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def drain_request_body(self):
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            data = self.rfile.read(min(left, 1 << 16))
            if not data:
                break
            left -= len(data)

    def send_forever(self, name, first, piece, chunked):
        """Sends `first`, then `piece` until the peer goes away; counts calls and bytes."""
        self.stats.add(f"{name} calls")
        frame = (b"%x\r\n" % len(piece) + piece + b"\r\n") if chunked else piece
        sent = 0
        try:
            self.connection.sendall(first)
            while True:
                self.connection.sendall(frame)
                sent += len(piece)
                if sent >= 1 << 26:
                    self.stats.add(f"{name} bytes", sent)
                    sent = 0
        except OSError:
            pass
        finally:
            self.stats.add(f"{name} bytes", sent)
            self.close_connection = True


class FloodHandler(Quiet):
    """`/stream/service_output`: chunked output forever; `/body/service_output`: a body announced
    as `--body-bytes` long, sent until the caller hangs up."""

    body_bytes = 1 << 34

    def do_POST(self):
        self.drain_request_body()
        piece = b"flood " * 10923  # 64 KiB
        if self.path.startswith("/stream/"):
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            self.send_forever("stream", head, piece, chunked=True)
        elif self.path.startswith("/body/"):
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % self.body_bytes
                + b'{"output": "'
            )
            self.send_forever("body", head, b"a" * (1 << 16), chunked=False)
        else:
            self.send_json({"error": "not found"}, 404)

    def do_GET(self):
        if self.path == "/__soak_stats":
            self.send_json(self.stats.snapshot())
        elif "service-resources" in self.path:
            self.send_json({"service": "flood", "models": []})
        else:
            self.send_json({"status": "healthy"})


class HostileNodeHandler(Quiet):
    """Every GET but the stats one: a body that never ends, sent as fast as the peer reads
    (`flood`) or a byte a second (`drip`)."""

    mode = "flood"

    def do_GET(self):
        if self.path == "/__soak_stats":
            self.send_json(self.stats.snapshot())
            return
        name = self.path.split("?")[0].strip("/") or "root"
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        start = b'{"containers": ['
        if self.mode == "flood":
            piece = b'{"id": "evil", "description": "' + b"x" * 4000 + b'", "external": true}, '
            self.send_forever(name, head + b"%x\r\n%s\r\n" % (len(start), start), piece, chunked=True)
            return
        self.stats.add(f"{name} calls")
        try:
            self.connection.sendall(head + b"%x\r\n%s\r\n" % (len(start), start))
            while True:
                time.sleep(1.0)
                self.connection.sendall(b"1\r\n \r\n")
                self.stats.add(f"{name} bytes")
        except OSError:
            self.close_connection = True


# ---------------------------------------------------------------------------------------------
# The normal client and the RSS monitor.


def read_status(pid):
    """(VmRSS kB, VmHWM kB, threads) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return (
            int(fields["VmRSS"].split()[0]),
            int(fields["VmHWM"].split()[0]),
            int(fields["Threads"].strip()),
        )
    except (OSError, KeyError, ValueError):
        return None


async def monitor(args, procs, out, deadline, t0):
    """Samples each process's RSS; SIGKILLs one past the abort ceiling (and stops the soak when
    that is the node: nothing else can be measured without it)."""
    for name in procs:
        out[name] = {"peak_rss_kb": 0, "baseline_rss_kb": None, "peak_fds": 0, "peak_threads": 0,
                     "exited_at": None, "killed_at_ceiling": None, "series": []}
    tick = 0
    while time.monotonic() < deadline and not stop_requested(args):
        now = time.monotonic() - t0
        for name, pid in procs.items():
            o = out[name]
            if o["exited_at"] is not None:
                continue
            st = read_status(pid)
            if st is None:
                o["exited_at"] = round(now, 1)
                continue
            rss, hwm, threads = st
            o["peak_rss_kb"] = max(o["peak_rss_kb"], rss, hwm)
            o["peak_threads"] = max(o["peak_threads"], threads)
            if o["baseline_rss_kb"] is None and now >= args.warmup:
                o["baseline_rss_kb"] = rss
            if tick % 20 == 0:
                o["series"].append([round(now - args.warmup), rss >> 10])
            if tick % 4 == 0:
                try:
                    o["peak_fds"] = max(o["peak_fds"], len(os.listdir(f"/proc/{pid}/fd")))
                except OSError:
                    pass
            if rss > args.abort_mb * 1024:
                os.kill(pid, signal.SIGKILL)
                o["killed_at_ceiling"] = {"at": round(now, 1), "rss_kb": rss}
                if args.stop_file and name == "node":
                    open(args.stop_file, "w").close()
        tick += 1
        await asyncio.sleep(0.25)


class Record:
    """What one client saw: latencies per request kind and phase, refusals and failures."""

    def __init__(self, warmup, t0):
        self.warmup = warmup
        self.t0 = t0
        self.latency = {}  # "phase kind" -> [seconds]
        self.refused = Counter()
        self.failed = Counter()
        self.ok = Counter()
        self.first_refusal = None

    def phase(self):
        return "baseline" if time.monotonic() - self.t0 < self.warmup else "soak"

    def refuse(self, kind, reason):
        self.refused.add(f"{kind}: {reason}")
        if self.first_refusal is None:
            self.first_refusal = round(time.monotonic() - self.t0 - self.warmup, 1)

    def fail(self, kind, reason):
        self.failed.add(f"{kind}: {reason}")

    async def call(self, kind, port, method, path, body=b"", src=NORMAL_SRC, timeout=10.0):
        """Sends a request; returns its answer when it is a 200, else None (recorded)."""
        phase = self.phase()
        try:
            r = await request(port, method, path, body, src=src, timeout=timeout)
        except NoAnswer as e:
            self.refuse(kind, str(e))
            return None
        self.latency.setdefault(f"{phase} {kind}", []).append(r.elapsed)
        if r.status in (429, 503):
            self.refuse(kind, f"HTTP {r.status}")
            return None
        if r.status != 200:
            self.fail(kind, f"HTTP {r.status} {r.body[:80].decode('utf-8', 'replace')}")
            return None
        if not r.complete:
            self.fail(kind, r.error or "body incomplete")
            return None
        self.ok.add(kind)
        return r

    def to_json(self):
        return {"latency": self.latency, "refused": self.refused, "failed": self.failed,
                "ok": self.ok, "first_refusal": self.first_refusal}


async def normal_cycle(args, rec, i):
    body = json.dumps({"containers": ["hello-world"], "data": {"name": "soak", "i": i}}).encode()
    r = await rec.call("POST /api/jobs", args.node_port, "POST", "/api/jobs", body)
    if r is not None:
        try:
            job = r.json()["id"]
        except (ValueError, KeyError, TypeError):
            rec.fail("POST /api/jobs", "answer has no id")
            job = None
        for wait in (0.3, 1.2, 3.5):
            if job is None:
                break
            await asyncio.sleep(wait)
            g = await rec.call("GET /api/jobs", args.node_port, "GET", f"/api/jobs?id={job}")
            if g is None:
                break
            try:
                status = g.json()[0]["status"]
            except (ValueError, KeyError, IndexError, TypeError):
                rec.fail("GET /api/jobs", "answer is not a list of jobs")
                break
            if status == "success":
                break
            if status != "running":
                rec.fail("job", f"ended {status}: {g.body[:120].decode('utf-8', 'replace')}")
                break
        else:
            rec.fail("job", "still running 5 s after it was accepted")
    body = json.dumps({"containers": ["hello-world"], "data": {"tokens": 10}}).encode()
    s = await rec.call("POST /api/jobs/stream", args.node_port, "POST", "/api/jobs/stream", body)
    if s is not None:
        text = s.body.decode("utf-8", "replace")
        _, _, output = text.partition("\n")
        if output != "".join(f"token-{k} " for k in range(10)):
            rec.fail("POST /api/jobs/stream", f"unexpected output {output[:60]!r}")


async def normal_client(args, rec, deadline):
    """One cycle (submit, read back, stream) every `--interval` s, each on new connections."""
    tasks = []
    i = 0
    while time.monotonic() < deadline and not stop_requested(args):
        tasks.append(asyncio.create_task(normal_cycle(args, rec, i)))
        i += 1
        await asyncio.sleep(args.interval)
    await asyncio.gather(*tasks)


async def router_client(args, rec, deadline, seen):
    """`/api/v1/ips` every 3 s, `/api/v1/resources` every 15 s; notes whom the router hands out."""
    n = 0
    while time.monotonic() < deadline and not stop_requested(args):
        r = await rec.call("router GET /api/v1/ips", args.router_port, "GET",
                           "/api/v1/ips?container=hello-world&n=10", src=ROUTER_CLIENT_SRC)
        if r is not None:
            text = r.body.decode("utf-8", "replace")
            seen.add("answers")
            seen.add("real node listed" if f":{args.node_port}" in text else "real node missing")
            for port in args.hostile_ports:
                if f":{port}" in text:
                    seen.add("hostile node listed")
        if n % 5 == 0:
            await rec.call("router GET /api/v1/resources", args.router_port, "GET",
                           "/api/v1/resources", src=ROUTER_CLIENT_SRC)
        n += 1
        await asyncio.sleep(3.0)


async def client_main(args):
    t0 = time.monotonic()
    deadline = t0 + args.warmup + args.seconds
    procs = dict(p.split("=", 1) for p in args.pids)
    procs = {k: int(v) for k, v in procs.items()}
    rec = Record(args.warmup, t0)
    seen = Counter()
    rss = {}
    await asyncio.gather(
        monitor(args, procs, rss, deadline + 2, t0),
        normal_client(args, rec, deadline),
        router_client(args, rec, deadline, seen),
    )
    write_json(args.out, {"client": rec.to_json(), "router_view": seen, "procs": rss})


# ---------------------------------------------------------------------------------------------
# The hostile cases.


def slow_request_head(port):
    return f"POST /api/jobs HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode()


async def hold_connection(args, kind, idx, deadline, st):
    """Keeps one hostile connection open (reopening it when the node closes it)."""
    src = f"127.0.2.{1 + idx % 64}"
    await asyncio.sleep(args.ramp * idx / max(1, args.connections))
    while time.monotonic() < deadline and not stop_requested(args):
        try:
            async with asyncio.timeout(10):
                reader, writer = await open_conn(args.node_port, src, limit=1 << 16)
        except (OSError, TimeoutError):
            st["connect failed"].add(kind)
            await sleep_or_stop(args, deadline, 1.0)
            continue
        st["opened"].add(kind)
        st["open now"].add(kind)
        opened = time.monotonic()
        closed_by_node = False
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                if kind == "keep-alive idle":
                    writer.write(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                    status, headers = await read_head(reader)
                    await read_body(reader, headers, 0, 1 << 16)
                elif kind == "slow header":
                    writer.write(slow_request_head(args.node_port))
                elif kind == "slow body":
                    writer.write(slow_request_head(args.node_port)
                                 + b"Content-Length: 1000000\r\n\r\n{\"containers\": [")
                n = 0
                while True:
                    if kind in ("slow header", "slow body"):
                        try:
                            data = await asyncio.wait_for(reader.read(1 << 16), args.slow_every)
                        except TimeoutError:
                            n += 1
                            piece = f"X-Soak-{n}: {'v' * 8}\r\n" if kind == "slow header" else '"a", '
                            writer.write(piece.encode())
                            await writer.drain()
                            continue
                    else:
                        data = await reader.read(1 << 16)
                    if not data:
                        closed_by_node = True
                        break
        except TimeoutError:
            pass
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            closed_by_node = True
        finally:
            writer.close()
            st["open now"].add(kind, -1)
        if closed_by_node:
            st["closed by the node"].add(kind)
            st["lifetimes"].setdefault(kind, []).append(time.monotonic() - opened)
            await sleep_or_stop(args, deadline, 0.5)


async def case_connections(args, deadline, out):
    kinds = ["idle", "keep-alive idle", "slow header", "slow body"]
    st = {k: Counter() for k in ("opened", "connect failed", "closed by the node", "open now")}
    st["lifetimes"] = {}
    peak = Counter()

    holders = [asyncio.create_task(hold_connection(args, kinds[i % 4], i, deadline, st))
               for i in range(args.connections)]
    while time.monotonic() < deadline and not stop_requested(args):
        for k, v in st["open now"].items():
            peak[k] = max(peak.get(k, 0), v)
        await asyncio.sleep(0.5)
    for task in holders:
        task.cancel()
    await asyncio.gather(*holders, return_exceptions=True)
    lifetimes = {k: round(statistics.median(v), 1) for k, v in st.pop("lifetimes").items() if v}
    st.pop("open now")
    out["connections"] = {**st, "most open at once": peak,
                          "median seconds before the node closed one": lifetimes}


async def case_bodies(args, deadline, out):
    """Bodies just under and over `server.max_body_size`, two at a time."""
    counts = Counter()
    limit = args.max_body

    def filler(n):
        return json.dumps({"containers": ["hello-world"], "data": {"blob": "a" * n}}).encode()

    near, over = filler(limit - 4096), filler(limit + (1 << 20))

    async def sender(src, first):
        k = first
        while await sleep_or_stop(args, deadline, 0.2):
            name, body = (("near", near), ("over", over))[k % 2]
            k += 1
            try:
                r = await request(args.node_port, "POST", "/api/jobs", body, src=src, timeout=left(deadline, 60))
                counts.add(f"{name}: HTTP {r.status}")
            except NoAnswer as e:
                # A node that answers (429, 413) before it read the body resets the connection,
                # and the reset can discard its answer before it is read.
                early = " (answered early and reset?)" if "closed" in str(e) else ""
                counts.add(f"{name}: {e}{early}")

    await asyncio.gather(sender("127.0.0.20", 0), sender("127.0.0.20", 1))
    out["bodies"] = counts


def nested(depth):
    return "{\"a\": " * depth + "1" + "}" * depth


async def case_deep(args, deadline, out):
    """`data` nested `--depths` levels deep; an accepted one must read back."""
    counts = Counter()
    k = 0
    while await sleep_or_stop(args, deadline, 1.0):
        depth = args.depths[k % len(args.depths)]
        k += 1
        body = f'{{"containers": ["hello-world"], "data": {nested(depth)}}}'.encode()
        try:
            r = await request(args.node_port, "POST", "/api/jobs", body, src="127.0.0.21")
        except NoAnswer as e:
            counts.add(f"depth {depth}: {e}")
            continue
        if r.status != 200:
            counts.add(f"depth {depth}: refused with HTTP {r.status}")
            continue
        counts.add(f"depth {depth}: accepted")
        try:
            job = r.json()["id"]
        except (ValueError, KeyError, TypeError):
            continue
        await asyncio.sleep(1.0)
        try:
            g = await request(args.node_port, "GET", f"/api/jobs?id={job}", src="127.0.0.21")
            counts.add(f"depth {depth}: read back HTTP {g.status}")
            if g.status >= 500:
                counts.add("accepted jobs unreadable")
        except NoAnswer as e:
            counts.add(f"depth {depth}: read back: {e}")
    out["deep"] = counts


async def case_batch(args, deadline, out):
    """A 10,000-item batch, again and again."""
    items = [{"containers": ["hello-world"], "data": {"i": i}} for i in range(args.batch_items)]
    body = json.dumps(items).encode()
    runs = []
    while await sleep_or_stop(args, deadline, 2.0):
        entry = Counter()
        try:
            r = await request(args.node_port, "POST", "/api/jobs/batch", body, src="127.0.0.22",
                              timeout=left(deadline, 120), keep=64 << 20, cap=64 << 20)
            entry["status"] = r.status
            entry["seconds"] = round(r.elapsed, 1)
            if r.status == 200 and r.complete:
                for answer in r.json():
                    entry.add("items with an id" if "id" in answer else
                              f"item error: {str(answer.get('error'))[:60]}")
            else:
                entry["answer"] = r.body[:120].decode("utf-8", "replace")
        except NoAnswer as e:
            entry["answer"] = str(e)
        runs.append(entry)
    out["batch"] = runs


async def flood_offchain(args, deadline, container, src, counts):
    """Submits a job to a flooding container and follows it to its end, again and again."""
    while await sleep_or_stop(args, deadline, 0.5):
        body = json.dumps({"containers": [container], "data": {}}).encode()
        try:
            r = await request(args.node_port, "POST", "/api/jobs", body, src=src)
        except NoAnswer as e:
            counts.add(f"{container} job: {e}")
            continue
        if r.status != 200:
            counts.add(f"{container} job: HTTP {r.status}")
            continue
        job = r.json().get("id")
        started = time.monotonic()
        counts.add(f"{container} jobs accepted")
        while await sleep_or_stop(args, deadline, 2.0):
            try:
                g = await request(args.node_port, "GET", f"/api/jobs?id={job}", src=src)
                status = g.json()[0]["status"] if g.status == 200 else f"HTTP {g.status}"
            except (NoAnswer, ValueError, KeyError, IndexError, TypeError):
                continue
            if status != "running":
                error = ""
                try:
                    error = str(g.json()[0].get("result", {}).get("error", ""))[:80]
                except (ValueError, AttributeError, IndexError):
                    pass
                counts.add(f"{container} job ended {status} after ~{round(time.monotonic() - started)} s: {error}")
                break
        else:
            counts.add(f"{container} jobs still running at the end")


async def flood_stream(args, deadline, counts):
    """Streams from the endless container, reading as fast as it comes, up to a cap."""
    cap = args.flood_read_mb << 20
    while await sleep_or_stop(args, deadline, 0.5):
        body = json.dumps({"containers": ["flood-stream"], "data": {}}).encode()
        try:
            r = await request(args.node_port, "POST", "/api/jobs/stream", body, src="127.0.0.25",
                              timeout=left(deadline, 3600), keep=256, cap=cap)
        except NoAnswer as e:
            counts.add(f"stream: {e}")
            continue
        how = ("ended by the node" if r.complete else
               f"stopped by us at {args.flood_read_mb} MiB" if r.total >= cap else r.error or "cut")
        counts.add(f"stream HTTP {r.status}, {how}")
        counts.add("stream MiB read", r.total >> 20)


async def slow_stream(args, deadline, counts):
    """Streams from the endless container but reads only 64 KiB a second, for 30 s at a time:
    the node must hold the container back, not buffer what the client does not take."""
    body = json.dumps({"containers": ["flood-stream"], "data": {}}).encode()
    head = (f"POST /api/jobs/stream HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    while await sleep_or_stop(args, deadline, 0.5):
        try:
            reader, writer = await open_conn(args.node_port, "127.0.0.27", limit=1 << 16)
        except OSError as e:
            counts.add(f"slow stream: connect failed: {e.strerror or e}")
            continue
        read = 0
        try:
            writer.write(head + body)
            end = min(deadline, time.monotonic() + 30)
            while time.monotonic() < end:
                data = await asyncio.wait_for(reader.read(1 << 16), 10)
                if not data:
                    counts.add("slow stream closed by the node")
                    break
                read += len(data)
                await asyncio.sleep(1.0)
            counts.add("slow streams held")
        except (OSError, TimeoutError) as e:
            counts.add(f"slow stream: {type(e).__name__}")
        finally:
            writer.close()
            counts.add("slow stream KiB read", read >> 10)


async def big_result(args, deadline, counts):
    """A hello-world stream of 1,000,000 tokens (a 12.9 MB result) every 10 s."""
    body = json.dumps({"containers": ["hello-world"], "data": {"tokens": 1_000_000}}).encode()
    while await sleep_or_stop(args, deadline, 10.0):
        try:
            r = await request(args.node_port, "POST", "/api/jobs/stream", body, src="127.0.0.26",
                              timeout=left(deadline, 60), keep=0, cap=64 << 20)
            counts.add(f"1M-token stream HTTP {r.status}, {'whole' if r.complete else r.error}")
        except NoAnswer as e:
            counts.add(f"1M-token stream: {e}")


async def case_flood(args, deadline, out):
    counts = Counter()
    await asyncio.gather(
        flood_stream(args, deadline, counts),
        slow_stream(args, deadline, counts),
        flood_offchain(args, deadline, "flood-stream", "127.0.0.23", counts),
        flood_offchain(args, deadline, "flood-body", "127.0.0.24", counts),
        big_result(args, deadline, counts),
    )
    out["flood"] = counts


async def hostile_main(args):
    deadline = time.monotonic() + args.seconds
    out = {}
    cases = {
        "connections": case_connections,
        "flood": case_flood,
        "bodies": case_bodies,
        "deep": case_deep,
        "batch": case_batch,
    }
    chosen = [c for c in args.cases if c in cases]
    await asyncio.gather(*(cases[c](args, deadline, out) for c in chosen))
    write_json(args.out, out)


# ---------------------------------------------------------------------------------------------
# Readiness and the report.


async def wait_ready(args):
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            r = await request(args.node_port, "GET", "/health", src=READY_SRC, timeout=2)
            if r.status == 200:
                break
        except NoAnswer:
            pass
        await asyncio.sleep(0.2)
    else:
        sys.exit("soak: the node did not answer /health in time")
    while time.monotonic() < deadline:
        try:
            r = await request(args.router_port, "GET", "/api/v1/ips?container=hello-world&n=10",
                              src=READY_SRC, timeout=2)
            if r.status == 200 and f":{args.node_port}" in r.body.decode("utf-8", "replace"):
                return
        except NoAnswer:
            pass
        await asyncio.sleep(0.5)
    sys.exit("soak: the router did not list the node in time")


def fetch_stats(port):
    try:
        with socket.create_connection((HOST, port), timeout=2) as s:
            s.sendall(b"GET /__soak_stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data.split(b"\r\n\r\n", 1)[1])
    except (OSError, ValueError, IndexError):
        return {}


def ms(v):
    return "-" if v is None else f"{v * 1000:.0f} ms"


def mb(kb):
    return f"{kb / 1024:.0f} MB"


def verdict(ok):
    return "PASS" if ok else "FAIL"


def report(args):
    with open(args.client) as f:
        c = json.load(f)
    try:
        with open(args.hostile) as f:
            h = json.load(f)
    except (OSError, ValueError):
        h = {}
    client, procs, view = c["client"], c["procs"], c["router_view"]
    rows = []

    def rss_row(name, target_mb):
        p = procs.get(name, {})
        peak = p.get("peak_rss_kb", 0)
        note = f" (baseline {mb(p['baseline_rss_kb'])})" if p.get("baseline_rss_kb") else ""
        ok = peak <= target_mb * 1024
        if p.get("killed_at_ceiling"):
            k = p["killed_at_ceiling"]
            note += f"; KILLED at the {args.abort_mb} MB ceiling, {k['at'] - args.warmup:.0f} s into the soak"
            ok = False
        elif p.get("exited_at") is not None:
            note += f"; exited {p['exited_at'] - args.warmup:.0f} s into the soak"
            ok = False
        rows.append((f"{name} peak RSS", f"{mb(peak)}{note}", f"<= {target_mb} MB", ok))

    rss_row("node", args.node_target_mb)
    rss_row("router", args.router_target_mb)
    refused = sum(client["refused"].values())
    failed = sum(v for k, v in client["failed"].items())
    node_refused = sum(v for k, v in client["refused"].items() if not k.startswith("router"))
    node_failed = sum(v for k, v in client["failed"].items() if not k.startswith("router"))
    first = f", first {client['first_refusal']} s into the soak" if client["first_refusal"] is not None else ""
    rows.append(("normal client (node) refused / failed", f"{node_refused} / {node_failed}{first}", "0 / 0",
                 node_refused == 0 and node_failed == 0))
    answers = view.get("answers", 0)
    listed = view.get("real node listed", 0)
    rows.append(("router lists the real node", f"{listed} of {answers} answers"
                 + (f", hostile node listed {view['hostile node listed']} times" if view.get("hostile node listed") else ""),
                 "every answer", answers > 0 and listed == answers and not view.get("hostile node listed")))
    unreadable = h.get("deep", {}).get("accepted jobs unreadable", 0)
    if "deep" in h:
        rows.append(("accepted jobs that cannot be read back", str(unreadable), "0", unreadable == 0))

    print()
    print(f"soak: {args.seconds:.0f} s of hostile load after {args.warmup:.0f} s of baseline; cases: {', '.join(args.cases)}")
    if procs.get("node", {}).get("killed_at_ceiling"):
        print("  (the node was killed at the RSS ceiling: the soak stopped there; SOAK_CASES without "
              "the case that grew it measures the others)")
    width = max(len(r[0]) for r in rows)
    for name, figure, target, ok in rows:
        print(f"  {name:<{width}}  {figure}  [target {target}]  {verdict(ok)}")
    print()
    print("normal client latency (whole request, new connection each):")
    lat = client["latency"]
    for phase in ("baseline", "soak"):
        allv = [v for k, vs in lat.items() if k.startswith(phase) and "router" not in k for v in vs]
        print(f"  {phase:<8} all node requests: n={len(allv)} p50={ms(percentile(allv, 50))} p99={ms(percentile(allv, 99))}")
        for k in sorted(lat):
            if k.startswith(phase):
                vs = lat[k]
                print(f"  {phase:<8} {k[len(phase) + 1:]:<30} n={len(vs)} p50={ms(percentile(vs, 50))} p99={ms(percentile(vs, 99))}")
    print(f"  answered OK: {json.dumps(client['ok'])}")
    if refused:
        print(f"  refused ({refused}): {json.dumps(client['refused'])}")
    if failed:
        print(f"  failed ({failed}): {json.dumps(client['failed'])}")
    print()
    print("processes:")
    for name, p in procs.items():
        print(f"  {name}: peak RSS {mb(p['peak_rss_kb'])}, peak fds {p['peak_fds']}, peak threads {p['peak_threads']}")
        print(f"  {name} RSS every 5 s (s into the soak: MB): "
              + ", ".join(f"{t}: {m}" for t, m in p["series"]))
    print()
    print("per case:")
    for case, figures in h.items():
        if isinstance(figures, list):
            # Runs that ended alike are shown once, with how many there were.
            alike = Counter()
            for run in figures:
                alike.add(json.dumps({k: v for k, v in run.items() if k != "seconds"}, sort_keys=True))
            for text, n in alike.items():
                seconds = [run.get("seconds", 0) for run in figures
                           if json.dumps({k: v for k, v in run.items() if k != "seconds"}, sort_keys=True) == text]
                print(f"  {case}: {n} run(s), {min(seconds)}-{max(seconds)} s each: {text}")
            if not figures:
                print(f"  {case}: no run finished")
        elif case == "connections":
            for k, v in figures.items():
                print(f"  connections, {k}: {json.dumps(v)}")
        else:
            for k in sorted(figures):
                print(f"  {case}: {k}: {figures[k]}")
    for label, port in (("flood container", args.flood_port), *(("hostile node " + str(p), p) for p in args.hostile_ports)):
        if port:
            stats = fetch_stats(port)
            shown = {k: (f"{v / (1 << 20):.0f} MiB" if k.endswith("bytes") and v > 1 << 20 else v)
                     for k, v in sorted(stats.items())}
            print(f"  {label}: {json.dumps(shown)}")
    failed_rows = [r[0] for r in rows if not r[3]]
    print()
    if failed_rows:
        print(f"soak: FAIL ({'; '.join(failed_rows)})")
        return 1
    print("soak: PASS")
    return 0


# ---------------------------------------------------------------------------------------------


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind((HOST, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    sp = sub.add_parser("ports")
    sp.add_argument("n", type=int)
    sp = sub.add_parser("flood-server")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--body-bytes", type=int, default=1 << 34)
    sp = sub.add_parser("hostile-node")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--behaviour", choices=["flood", "drip"], default="flood")

    def common(sp):
        sp.add_argument("--node-port", type=int, required=True)
        sp.add_argument("--router-port", type=int, default=0)
        sp.add_argument("--hostile-ports", type=int, nargs="*", default=[])
        sp.add_argument("--seconds", type=float, default=150)
        sp.add_argument("--warmup", type=float, default=5)
        sp.add_argument("--stop-file")
        sp.add_argument("--cases", type=lambda s: s.split(","),
                        default=["connections", "flood", "bodies", "deep", "batch", "router"])

    sp = sub.add_parser("wait-ready")
    common(sp)
    sp.add_argument("--timeout", type=float, default=30)
    sp = sub.add_parser("client")
    common(sp)
    sp.add_argument("--out", required=True)
    sp.add_argument("--pids", nargs="+", default=[], help="name=PID of processes to watch")
    sp.add_argument("--interval", type=float, default=3.0)
    sp.add_argument("--abort-mb", type=int, default=1500)
    sp = sub.add_parser("hostile")
    common(sp)
    sp.add_argument("--out", required=True)
    sp.add_argument("--connections", type=int, default=2000)
    sp.add_argument("--ramp", type=float, default=5.0)
    sp.add_argument("--slow-every", type=float, default=5.0)
    sp.add_argument("--max-body", type=int, default=16 << 20)
    sp.add_argument("--depths", type=lambda s: [int(x) for x in s.split(",")], default=[124, 200])
    sp.add_argument("--batch-items", type=int, default=10_000)
    sp.add_argument("--flood-read-mb", type=int, default=256)
    sp = sub.add_parser("report")
    common(sp)
    sp.add_argument("--client", required=True)
    sp.add_argument("--hostile", required=True)
    sp.add_argument("--flood-port", type=int, default=0)
    sp.add_argument("--abort-mb", type=int, default=1500)
    sp.add_argument("--node-target-mb", type=int, default=150)
    sp.add_argument("--router-target-mb", type=int, default=100)
    args = p.parse_args()

    if args.mode == "ports":
        print(" ".join(map(str, free_ports(args.n))))
    elif args.mode == "flood-server":
        FloodHandler.body_bytes = args.body_bytes
        serve(args.port, FloodHandler, Stats())
    elif args.mode == "hostile-node":
        HostileNodeHandler.mode = args.behaviour
        serve(args.port, HostileNodeHandler, Stats())
    elif args.mode == "wait-ready":
        asyncio.run(wait_ready(args))
    elif args.mode == "client":
        raise_nofile()
        asyncio.run(client_main(args))
    elif args.mode == "hostile":
        raise_nofile()
        asyncio.run(hostile_main(args))
    elif args.mode == "report":
        sys.exit(report(args))


if __name__ == "__main__":
    main()
