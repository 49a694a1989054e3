"""Webhook delivery scenario (spec §5.2, §7): a local receiver subprocess, one
subscription fed at a steady 500 events/s for latency, then 16 subscriptions fed
a burst through the batch API for deliveries/s."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from . import dataset
from .procs import ServerFailed, free_port, json_or_none, progress, request, short

REPO = Path(__file__).resolve().parent.parent


class Receiver:
    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", "--port", str(self.port)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode().strip()  # "READY <port>" or EOF
        if not line.startswith("READY"):
            self.stop()
            raise ServerFailed(f"webhook receiver failed to start: {log_path.read_text()[-500:]}")

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{i}"

    def get(self, path: str) -> dict:
        status, _, body = request(self.port, "GET", path, timeout=30)
        return msgspec.json.decode(body)

    def reset(self) -> None:
        request(self.port, "POST", "/_reset")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))], 2)


def wait_for(receiver: Receiver, expected: int, timeout: float, stall: float = 10.0) -> dict:
    """Poll the receiver until `expected` event.created deliveries arrived, the
    deadline passes, or nothing new arrived for `stall` seconds."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = receiver.get("/_count")["created"]
        if n >= expected:
            break
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > stall:
            break
        time.sleep(0.1)
    return receiver.get("/_stats")


async def _paced(port: int, key: str, rate: float, count: int, conns: int = 16) -> dict:
    """Send `count` single events at `rate`/s over keep-alive connections (raw
    HTTP/1.1 on asyncio streams; cheap). Each event carries metadata.bench_sent_ns."""
    enc = msgspec.json.encode
    head = (f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n").encode()
    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(conns):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    statuses: dict[int, int] = {}
    lat: list[float] = []
    waited_for_conn = 0

    async def one(conn, i: int) -> None:
        reader, writer = conn
        t = time.time_ns()
        body = enc({"action": dataset.ACTIONS[i % len(dataset.ACTIONS)],
                    "organization": dataset.org(i % dataset.N_ORGS),
                    "actor": {"type": "user", "id": dataset.actor_id(i % dataset.N_ACTORS)},
                    "metadata": {"bench_seq": i, "bench_sent_ns": t}})
        writer.write(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        status_line = await reader.readuntil(b"\r\n")
        hdrs = await reader.readuntil(b"\r\n\r\n")
        status = int(status_line.split()[1])
        length, chunked = 0, False
        for h in hdrs.split(b"\r\n"):
            k, _, v = h.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        if chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await reader.readexactly(length)
        lat.append((time.time_ns() - t) / 1e6)
        statuses[status] = statuses.get(status, 0) + 1
        idle.put_nowait(conn)

    loop = asyncio.get_running_loop()
    tasks = set()
    t0 = loop.time()
    for i in range(count):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle.empty():
            waited_for_conn += 1
        conn = await asyncio.wait_for(idle.get(), 30)
        task = asyncio.create_task(one(conn, i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    elapsed = loop.time() - t0
    while not idle.empty():
        _, w = idle.get_nowait()
        w.close()
    return {"sent": count, "seconds": round(elapsed, 2), "achieved_rate": round(count / elapsed, 1),
            "statuses": {str(k): v for k, v in statuses.items()},
            "post_p50_ms": _pct(lat, 50), "post_p99_ms": _pct(lat, 99),
            "sender_waited_for_connection": waited_for_conn}


def paced_send(port: int, key: str, rate: float, count: int) -> dict:
    try:
        import uvloop
        return uvloop.run(_paced(port, key, rate, count))
    except ImportError:
        return asyncio.run(_paced(port, key, rate, count))


def _create_sub(port: int, key: str, url: str) -> dict:
    status, _, body = request(port, "POST", "/v1/event_subscriptions",
                              msgspec.json.encode({"url": url, "event_types": [],
                                                   "description": "bench"}), key=key)
    if status in (404, 405):
        raise NotImplementedError("POST /v1/event_subscriptions -> %d" % status)
    if status not in (200, 201):
        raise RuntimeError(f"POST /v1/event_subscriptions -> {status}: {short(body)}")
    obj = json_or_none(body) or {}
    return obj.get("data", obj)


def _wait_valid(port: int, key: str, ids: list[str], timeout: float = 15.0) -> dict[str, str]:
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sid in ids:
            if states.get(sid) == "valid":
                continue
            status, _, body = request(port, "GET", f"/v1/event_subscriptions/{sid}", key=key)
            obj = json_or_none(body) or {}
            states[sid] = (obj.get("data", obj) or {}).get("state", f"HTTP {status}")
        if all(s == "valid" for s in states.values()):
            break
        time.sleep(0.2)
    return states


def run(server, key: str, receiver: Receiver, *, rate: float, rate_seconds: float,
        burst_events: int, burst_subs: int) -> dict:
    """Returns {"latency": {...}, "throughput": {...}}; raises NotImplementedError when
    the subscriptions route does not exist."""
    port = server.port
    out: dict = {}
    # -- phase 1: one subscription, steady rate -----------------------------
    sub = _create_sub(port, key, receiver.url(0))
    ids = [sub["id"]]
    states = _wait_valid(port, key, ids)
    progress(f"webhooks: subscription {ids[0]} state={states.get(ids[0])}; "
             f"sending {int(rate * rate_seconds)} events at {rate:.0f}/s")
    receiver.reset()
    server.phase_reset()
    count = int(rate * rate_seconds)
    sender = paced_send(port, key, rate, count)
    ok = sender["statuses"].get("200", 0)
    st = wait_for(receiver, ok, timeout=30 + rate_seconds)
    lr, ls = st["latency_received_ms"], st["latency_sent_ms"]
    out["latency"] = {
        "events_sent": count, "events_acknowledged": ok, "sender": sender,
        "delivered": st["created"], "delivered_unique": st["created_unique"],
        "p50_ms_from_receivedAt": _pct(lr, 50), "p99_ms_from_receivedAt": _pct(lr, 99),
        "p50_ms_from_client_send": _pct(ls, 50), "p99_ms_from_client_send": _pct(ls, 99),
        "mean_ms_from_receivedAt": round(statistics.fmean(lr), 2) if lr else None,
        "subscription_state": states.get(ids[0]), "peak_rss_mb": server.phase_peak_mb(),
    }
    # -- phase 2: many subscriptions, burst --------------------------------
    for i in range(1, burst_subs):
        ids.append(_create_sub(port, key, receiver.url(i))["id"])
    states = _wait_valid(port, key, ids)
    n_valid = sum(1 for s in states.values() if s == "valid")
    expected = burst_events * len(ids)
    progress(f"webhooks: {len(ids)} subscriptions ({n_valid} valid); burst of {burst_events} "
             f"events -> {expected} deliveries")
    receiver.reset()
    server.phase_reset()
    t0_ns = time.time_ns()
    sent = 0
    seed = 0
    while sent < burst_events:
        size = min(1000, burst_events - sent)
        status, _, body = request(port, "POST", "/v1/events/batch",
                                  dataset.batch_body(50_000 + seed, size), key=key, timeout=120)
        seed += 1
        if status != 200:
            raise RuntimeError(f"POST /v1/events/batch -> {status}: {short(body)}")
        sent += size
    post_s = (time.time_ns() - t0_ns) / 1e9
    st = wait_for(receiver, expected, timeout=max(20.0, 2 * expected / 2000))
    got = st["created"]
    span = ((st["last_arrival_ns"] or t0_ns) - t0_ns) / 1e9
    out["throughput"] = {
        "subscriptions": len(ids), "subscriptions_valid": n_valid,
        "events": burst_events, "expected_deliveries": expected, "delivered": got,
        "delivered_unique": st["created_unique"], "intake_seconds": round(post_s, 2),
        "seconds_first_post_to_last_delivery": round(span, 2),
        "deliveries_per_s": round(got / span, 1) if span > 0 else None,
        "p50_ms_from_receivedAt": _pct(st["latency_received_ms"], 50),
        "p99_ms_from_receivedAt": _pct(st["latency_received_ms"], 99),
        "complete": got >= expected, "peak_rss_mb": server.phase_peak_mb(),
    }
    return out
