"""How long a request body is: the rules of RFC 9112 §6, and a chunked-body decoder.

The protocol reads the body itself (httptools only parses heads), so that a body is always
consumed as a body whatever its head says, and so that a chunk can be refused by its declared
size before any of it is read. Pure code: no sockets, no event loop.
"""

from __future__ import annotations

from typing import Callable

from ..errors import APIError, NotImplementedByServer, RequestTooLarge, ValidationError

_HEX_DIGITS = b"0123456789abcdefABCDEF"
_CRLF = b"\r\n"
# A size line is a hex number plus optional extensions; nothing legitimate is near this long.
MAX_SIZE_LINE = 4096


def body_framing(version: str, transfer_encoding: list[bytes], content_length: list[bytes]) -> int | None:
    """The framing of a request body from its head: None for chunked, else the length in bytes.

    Raises the error to answer with: a transfer coding other than chunked is 501 (RFC 9112 §6.1:
    we implement none); chunked applied twice, chunked on HTTP/1.0, or Transfer-Encoding together
    with Content-Length is 400 and the connection is closed (§6.3: the length cannot be trusted,
    so the safe choice is to refuse rather than guess).
    """
    if transfer_encoding:
        if content_length:
            raise _framing_error("a request may not have both Transfer-Encoding and Content-Length",
                                 "content-length")
        codings = [token.strip().lower() for value in transfer_encoding for token in value.split(b",")]
        unknown = sorted({c.decode("latin-1") for c in codings if c != b"chunked"})
        if unknown:
            raise NotImplementedByServer(
                f"transfer coding {', '.join(unknown)} is not implemented; send the body as is "
                "with Content-Length, or with Transfer-Encoding: chunked",
                {"field": "transfer-encoding", "supported": ["chunked"]},
                headers={"Connection": "close"})
        if len(codings) != 1:
            raise _framing_error("chunked may be applied only once", "transfer-encoding")
        if version != "1.1":
            raise _framing_error("Transfer-Encoding needs HTTP/1.1", "transfer-encoding")
        return None
    if not content_length:
        return 0
    if len(content_length) > 1:  # httptools refuses duplicates; this is a second guard
        raise _framing_error("Content-Length appears more than once", "content-length")
    value = content_length[0].strip()
    if not value.isdigit():
        raise _framing_error("Content-Length must be a decimal number", "content-length")
    return int(value)


def _framing_error(message: str, field: str) -> ValidationError:
    return ValidationError(message, {"field": field}, headers={"Connection": "close"})


# Decoder states.
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedBody:
    """Decodes a chunked body (RFC 9112 §7.1) from pieces of input as they arrive.

    The work is per chunk, not per byte: a size line is found with one `find`, chunk data is
    handed on in slices. A chunk whose declared size would take the body past `limit` is refused
    as soon as its size line is read (413), as is a size too long to be a number we would accept.
    Chunk extensions and trailer fields are read and dropped (RFC 9112 §7.1.1, §7.1.2 allow it).
    """

    __slots__ = ("limit", "max_trailer_bytes", "received", "_state", "_left", "_line", "_trailer_bytes")

    def __init__(self, limit: int, max_trailer_bytes: int) -> None:
        self.limit = limit
        self.max_trailer_bytes = max_trailer_bytes
        self.received = 0
        self._state = _SIZE
        self._left = 0
        self._line = b""
        self._trailer_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes, deliver: Callable[[bytes], None]) -> bytes | None:
        """Consume `data`, passing chunk data to `deliver`. Returns what follows the body (maybe
        b"") once it has ended, or None while more is needed. Raises an APIError on bad input."""
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._left, end - pos)
                deliver(data if take == end and not pos else data[pos:pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state, self._left = _DATA_END, 2
            elif state == _DATA_END:
                while self._left and pos < end:
                    if data[pos] != _CRLF[2 - self._left]:
                        raise _bad_chunk("chunk data is not followed by CRLF")
                    pos += 1
                    self._left -= 1
                if not self._left:
                    self._state = _SIZE
            else:
                line, pos = self._take_line(data, pos)
                if line is None:
                    return None
                if state == _SIZE:
                    self._size_line(line)
                elif not line:
                    self._state = _DONE
                    return data[pos:]
                else:
                    self._trailer_line(line)
        return None

    def _take_line(self, data: bytes, pos: int) -> tuple[bytes | None, int]:
        """The next CRLF-terminated line (without its CRLF) and the position after it in `data`;
        (None, len(data)) while the line is incomplete (what there is of it is kept)."""
        cap = MAX_SIZE_LINE if self._state == _SIZE else self.max_trailer_bytes
        started = self._line
        if started:  # the line began in an earlier piece
            if started.endswith(b"\r") and data[pos:pos + 1] == b"\n":
                self._line = b""
                return started[:-1], pos + 1
        cut = data.find(_CRLF, pos)
        if cut < 0:
            self._line = started + data[pos:]
            if len(self._line) > cap:
                raise _bad_chunk("a chunk size line or trailer line is too long")
            return None, len(data)
        line = started + data[pos:cut] if started else data[pos:cut]
        self._line = b""
        if len(line) > cap:
            raise _bad_chunk("a chunk size line or trailer line is too long")
        return line, cut + 2

    def _size_line(self, line: bytes) -> None:
        size_text = line.split(b";", 1)[0].rstrip(b" \t")
        if not size_text or size_text.translate(None, _HEX_DIGITS):
            raise _bad_chunk("a chunk size is not a hexadecimal number")
        digits = size_text.lstrip(b"0")
        if len(digits) > 15 or self.received + int(digits or b"0", 16) > self.limit:
            raise RequestTooLarge(
                f"a chunk of 0x{size_text.decode()} bytes would take the body over the {self.limit}-byte limit",
                {"limit": self.limit}, headers={"Connection": "close"})
        size = int(digits or b"0", 16)
        self.received += size
        if size:
            self._state, self._left = _DATA, size
        else:
            self._state = _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        self._trailer_bytes += len(line)
        if self._trailer_bytes > self.max_trailer_bytes:
            raise _bad_chunk("the trailer section is too large")
        name, colon, _ = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise _bad_chunk("a trailer line is not a header field")


def _bad_chunk(message: str) -> APIError:
    return ValidationError(f"invalid chunked body: {message}", {"field": "body"}, headers={"Connection": "close"})
