"""Public identifiers: `<prefix>_<ULID>`.

ULIDs sort by creation time, so `evt_` ids index well (no random b-tree
inserts). The generator is monotonic: within one millisecond, or when the
wall clock steps backwards, it increments the previous value instead of going
back in time, so ids keep the order in which they were issued.
"""

from __future__ import annotations

import os
from base64 import b32encode
import secrets
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_MAX_RANDOM = (1 << 80) - 1


# ULIDs are 128 bits written as 26 Crockford base32 characters (130 bits, the top
# two zero). Left-padded to 160 bits, base64's RFC 4648 base32 yields 32 chars of
# which the last 26 are the ULID, in RFC 4648's alphabet; translate to Crockford.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())


def _encode_ulid(value: int) -> str:
    return b32encode(value.to_bytes(20, "big"))[6:].translate(_TO_CROCKFORD).decode("ascii")


class UlidGenerator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_random = 0

    def new(self) -> str:
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._last_random = int.from_bytes(os.urandom(10), "big") >> 1
            else:
                # Same millisecond or the clock went back: stay on the last
                # timestamp and count up, so order is preserved.
                self._last_random += 1
                if self._last_random > _MAX_RANDOM:
                    self._last_ms += 1
                    self._last_random = 0
            return _encode_ulid((self._last_ms << 80) | self._last_random)


_default = UlidGenerator()


def new_id(prefix: str) -> str:
    return f"{prefix}_{_default.new()}"


def random_alnum(length: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))
