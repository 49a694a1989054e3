"""Unit tests of the body-framing rules and the chunked decoder (recalled_lite/edge/framing.py).
The server-level behaviour is in tests/test_http_edge.py."""

from __future__ import annotations

import random

import pytest

from recalled_lite.edge.framing import ChunkedBody, body_framing
from recalled_lite.errors import APIError


def decode_in_pieces(wire: bytes, sizes: list[int], limit: int = 1 << 20) -> tuple[bytes, bytes | None]:
    decoder = ChunkedBody(limit, 4096)
    out: list[bytes] = []
    pos, rest = 0, None
    for size in sizes:
        piece = wire[pos:pos + size]
        pos += size
        rest = decoder.feed(piece, out.append)
        if rest is not None:
            rest += wire[pos:]
            break
    return b"".join(out), rest


WIRE = (b"5\r\nhello\r\n" b"1;name=value\r\n \r\n" b"000A \t; ext\r\n0123456789\r\n"
        b"0\r\nX-Trailer: yes\r\nOther: 1\r\n\r\n" b"GET /next HTTP/1.1\r\n\r\n")


def test_chunked_body_is_decoded_whatever_the_piece_boundaries():
    expected = b"hello 0123456789"
    assert decode_in_pieces(WIRE, [len(WIRE)]) == (expected, b"GET /next HTTP/1.1\r\n\r\n")
    for n in range(1, len(WIRE) + 1):  # every split point, and one byte at a time
        assert decode_in_pieces(WIRE, [n, len(WIRE)]) == (expected, b"GET /next HTTP/1.1\r\n\r\n"), n
    assert decode_in_pieces(WIRE, [1] * len(WIRE)) == (expected, b"GET /next HTTP/1.1\r\n\r\n")
    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.randint(1, 9) for _ in range(len(WIRE))]
        assert decode_in_pieces(WIRE, sizes) == (expected, b"GET /next HTTP/1.1\r\n\r\n")


def test_incomplete_body_asks_for_more():
    assert decode_in_pieces(WIRE[:30], [30]) == (b"hello ", None)


@pytest.mark.parametrize("size", [b"7FFFFFFFFFFFFFFF", b"FFFFFFFFFFFFFFFF", b"1" + b"0" * 40, b"100001"])
def test_a_chunk_over_the_limit_is_refused_by_its_size_line(size):
    decoder = ChunkedBody(1 << 20, 4096)
    with pytest.raises(APIError) as info:
        decoder.feed(size + b"\r\nabc", lambda _: None)
    assert (info.value.status, info.value.code) == (413, "REQUEST_TOO_LARGE")
    assert info.value.details == {"limit": 1 << 20}


def test_the_limit_counts_every_chunk():
    decoder = ChunkedBody(10, 4096)
    assert decoder.feed(b"6\r\nabcdef\r\n", lambda _: None) is None
    with pytest.raises(APIError) as info:
        decoder.feed(b"5\r\n", lambda _: None)
    assert info.value.status == 413
    assert ChunkedBody(10, 4096).feed(b"a\r\n0123456789\r\n0\r\n\r\n", lambda _: None) == b""


@pytest.mark.parametrize("wire", [
    b"zz\r\n", b"\r\n", b"-1\r\n", b"5\r\nhelloXY", b"5\nhello\r\n", b"0x5\r\nhello\r\n0\r\n\r\n",
    b"0\r\nnot a field\r\n\r\n", b"0\r\n : x\r\n\r\n", b"1" * 5000,
])
def test_broken_chunked_framing_is_a_400(wire):
    with pytest.raises(APIError) as info:
        ChunkedBody(1 << 20, 4096).feed(wire, lambda _: None)
    assert (info.value.status, info.value.code) == (400, "VALIDATION_ERROR")
    assert info.value.headers == {"Connection": "close"}


def test_framing_rules_of_rfc_9112_section_6():
    assert body_framing("1.1", [], []) == 0
    assert body_framing("1.1", [], [b"42"]) == 42
    assert body_framing("1.1", [b"chunked"], []) is None
    assert body_framing("1.1", [b"Chunked "], []) is None

    def refused(*args):
        with pytest.raises(APIError) as info:
            body_framing(*args)
        return info.value.status, info.value.code, info.value.details["field"]

    assert refused("1.1", [b"gzip, chunked"], []) == (501, "NOT_IMPLEMENTED", "transfer-encoding")
    assert refused("1.1", [b"gzip"], []) == (501, "NOT_IMPLEMENTED", "transfer-encoding")
    assert refused("1.1", [b"identity"], []) == (501, "NOT_IMPLEMENTED", "transfer-encoding")
    assert refused("1.1", [b"chunked", b"chunked"], []) == (400, "VALIDATION_ERROR", "transfer-encoding")
    assert refused("1.0", [b"chunked"], []) == (400, "VALIDATION_ERROR", "transfer-encoding")
    assert refused("1.1", [b"chunked"], [b"5"]) == (400, "VALIDATION_ERROR", "content-length")
    assert refused("1.1", [], [b"5", b"5"]) == (400, "VALIDATION_ERROR", "content-length")
    assert refused("1.1", [], [b"-5"]) == (400, "VALIDATION_ERROR", "content-length")
