"""The bytes of the responses the HTTP layer writes itself (no application involved).

They use the one error shape, `{"error": {"code", "message", "details"}}` with `details` always
present, and carry an `x-request-id` like every response of the application does.
"""

from __future__ import annotations

import http
from typing import Iterable

import msgspec

from ..errors import APIError
from ..ids import new_id

_encode = msgspec.json.Encoder().encode


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINE = {status: _status_line(status) for status in range(100, 600)}


def error_body(error: APIError) -> bytes:
    return _encode({"error": {"code": error.code, "message": error.message,
                              "details": error.details if error.details is not None else {}}})


def error_headers(error: APIError, body: bytes, request_id: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """Headers of an error response (lower-case names), Connection excepted."""
    headers = [(b"content-type", b"application/json"),
               (b"content-length", b"%d" % len(body)),
               (b"x-request-id", request_id or new_id("req").encode())]
    for name, value in error.headers.items():
        lowered = name.lower().encode("latin-1")
        if lowered != b"connection":
            headers.append((lowered, value.encode("latin-1")))
    return headers


def error_reply(error: APIError, default_headers: Iterable[tuple[bytes, bytes]], request_id: bytes,
                *, close: bool = True) -> bytes:
    """A whole error response, ready to write."""
    body = error_body(error)
    out = [STATUS_LINE[error.status]]
    for name, value in (*default_headers, *error_headers(error, body, request_id)):
        out += (name, b": ", value, b"\r\n")
    if close:
        out.append(b"connection: close\r\n")
    out += (b"\r\n", body)
    return b"".join(out)
