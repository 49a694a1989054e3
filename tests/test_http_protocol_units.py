"""Unit tests of the connection protocol with an in-memory transport (recalled_lite/edge/):
what a real socket cannot show cheaply. The server-level tests are tests/test_http_edge.py."""

from __future__ import annotations

import asyncio
import gc

import uvicorn
from uvicorn.server import ServerState

from recalled_lite.edge import EdgeSettings, protocol_class


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


async def echo_app(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


REQUESTS = [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\nhello",
]


class CountingTransport(MemoryTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data) -> None:
        self.writes.append(bytes(data))
        super().write(data)


def _serve(app):
    config = uvicorn.Config(app, log_config=None, access_log=False)
    config.load()
    state = ServerState()
    protocol = protocol_class(EdgeSettings())(config=config, server_state=state, app_state={})
    transport = CountingTransport()
    protocol.connection_made(transport)
    return protocol, state, transport


def test_requests_leave_no_reference_cycles_behind():
    # A cycle per request (the head and its parser, say) is freed only by the cyclic GC, whose
    # pauses then show up as a p99 several times the p50.
    async def main():
        protocol, state, transport = _serve(echo_app)
        gc.collect()
        gc.disable()
        try:
            for _ in range(50):
                for wire in REQUESTS:
                    protocol.data_received(wire)
                    while state.tasks:
                        await asyncio.sleep(0)
            garbage = gc.collect()
        finally:
            gc.enable()
        return garbage, bytes(transport.written)

    garbage, written = asyncio.run(main())
    assert written.count(b"HTTP/1.1 200 OK") == 50 * len(REQUESTS)
    assert written.count(b"hello") == 50 * 3
    assert garbage == 0


def test_a_fixed_length_response_leaves_in_one_write_head_and_body_together():
    # Two send()s per response cost a syscall each on the intake path; the client sees no
    # difference, the server one syscall less per request.
    async def main():
        protocol, state, transport = _serve(echo_app)
        for wire in (REQUESTS[1], b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"):
            protocol.data_received(wire)
            while state.tasks:
                await asyncio.sleep(0)
        return transport.writes

    post, head = asyncio.run(main())
    assert post.startswith(b"HTTP/1.1 200 OK\r\n") and post.endswith(b"\r\n\r\nhello")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"content-length: 0\r\n\r\n")


def test_a_streamed_response_sends_its_head_before_its_first_chunk_exists():
    # A stream (an export, say) may take a while to make its first chunk; its client must see
    # the status and headers at once, not when the first chunk is ready.
    release = None

    async def streaming_app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson")]})
        await release.wait()
        await send({"type": "http.response.body", "body": b"{}\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def main():
        nonlocal release
        release = asyncio.Event()
        protocol, state, transport = _serve(streaming_app)
        protocol.data_received(REQUESTS[0])
        for _ in range(5):
            await asyncio.sleep(0)
        before = list(transport.writes)
        release.set()
        while state.tasks:
            await asyncio.sleep(0)
        return before, bytes(transport.written)

    before, written = asyncio.run(main())
    assert len(before) == 1 and before[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked\r\n\r\n" in before[0]
    assert written.endswith(b"3\r\n{}\n\r\n0\r\n\r\n")
