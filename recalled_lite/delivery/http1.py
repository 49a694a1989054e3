"""A small HTTP/1.1 client for webhook attempts: one POST, keep-alive, nothing else.

During a delivery burst about half of the event loop's time went to httpx and httpcore
(the pool's bookkeeping, h11's pure-Python state machine, request and response objects),
and the event loop's time is what caps deliveries per second (BENCHMARKS.md). A webhook
attempt needs a fraction of what they do: one request shape (POST with a known body), no
redirects, no cookies, no proxies, no compression, no HTTP/2. This module does only that,
and parses responses with httptools (C, the parser uvicorn already uses).

It keeps the security boundary where it was: every connection is dialled by
``ssrf.GuardedBackend``, which resolves and checks the destination itself and refuses
private addresses, and errors are the same httpx exception types the sender handled
before (``ConnectError``, ``ReadError``, ``RemoteProtocolError``...), so attempt records
read the same. TLS goes through the stream's ``start_tls`` with the URL's hostname (SNI
and certificate checks use the real name).
"""

from __future__ import annotations

import ssl
import time
import typing

import httpcore
import httptools
import httpx

from .ssrf import GuardedBackend, map_exception

__all__ = ["Http1Pool", "Http1Response"]

_READ_SIZE = 64 * 1024
# A receiver could stream headers forever; h11 (what httpcore used) stops at 16 KiB too.
MAX_HEAD_BYTES = 16 * 1024


class Http1Response(typing.NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes              # at most read_limit bytes (more may have been sent)
    # What was wrong after the status line (a body on a 204, a truncated or malformed body,
    # data after the end), in plain words. The status still counts: the receiver answered.
    warning: str | None = None


class _Exchange:
    """httptools callbacks for one response."""

    __slots__ = ("parser", "headers", "body", "size", "complete", "headers_done", "extra")

    def __init__(self) -> None:
        self.parser: typing.Any = None
        self.complete = False
        self.extra = False  # bytes followed the final response
        self.on_message_begin()

    def on_message_begin(self) -> None:
        if self.complete:
            # The final response is complete and more bytes follow (a body on a 204, data
            # after `Connection: close`): keep the response, note the extra data.
            self.extra = True
            return
        # Also called again after an interim (1xx) response: only the final one counts.
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, data: bytes) -> None:
        self.body.append(data)
        self.size += len(data)

    def on_message_complete(self) -> None:
        # An interim response (100 Continue, 103 Early Hints) is skipped: the final one
        # follows on the same connection.
        if 100 <= self.parser.get_status_code() < 200:
            self.headers_done = False  # the final response's head is still to come
        else:
            self.complete = True


class _Connection:
    __slots__ = ("stream", "idle_since")

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self.stream = stream
        self.idle_since = 0.0

    def reusable(self, now: float, expiry: float) -> bool:
        # Data or EOF on an idle connection (the receiver closed it, or sent garbage)
        # means it cannot carry another request.
        return now - self.idle_since < expiry and not self.stream.get_extra_info("is_readable")


class Http1Pool:
    """Keep-alive connections to ONE subscription's endpoint. The sender caps attempts
    in flight per subscription, so the pool only keeps the idle ones."""

    def __init__(self, backend: GuardedBackend, ssl_context: ssl.SSLContext | None, *,
                 max_idle: int, keepalive_expiry: float) -> None:
        self._backend = backend
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._idle: list[tuple[tuple[bytes, bytes, int], _Connection]] = []

    async def post(self, url: httpx.URL, headers: dict[str, str], body: bytes,
                   read_limit: int, progress: list[int] | None = None) -> Http1Response:
        """POST `body` to `url`; read at most `read_limit` bytes of the response body.
        `progress`, if given, gets the status code appended as soon as the response head
        has arrived (so a timeout can say which phase it hit). Raises httpx exceptions,
        DestinationRefusedError for a refused address."""
        try:
            return await self._post(url, headers, body, read_limit, progress)
        except Exception as exc:
            mapped = map_exception(exc, None)
            if mapped is None:
                raise
            raise mapped from exc

    async def _post(self, url: httpx.URL, headers: dict[str, str], body: bytes,
                    read_limit: int, progress: list[int] | None) -> Http1Response:
        scheme, host, port = url.raw_scheme, url.raw_host, url.port
        if port is None:
            port = 443 if scheme == b"https" else 80
        origin = (scheme, host, port)
        host_header = b"[" + host + b"]" if b":" in host else host  # an IPv6 literal
        if port != (443 if scheme == b"https" else 80):
            host_header += b":%d" % port
        head = [b"POST ", url.raw_path, b" HTTP/1.1\r\nHost: ", host_header, b"\r\n"]
        for name, value in headers.items():
            head += (name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n")
        head += (b"Content-Length: ", b"%d" % len(body), b"\r\n\r\n")
        request = b"".join(head) + body
        # Built before dialling: nothing can fail between a new connection and the
        # try block that closes it.
        connection = await self._take_idle(origin)
        if connection is None:
            connection = await self._connect(scheme, host.decode("ascii"), port)
        stream = connection.stream
        keep = ended_by_close = False
        warning = None
        head_bytes = 0
        try:
            await stream.write(request)
            exchange = _Exchange()
            parser = exchange.parser = httptools.HttpResponseParser(exchange)
            while not exchange.complete:
                if exchange.headers_done and exchange.size >= read_limit:
                    break  # read no further: the connection is dropped below
                data = await stream.read(_READ_SIZE)
                if not data:
                    if exchange.headers_done:
                        if _close_delimited(exchange.headers):
                            exchange.complete = True  # the body ends with the connection
                        else:
                            warning = _cut_short(exchange)
                        ended_by_close = True
                        break
                    raise httpcore.RemoteProtocolError(
                        "the receiver closed the connection before a complete response")
                if not exchange.headers_done:
                    head_bytes += len(data)
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    raise httpcore.RemoteProtocolError("unexpected protocol upgrade") from None
                except httptools.HttpParserError as exc:
                    if not exchange.headers_done:
                        raise httpcore.RemoteProtocolError(f"malformed response: {exc}") from None
                    # The status line and headers arrived: the receiver answered. What went
                    # wrong after them is kept as a warning, never a reason to send again.
                    warning = _framing_warning(parser.get_status_code(), exchange, exc)
                    ended_by_close = True
                    if progress is not None and not progress:
                        progress.append(parser.get_status_code())
                    break
                if progress is not None and exchange.headers_done and not progress:
                    progress.append(parser.get_status_code())
                if not exchange.headers_done and head_bytes > MAX_HEAD_BYTES:
                    raise httpcore.RemoteProtocolError(
                        f"the response head is over {MAX_HEAD_BYTES} bytes")
            status = parser.get_status_code()
            # (httptools' should_keep_alive() is only meaningful inside its callbacks.)
            connection_header = exchange.headers.get("connection", "").lower()
            keep = exchange.complete and not ended_by_close and not exchange.extra and (
                connection_header == "keep-alive" if parser.get_http_version() == "1.0"
                else "close" not in connection_header)
            return Http1Response(status, exchange.headers, b"".join(exchange.body)[:max(read_limit, 0)],
                                 warning)
        finally:
            if keep:
                await self._put_idle(origin, connection)
            else:
                await stream.aclose()

    async def _take_idle(self, origin: tuple[bytes, bytes, int]) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            idle_origin, connection = self._idle.pop()  # the most recently used first
            if idle_origin == origin and connection.reusable(now, self._expiry):
                return connection
            await connection.stream.aclose()
        return None

    async def _put_idle(self, origin: tuple[bytes, bytes, int], connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        self._idle.append((origin, connection))
        while len(self._idle) > self._max_idle:
            _, oldest = self._idle.pop(0)
            await oldest.stream.aclose()

    async def _connect(self, scheme: bytes, host: str, port: int) -> _Connection:
        stream = await self._backend.connect_tcp(host, port)
        if scheme == b"https":
            context = self._ssl_context if self._ssl_context is not None else httpx.create_ssl_context()
            stream = await stream.start_tls(context, server_hostname=host)
        return _Connection(stream)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, connection in idle:
            await connection.stream.aclose()


def _close_delimited(headers: dict[str, str]) -> bool:
    return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower()


def _framing_warning(status: int, exchange: _Exchange, exc: Exception) -> str:
    if exchange.complete:
        if status in (204, 304):
            return f"a {status} response must not have a body, but the receiver sent one"
        return "the receiver sent more data after the end of the response"
    return f"the response body is malformed ({str(exc).rstrip('.').lower() or 'unparseable'})"


def _cut_short(exchange: _Exchange) -> str:
    length = exchange.headers.get("content-length")
    if length is not None:
        return (f"the response body was cut short: the receiver closed the connection after "
                f"{exchange.size} of {length} bytes")
    return "the chunked response body was cut short: the receiver closed the connection before its end"
