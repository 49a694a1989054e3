"""Random bytes from os.urandom, drawn 4 KiB at a time.

The intake path needs 16 random bytes per event (the personal-data salt) and
10 per request id; one getrandom() system call per use cost ~1 us each and, as
every blocking call does, gave up the GIL to the writer thread mid-request. The
bytes are the kernel's CSPRNG output either way; each byte is handed out once.
Per thread, so no lock; reset in a forked child so parent and child never
share bytes.
"""

from __future__ import annotations

import os
import threading

_CHUNK = 4096


class _Pool(threading.local):
    buf = b""
    pos = 0


_pool = _Pool()


def random_bytes(n: int) -> bytes:
    pool = _pool
    start = pool.pos
    end = start + n
    if end > len(pool.buf):
        pool.buf = os.urandom(max(_CHUNK, n))
        start, end = 0, n
    pool.pos = end
    return pool.buf[start:end]


def _reset_after_fork() -> None:
    _pool.buf = b""
    _pool.pos = 0


os.register_at_fork(after_in_child=_reset_after_fork)
