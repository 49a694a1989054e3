"""Read-only connections on their own threads, so reads never wait behind writes.

Each reader thread has two connections. Queries (lists, search, single events) use one with
the configured page cache (`database.cache_mb`), which keeps the index pages they revisit.
Scans that read the whole log once (exports) use the other, with a page cache of
SCAN_CACHE_MB: caching pages that are never read again would only grow every reader's cache
to its full size (measured: 8 concurrent exports of 200k events took the server from 46 MB to
218 MB RSS with 4 readers x 32 MB, and it stayed there) and evict the pages queries need.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from .connection import open_reader

T = TypeVar("T")

# A scan reads ~130 pages per export window (1000 events); more cache would not be reused.
SCAN_CACHE_MB = 2


class ReaderPool:
    def __init__(self, path: Path, *, size: int, busy_timeout_ms: int, cache_mb: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._cache_mb = cache_mb
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="recalled-reader")

    def _connection(self, kind: str = "conn", cache_mb: int | None = None) -> sqlite3.Connection:
        conn = getattr(self._local, kind, None)
        if conn is None:
            conn = open_reader(self._path, busy_timeout_ms=self._busy_timeout_ms,
                               cache_mb=self._cache_mb if cache_mb is None else cache_mb)
            setattr(self._local, kind, conn)
            with self._lock:
                self._connections.append(conn)
        return conn

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        return fn(self._connection(), *args)

    def _call_scan(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        return fn(self._connection("scan_conn", SCAN_CACHE_MB), *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)

    async def scan(self, fn: Callable[..., T], *args: Any) -> T:
        """Like run, on the small-cache connection: for reads of many pages, each once."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call_scan, fn, args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
