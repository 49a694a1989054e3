"""Read-only connections on their own threads, so reads never wait behind writes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from .connection import open_reader

T = TypeVar("T")


class ReaderPool:
    def __init__(self, path: Path, *, size: int, busy_timeout_ms: int, cache_mb: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._cache_mb = cache_mb
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="recalled-reader")

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_reader(self._path, busy_timeout_ms=self._busy_timeout_ms, cache_mb=self._cache_mb)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        return fn(self._connection(), *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
