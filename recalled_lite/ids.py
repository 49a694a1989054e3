"""Public identifiers: `<prefix>_<ULID>`.

ULIDs sort by creation time, so `evt_` and `whd_` ids index well (no random
b-tree inserts). The generator is monotonic: within one millisecond, or when the
wall clock steps backwards, it continues from the previous value instead of
going back in time, so ids keep the order in which they were issued.
"""

from __future__ import annotations

import secrets
import threading
import time

from .randbuf import random_bytes

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_MAX_ULID = (1 << 128) - 1
# ULIDs are 128 bits written as 26 Crockford base32 characters (130 bits, the top
# two zero): 13 pairs of characters, each pair 10 bits, looked up in a table of all
# 1024 pairs. (base64.b32encode is pure Python: ~1.9 us per id; this is ~0.5 us,
# and the writer makes one per event.)
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]


def encode_ulid(value: int) -> str:
    if not 0 <= value <= _MAX_ULID:
        raise ValueError("a ULID is a 128-bit unsigned integer")
    p = _PAIRS
    return "".join((
        p[value >> 120], p[(value >> 110) & 1023], p[(value >> 100) & 1023],
        p[(value >> 90) & 1023], p[(value >> 80) & 1023], p[(value >> 70) & 1023],
        p[(value >> 60) & 1023], p[(value >> 50) & 1023], p[(value >> 40) & 1023],
        p[(value >> 30) & 1023], p[(value >> 20) & 1023], p[(value >> 10) & 1023],
        p[value & 1023],
    ))


def decode_ulid(text: str) -> int:
    value = 0
    for char in text.upper():
        value = value * 32 + _CROCKFORD.index(char)
    return value


def ulid_floor(ms: int) -> str:
    """The smallest ULID of millisecond `ms` (for id-range scans by time)."""
    return encode_ulid(max(ms, 0) << 80)


def ulid_ceiling(ms: int) -> str:
    """The largest ULID of millisecond `ms`."""
    return encode_ulid(min(((max(ms, 0) + 1) << 80) - 1, _MAX_ULID))


class UlidGenerator:
    """Thread-safe and monotonic: ids from one generator sort in the order they were issued."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def batch(self, n: int) -> list[str]:
        """n consecutive ids for one clock read and one lock (the writer's hot path)."""
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            # 78 random bits leave room to count up within the millisecond.
            start = (now_ms << 80) | (int.from_bytes(random_bytes(10), "big") >> 2)
            if start <= self._last:  # same millisecond, or the clock went back
                start = self._last + 1
            self._last = start + n - 1
        return [encode_ulid(start + i) for i in range(n)]

    def new(self) -> str:
        return self.batch(1)[0]

    def last_ms(self) -> int:
        """The time part of the last id issued (0 before the first): ahead of the clock after
        continue_after() met an id from a clock that was ahead."""
        with self._lock:
            return self._last >> 80

    def continue_after(self, ulid: str) -> None:
        """Never issue an id at or below `ulid` (the last one stored): keeps ids ordered across a
        restart even if the clock is now behind the last id's time."""
        value = decode_ulid(ulid)
        with self._lock:
            self._last = max(self._last, value)


ulids = UlidGenerator()


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulids.new()}"


def random_alnum(length: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))
