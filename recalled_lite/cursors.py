"""Opaque pagination cursors.

A cursor is the position of the last row of a page. Lists and search both
order newest first: ``occurred_at DESC, seq DESC``; the next page is every row
with ``(occurred_at, seq) < (cursor.occurred_at_ms, cursor.seq)``. Tailing
(``after_seq``) orders by ``seq ASC`` and its position is a single seq.

Wire format: URL-safe base64 without padding of

    version (1 byte, = 1) | kind (1 byte) | payload

    kind 'L' (list) / 'S' (search): int64 occurred_at_ms, uint64 seq (big-endian)
    kind 'T' (tail):                uint64 seq

The kind keeps a cursor from one endpoint from being replayed on another; the
version lets the format change later (old versions can be decoded or refused
with a 400). Cursors are not secret and not signed: they only say where to
resume, every filter (and the organization wall) is applied again on each page.

Anything that is not a cursor this module produced raises ``CursorError``
(a ``ValueError``); the API answers 400 VALIDATION_ERROR ``{"field": "cursor"}``.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Cursor",
    "CursorError",
    "CursorKind",
    "decode_cursor",
    "decode_tail_cursor",
    "encode_cursor",
    "encode_tail_cursor",
]

CursorKind = Literal["list", "search"]

_VERSION = 1
_KIND_BYTE = {"list": ord("L"), "search": ord("S")}
_TAIL = ord("T")
_POSITION = struct.Struct(">BBqQ")  # version, kind, occurred_at_ms, seq
_TAIL_POSITION = struct.Struct(">BBQ")  # version, kind, seq
_MAX_TOKEN_CHARS = 64
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


class CursorError(ValueError):
    """The cursor is malformed, from another endpoint, or from an unknown version."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Position of the last row returned: resume strictly after it."""

    occurred_at_ms: int
    seq: int


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(token: object) -> bytes:
    if not isinstance(token, str) or not token:
        raise CursorError("cursor must be a non-empty string")
    if len(token) > _MAX_TOKEN_CHARS or not _ALPHABET.fullmatch(token):
        raise CursorError("malformed cursor")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise CursorError("malformed cursor") from None
    # Only the canonical spelling is accepted (no stray trailing bits).
    if _b64encode(raw) != token:
        raise CursorError("malformed cursor")
    return raw


def _check_version(raw: bytes) -> None:
    if not raw:
        raise CursorError("malformed cursor")
    if raw[0] != _VERSION:
        raise CursorError("unsupported cursor version")


def encode_cursor(occurred_at_ms: int, seq: int, *, kind: CursorKind = "list") -> str:
    """Cursor for resuming after the row ``(occurred_at_ms, seq)``."""
    if not (_INT64_MIN <= occurred_at_ms <= _INT64_MAX) or not (1 <= seq <= _INT64_MAX):
        raise ValueError("cursor position out of range")
    return _b64encode(_POSITION.pack(_VERSION, _KIND_BYTE[kind], occurred_at_ms, seq))


def decode_cursor(token: object, *, kind: CursorKind = "list") -> Cursor:
    """Decode a cursor from ``encode_cursor(..., kind=kind)``; ``CursorError`` otherwise."""
    raw = _b64decode(token)
    _check_version(raw)
    if len(raw) != _POSITION.size:
        raise CursorError("malformed cursor")
    _version, kind_byte, occurred_at_ms, seq = _POSITION.unpack(raw)
    if kind_byte != _KIND_BYTE[kind]:
        raise CursorError(f"not a {kind} cursor")
    if not (1 <= seq <= _INT64_MAX):
        raise CursorError("malformed cursor")
    return Cursor(occurred_at_ms, seq)


def encode_tail_cursor(seq: int) -> str:
    """Cursor for tailing (``after_seq``): resume with events whose seq > ``seq``."""
    if not (0 <= seq <= _INT64_MAX):
        raise ValueError("cursor position out of range")
    return _b64encode(_TAIL_POSITION.pack(_VERSION, _TAIL, seq))


def decode_tail_cursor(token: object) -> int:
    """The seq from ``encode_tail_cursor``; ``CursorError`` otherwise."""
    raw = _b64decode(token)
    _check_version(raw)
    if len(raw) != _TAIL_POSITION.size:
        raise CursorError("malformed cursor")
    _version, kind_byte, seq = _TAIL_POSITION.unpack(raw)
    if kind_byte != _TAIL or seq > _INT64_MAX:
        raise CursorError("not a tail cursor" if kind_byte != _TAIL else "malformed cursor")
    return seq
