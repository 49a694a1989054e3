"""Public identifiers: `<prefix>_<ULID>`.

ULIDs sort by creation time, so `evt_` and `whd_` ids index well (no random
b-tree inserts). The generator is monotonic: within one millisecond, or when the
wall clock steps backwards, it continues from the previous value instead of
going back in time, so ids keep the order in which they were issued.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from base64 import b32encode

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_MAX_ULID = (1 << 128) - 1
# ULIDs are 128 bits written as 26 Crockford base32 characters (130 bits, the top
# two zero). Left-padded to 160 bits, RFC 4648 base32 yields 32 chars of which
# the last 26 are the ULID, in RFC 4648's alphabet; translate to Crockford.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())


def encode_ulid(value: int) -> str:
    return b32encode(value.to_bytes(20, "big"))[6:].translate(_TO_CROCKFORD).decode("ascii")


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
            start = (now_ms << 80) | (int.from_bytes(os.urandom(10), "big") >> 2)
            if start <= self._last:  # same millisecond, or the clock went back
                start = self._last + 1
            self._last = start + n - 1
        return [encode_ulid(start + i) for i in range(n)]

    def new(self) -> str:
        return self.batch(1)[0]


ulids = UlidGenerator()


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulids.new()}"


def random_alnum(length: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))
