"""Slow clients (slowloris) are cut off at a deadline and cannot starve others; oversized heads and
garbage get the JSON error shape. The server's own protocol class does it
(recalled_lite/edge/): uvicorn has no deadline for reading a request head."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time

import httpx

CONFIG = "[server]\nheader_timeout_seconds = 2.0\nmax_url_bytes = 4096\nmax_header_bytes = 8192\n"
SLOW = 200


async def _trickle(port: int, started: asyncio.Event, result: list) -> None:
    """Send a request head one byte every 0.25 s, for at most 8 s; record what the server did."""
    # Timed from before the connect: the server's deadline runs from its accept, which can come
    # well before this task resumes with 200 connections opening at once.
    opened = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /v1/events HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    writer.write(head[:10])
    await writer.drain()
    started.set()
    answer = b""
    try:
        for byte in head[10:]:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), timeout=0.25)
            except asyncio.TimeoutError:
                chunk = None
            if chunk:
                answer += chunk
                answer += await asyncio.wait_for(reader.read(), timeout=2)  # to EOF
                break
            if chunk == b"":  # closed without an answer
                break
            if time.monotonic() - opened > 8:
                break
            writer.write(bytes([byte]))
            await writer.drain()
    except (ConnectionError, asyncio.TimeoutError):
        pass
    result.append((time.monotonic() - opened, answer))
    writer.close()


def test_200_slow_connections_are_cut_off_and_a_normal_client_keeps_its_latency(make_server):
    srv = make_server("slow", config_text=CONFIG)
    key = srv.key

    async def run():
        async with httpx.AsyncClient(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}) as c:
            baseline = []
            for _ in range(20):
                t = time.perf_counter()
                assert (await c.post("/v1/events", json={"action": "slow.base"})).status_code == 200
                baseline.append(time.perf_counter() - t)
            results: list = []
            events = [asyncio.Event() for _ in range(SLOW)]
            tasks = [asyncio.create_task(_trickle(srv.port, events[i], results)) for i in range(SLOW)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout=10)
            during = []
            deadline = time.monotonic() + 3.0  # while every slow client is still trickling
            while time.monotonic() < deadline:
                t = time.perf_counter()
                r = await c.post("/v1/events", json={"action": "slow.during"})
                during.append(time.perf_counter() - t)
                assert r.status_code == 200
                await asyncio.sleep(0.02)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
            return baseline, during, results

    baseline, during, results = asyncio.run(run())
    assert len(results) == SLOW
    for elapsed, answer in results:
        # cut off at the 2 s deadline (not at the 8 s the client would have gone on for)
        assert 1.5 <= elapsed <= 4.5, elapsed
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 408 Request Timeout", answer[:200]
        head, _, body = rest.partition(b"\r\n\r\n")
        assert b"x-request-id: req_" in head and b"connection: close" in head
        assert json.loads(body)["error"]["code"] == "REQUEST_TIMEOUT"
    assert len(during) >= 20
    # the normal client is not starved: its median stays in the same league as without the crowd
    assert statistics.median(during) < max(0.25, 10 * statistics.median(baseline)), (
        statistics.median(baseline), statistics.median(during))
    assert max(during) < 2.0


def _raw(port: int, data: bytes, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            answer += chunk
        return answer


def _error(answer: bytes) -> tuple[int, str]:
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"]


def test_idle_connection_is_closed_at_the_deadline(make_server):
    srv = make_server("idle", config_text=CONFIG)
    started = time.monotonic()
    answer = _raw(srv.port, b"")
    assert 1.5 <= time.monotonic() - started <= 4.5
    assert _error(answer) == (408, "REQUEST_TIMEOUT")


def test_oversized_and_garbage_heads_get_json_errors(make_server):
    srv = make_server("heads", config_text=CONFIG)
    long_url = b"GET /v1/events?q=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _error(_raw(srv.port, long_url)) == (414, "URI_TOO_LONG")
    big_headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(10)) + b"\r\n"
    assert _error(_raw(srv.port, big_headers)) == (431, "HEADERS_TOO_LARGE")
    garbage = _raw(srv.port, b"\x00\x01GARBAGE\r\n\r\n")
    assert _error(garbage) == (400, "VALIDATION_ERROR")
    assert b"x-request-id: req_" in garbage
    # a normal request under the caps still works, and keep-alive still works
    with srv.client() as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/events", params={"q": "a" * 1000}).status_code == 200
        assert c.get("/healthz").status_code == 200
