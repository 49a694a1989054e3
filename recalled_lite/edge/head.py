"""One request head: where it ends, what httptools makes of it, and the ASGI scope it gives.

The head ends at the first empty line (CRLF CRLF: the strict parser accepts no other line end),
so exactly the head's bytes are fed to httptools and the parser never sees a body. That is what
makes an `Upgrade` harmless (httptools would stop at it and leave the body to be parsed as the
next request) and what lets the connection read bodies by its own rules (edge/framing.py).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import httptools

from ..errors import APIError, HeadersTooLarge, NotImplementedByServer, URITooLong, ValidationError
from .framing import body_framing
from .settings import EdgeSettings

_HEAD_END = b"\r\n\r\n"
# Raw head bytes allowed beyond the URL and header caps (request line, ": " and CRLFs); more than
# that is a head made of framing rather than content, refused before it is buffered further.
_FRAMING_ALLOWANCE = 8192


class HeadRefused(Exception):
    """The head is answered with `error` and the connection closed."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.message)
        self.error = error


class RequestHead:
    """Fed the bytes of a connection until its head is complete (then `scope`, `keep_alive`,
    `body_length` (None = chunked) and `expect_continue` are set)."""

    def __init__(self, settings: EdgeSettings, base_scope: dict[str, Any]) -> None:
        self.settings = settings
        self.base_scope = base_scope
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.seen = False            # a byte of the request line has arrived
        self.complete = False
        self.scope: dict[str, Any] = {}
        self.keep_alive = True
        self.body_length: int | None = 0
        self.expect_continue = False
        self._raw = 0
        self._header_bytes = 0
        self._tail = b""
        self._te: list[bytes] = []
        self._cl: list[bytes] = []

    def feed(self, data: bytes) -> bytes | None:
        """Consume head bytes; returns what follows the head once it is complete, else None.
        Raises HeadRefused."""
        while data:
            tail = self._tail
            found = (tail + data[:3]).find(_HEAD_END) if tail else -1
            if found >= 0:  # the empty line began in the previous piece
                end = found + 4 - len(tail)
            else:
                end = data.find(_HEAD_END)
                if end >= 0:
                    end += 4
            piece = data if end < 0 or end == len(data) else data[:end]
            self._raw += len(piece)
            settings = self.settings
            if self._raw > settings.max_url_bytes + settings.max_header_bytes + _FRAMING_ALLOWANCE:
                raise HeadRefused(HeadersTooLarge(
                    f"the request head is larger than the {settings.max_header_bytes}-byte header limit allows",
                    {"limit": settings.max_header_bytes}))
            self._parse(piece)
            if end < 0:
                self._tail = data[-3:] if len(data) >= 3 else (tail + data)[-3:]
                return None
            data = data[end:] if end < len(data) else b""
            self._tail = b""
            if self.complete:
                return data
            # Only empty lines so far (allowed before a request line): go on with the rest.
        return None

    def _parse(self, piece: bytes) -> None:
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            pass  # an upgrade we do not perform: the head is parsed, the request is plain HTTP
        except httptools.HttpParserError as exc:
            self.release()
            context = exc.__context__
            raise HeadRefused(context.error if isinstance(context, HeadRefused) else _parser_error(exc)) from None
        if self.complete:
            self.release()

    def release(self) -> None:
        """Drop the parser: it holds our bound methods, so head and parser form a reference cycle
        that only the cyclic GC would free (a GC pause every few thousand requests)."""
        self.parser = None  # type: ignore[assignment]

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.seen = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.settings.max_url_bytes:
            raise HeadRefused(URITooLong(f"the URL is longer than {self.settings.max_url_bytes} bytes",
                                         {"limit": self.settings.max_url_bytes}))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self.settings.max_header_bytes:
            raise HeadRefused(HeadersTooLarge(f"the headers are larger than {self.settings.max_header_bytes} bytes",
                                              {"limit": self.settings.max_header_bytes}))
        name = name.lower()
        if name == b"content-length":
            self._cl.append(value)
        elif name == b"transfer-encoding":
            self._te.append(value)
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise HeadRefused(ValidationError(f"HTTP/{version} is not supported; use HTTP/1.1",
                                              {"field": "request"}))
        method = parser.get_method().decode("ascii")
        if method == "CONNECT":
            raise HeadRefused(NotImplementedByServer("CONNECT is not supported: this is not a proxy",
                                                     {"field": "method"}))
        try:
            self.body_length = body_framing(version, self._te, self._cl)
        except APIError as error:
            raise HeadRefused(error) from None
        try:
            parsed = httptools.parse_url(self.url)
            raw_path = parsed.path
            path = raw_path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            raise HeadRefused(ValidationError("the request target is not a valid URL", {"field": "url"})) from None
        if "%" in path:
            path = urllib.parse.unquote(path)
        self.keep_alive = parser.should_keep_alive()
        root_path = self.base_scope["root_path"]
        scope = self.base_scope.copy()
        scope["state"] = scope["state"].copy()  # the lifespan state, one copy per request
        scope["http_version"] = version
        scope["headers"] = self.headers
        scope["method"] = method
        scope["path"] = root_path + path
        scope["raw_path"] = root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed.query or b""
        self.scope = scope
        self.complete = True


def _parser_error(exc: httptools.HttpParserError) -> APIError:
    reason = str(exc)
    if "Transfer-Encoding" in reason:
        if "Content-Length" in reason:
            return ValidationError("a request may not have both Transfer-Encoding and Content-Length",
                                   {"field": "content-length"})
        return NotImplementedByServer("only the chunked transfer coding is implemented, once and last",
                                      {"field": "transfer-encoding", "supported": ["chunked"]})
    if "Content-Length" in reason:
        return ValidationError(f"invalid Content-Length: {reason}", {"field": "content-length"})
    return ValidationError("invalid HTTP request", {"field": "request", "reason": reason})
