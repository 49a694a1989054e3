"""Webhook receiver for the delivery benchmark: a raw asyncio (uvloop) + httptools
HTTP/1.1 server, so it is cheap enough not to be the bottleneck.

Every POST to /hook/<anything> is answered 200 and recorded: arrival time
(time.time_ns), webhook-id header, body type, the event's receivedAt/occurredAt
and, if present, metadata.bench_sent_ns (the client's send time). Control:
    GET  /_stats  -> JSON summary with per-delivery latencies
    GET  /_count  -> {"total", "created"} (cheap, for polling)
    POST /_reset  -> forget everything recorded

    python -m bench.receiver --port 9000      (prints "READY <port>" on stdout)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime
from typing import Any

import httptools
import msgspec


class _Event(msgspec.Struct):
    id: str | None = None
    receivedAt: str | None = None
    occurredAt: str | None = None
    metadata: dict[str, Any] | None = None


class _Msg(msgspec.Struct):
    type: str | None = None
    event: _Event | None = None


_decode = msgspec.json.Decoder(_Msg).decode
_encode = msgspec.json.encode

# (arrival_ns, path, webhook_id, type, event_id, receivedAt, occurredAt, sent_ns)
RECORDS: list[tuple] = []
BAD_BODIES = 0

_OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


def _iso_ms(s: str | None) -> float | None:
    if not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return None


def stats() -> dict:
    by_type: dict[str, int] = {}
    created = []
    ids = set()
    for rec in RECORDS:
        by_type[rec[3] or "?"] = by_type.get(rec[3] or "?", 0) + 1
        if rec[3] == "event.created":
            created.append(rec)
            ids.add((rec[1], rec[2]))
    lat_received = []
    lat_sent = []
    for arrival_ns, _p, _w, _t, _e, recv, _occ, sent_ns in created:
        r = _iso_ms(recv)
        if r is not None:
            lat_received.append(round(arrival_ns / 1e6 - r, 3))
        if sent_ns:
            lat_sent.append(round((arrival_ns - sent_ns) / 1e6, 3))
    arrivals = [rec[0] for rec in created]
    return {
        "total": len(RECORDS), "by_type": by_type, "created": len(created),
        "created_unique": len(ids), "bad_bodies": BAD_BODIES,
        "first_arrival_ns": min(arrivals) if arrivals else None,
        "last_arrival_ns": max(arrivals) if arrivals else None,
        "latency_received_ms": lat_received, "latency_sent_ms": lat_sent,
    }


class Proto(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.webhook_id = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body, self.webhook_id = b"", [], None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"webhook-id":
            self.webhook_id = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        global BAD_BODIES
        now = time.time_ns()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if path.startswith(b"/hook") and method == b"POST":
            try:
                msg = _decode(b"".join(self.body))
                ev = msg.event or _Event()
                sent = (ev.metadata or {}).get("bench_sent_ns")
                RECORDS.append((now, path, self.webhook_id, msg.type, ev.id,
                                ev.receivedAt, ev.occurredAt,
                                sent if isinstance(sent, int) else None))
            except msgspec.DecodeError:
                BAD_BODIES += 1
            resp = _OK
        elif path == b"/_stats":
            body = _encode(stats())
            resp = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body)
        elif path == b"/_count":
            created = sum(1 for r in RECORDS if r[3] == "event.created")
            body = _encode({"total": len(RECORDS), "created": created})
            resp = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body)
        elif path == b"/_reset":
            RECORDS.clear()
            BAD_BODIES = 0
            resp = _OK
        elif path == b"/readyz":
            resp = _OK
        else:
            resp = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
        self.transport.write(resp)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Proto, host, port, backlog=1024)
    print(f"READY {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
