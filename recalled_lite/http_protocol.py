"""uvicorn's httptools protocol with the limits uvicorn lacks: a deadline for the request head, and
caps on the URL and header sizes. Errors it answers itself use the one JSON error shape.

uvicorn (0.54) has a keep-alive timeout between requests but no deadline for reading a request's
head: a client that opens a connection and sends nothing, or trickles one header byte every few
seconds, holds its connection (and the memory of what it sent) forever. Hundreds of them are a
slowloris attack. Here every connection must deliver a complete request head within
`server.header_timeout_seconds` of its first byte (or of the connection opening); otherwise it is
answered 408 and closed. The check is one timer per connection, armed when a head starts and
cancelled when it completes, so it costs nothing per byte and nothing once a request is in.

A URL over `server.max_url_bytes` gets 414, headers over `server.max_header_bytes` (all names
and values together) get 431, both before more is buffered. An unparseable request gets a JSON 400
instead of uvicorn's plain-text one. Bodies are bounded by size (`server.max_request_bytes`), not
by time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .ids import new_id

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 414: b"URI Too Long",
            431: b"Request Header Fields Too Large"}


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_url_bytes: int = 16 * 1024
    max_header_bytes: int = 64 * 1024

    _deadline: asyncio.TimerHandle | None = None
    _head_bytes: int = 0
    _refused: _Refused | None = None

    # -- the head deadline -------------------------------------------------------------------

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._send_error(408, "REQUEST_TIMEOUT",
                             f"the request head did not arrive within {self.header_timeout:g} s")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is cut off too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._deadline is None:  # the next request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    # -- size caps --------------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.max_url_bytes:
            raise _Refused(414, "URI_TOO_LONG", f"the URL is longer than {self.max_url_bytes} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > self.max_header_bytes:
            raise _Refused(431, "HEADERS_TOO_LARGE", f"the headers are larger than {self.max_header_bytes} bytes")
        super().on_header(name, value)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # as uvicorn does
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            refused = exc.__context__ if isinstance(exc.__context__, _Refused) else None
            if refused is not None:
                self._send_error(refused.status, refused.code, refused.message)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self._send_error(400, "VALIDATION_ERROR", "invalid HTTP request", {"field": "request"})

    def send_400_response(self, msg: str) -> None:
        self._send_error(400, "VALIDATION_ERROR", msg, {"field": "request"})

    def _send_error(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        self._disarm()
        error = {"code": code, "message": message, "details": details if details is not None else {}}
        body = msgspec.json.encode({"error": error})
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error"))]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n",
                 b"content-length: %d\r\n" % len(body),
                 b"x-request-id: " + new_id("req").encode() + b"\r\n",
                 b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(head))
        self.transport.close()


def protocol_class(header_timeout: float, max_url_bytes: int, max_header_bytes: int) -> type:
    """The protocol class for uvicorn.Config(http=...), with this server's limits."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {
        "header_timeout": header_timeout,
        "max_url_bytes": max_url_bytes,
        "max_header_bytes": max_header_bytes,
    })
