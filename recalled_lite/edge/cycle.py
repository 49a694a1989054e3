"""One request and its response: the ASGI `receive` / `send` channel of the HTTP layer.

The connection (edge/protocol.py) feeds the request body in and is told when the response is
done; the cycle knows nothing about parsing. Body problems the connection finds (a body too slow,
a chunk too large, broken chunked framing) reach the application as an exception raised by
`receive()`: the application answers them through its own error handling, so they get the
request id, the access line and the error shape like any other error.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

from ..errors import APIError, InternalError
from .replies import STATUS_LINE, error_body, error_headers

if TYPE_CHECKING:
    from .protocol import EdgeProtocol

log = logging.getLogger("recalled_lite.edge")

_BAD_HEADER_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_HEADER_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The body buffered for an application that is not reading it is capped at this; past it the
# connection stops reading from the socket until the application asks for more.
HIGH_WATER = 65536


class RequestCycle:
    __slots__ = (
        "conn", "scope", "keep_alive", "more_body", "body_error", "disconnected",
        "response_started", "response_complete", "waiting_for_100_continue",
        "_parts", "_buffered", "_final_sent", "_waiter", "_chunked", "_length_left", "_head",
    )

    def __init__(self, conn: EdgeProtocol, scope: dict[str, Any], keep_alive: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.more_body = True
        self.body_error: APIError | None = None
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.waiting_for_100_continue = False
        self._parts: list[bytes] = []
        self._buffered = 0
        self._final_sent = False
        self._waiter: asyncio.Future | None = None
        self._chunked: bool | None = None
        self._length_left = 0
        # A fixed-length response's head, held until its first body message (which Starlette
        # sends right after the start) so that head and body leave in one send(), not two.
        self._head: bytes | None = None

    # -- fed by the connection --------------------------------------------------------------

    def add_body(self, data: bytes) -> None:
        self._parts.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self.conn.pause_reading()
            self._wake()
        # Otherwise the application waits for the end of the body (or the high-water mark): a
        # body trickled a byte at a time then costs one read each, not a task switch each.

    def end_body(self) -> None:
        self.more_body = False
        self.waiting_for_100_continue = False
        self._wake()

    def fail_body(self, error: APIError) -> None:
        self.body_error = error
        self._wake()

    def lose_connection(self) -> None:
        if not self.response_complete:
            self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self.conn.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- run the application ----------------------------------------------------------------

    async def run(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:  # the last resort: the application's middleware answers first
            log.error("exception in ASGI application", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self.conn.abort()
        else:
            if result is not None:
                log.error("ASGI callable returned %r instead of None", result)
                self.conn.abort()
            elif not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting a response")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                log.error("ASGI callable returned without completing its response")
                self.conn.abort()

    async def _send_500(self) -> None:
        error = InternalError("internal error; see the server log")
        body = error_body(error)
        await self.send({"type": "http.response.start", "status": 500,
                         "headers": [*error_headers(error, body), (b"connection", b"close")]})
        await self.send({"type": "http.response.body", "body": body})

    # -- ASGI -------------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if self.waiting_for_100_continue:
            self.waiting_for_100_continue = False
            self.conn.write(_CONTINUE)
        while True:
            if self.disconnected or self.response_complete:
                return {"type": "http.disconnect"}
            if self.body_error is not None:
                raise self.body_error
            if self._parts or not (self.more_body or self._final_sent):
                parts = self._parts
                body = parts[0] if len(parts) == 1 else b"".join(parts)
                self._parts = []
                self._buffered = 0
                more = self.more_body
                if more:
                    self.conn.resume_reading()
                else:
                    self._final_sent = True
                return {"type": "http.request", "body": body, "more_body": more}
            if self.more_body:
                self.conn.resume_reading()
            await self._wait()

    async def send(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            self.response_started = True
            self.waiting_for_100_continue = False
            self._write_head(message["status"], message.get("headers", ()))
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"expected ASGI message 'http.response.body', got {kind!r}")
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            head = self._head
            out = [head] if head is not None else []
            self._head = None
            if self.scope["method"] == "HEAD":
                self._length_left = 0
            elif self._chunked:
                if body:
                    out += (b"%x\r\n" % len(body), body, b"\r\n")
                if not more_body:
                    out.append(b"0\r\n\r\n")
            else:
                if len(body) > self._length_left:
                    raise RuntimeError("response content longer than Content-Length")
                self._length_left -= len(body)
                if body:
                    out.append(body)
            if out:
                conn.write(out[0] if len(out) == 1 else b"".join(out))
            if not more_body:
                if self._length_left:
                    raise RuntimeError("response content shorter than Content-Length")
                self.response_complete = True
                self._wake()
                conn.response_done(self)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} after the response was complete")

    def _write_head(self, status: int, headers: Any) -> None:
        conn = self.conn
        out = [STATUS_LINE[status]]
        for name, value in conn.server_state.default_headers:
            out += (name, b": ", value, b"\r\n")
        closing = False
        for name, value in headers:
            if _BAD_HEADER_NAME.search(name):
                raise RuntimeError("invalid HTTP header name")
            if _BAD_HEADER_VALUE.search(value):
                raise RuntimeError("invalid HTTP header value")
            name = name.lower()
            if name == b"content-length" and self._chunked is None:
                self._length_left = int(value)
                self._chunked = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self._length_left = 0
                self._chunked = True
            elif name == b"connection" and b"close" in [t.strip() for t in value.lower().split(b",")]:
                self.keep_alive = False
                closing = True
            out += (name, b": ", value, b"\r\n")
        if self.keep_alive and not conn.may_keep_alive(self):
            self.keep_alive = False
        if not self.keep_alive and not closing:
            out.append(b"connection: close\r\n")
        if self._chunked is None and self.scope["method"] != "HEAD" and status not in (204, 304):
            self._chunked = True
            out.append(b"transfer-encoding: chunked\r\n")
        out.append(b"\r\n")
        if self._chunked:
            conn.write(b"".join(out))  # a stream: its head goes now, whenever its body comes
        else:
            self._head = b"".join(out)
