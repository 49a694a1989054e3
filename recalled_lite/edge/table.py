"""What the connections of one server share: which are idle between requests (and since when),
and whether the server is shutting down.

Idle connections sit in one insertion-ordered dict, oldest first, so that the keep-alive
timeout is one timer for the whole server (not one per connection and request), and the
connection to sacrifice when a new one arrives at the cap is the first entry.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class IdleConnection(Protocol):
    def close_idle(self) -> None: ...


# Expiry runs at most this often: connections go idle and busy thousands of times a second
# under load, and a keep-alive timeout a few tens of milliseconds late does no harm.
_SWEEP_MIN_INTERVAL = 0.05


class ConnectionTable:
    def __init__(self, keepalive_seconds: float) -> None:
        self.keepalive = keepalive_seconds
        self.idle: dict[IdleConnection, float] = {}
        self.shutting_down = False
        self._sweep: asyncio.TimerHandle | None = None

    def mark_idle(self, conn: IdleConnection, now: float, loop: asyncio.AbstractEventLoop) -> None:
        self.idle[conn] = now
        if self._sweep is None:
            self._sweep = loop.call_at(now + self.keepalive, self._expire, loop)

    def forget(self, conn: Any) -> None:
        self.idle.pop(conn, None)

    def idle_since(self, conn: Any) -> float | None:
        return self.idle.get(conn)

    def longest_idle(self, now: float, at_least: float) -> IdleConnection | None:
        """The connection idle the longest, if it has been idle for `at_least` seconds."""
        for conn, since in self.idle.items():
            return conn if now - since >= at_least else None
        return None

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        now = loop.time()
        cutoff = now - self.keepalive
        expired = []
        for conn, since in self.idle.items():
            if since > cutoff:
                break
            expired.append(conn)
        for conn in expired:
            self.idle.pop(conn, None)
            conn.close_idle()
        if self.idle:
            oldest = next(iter(self.idle.values()))
            self._sweep = loop.call_at(max(oldest + self.keepalive, now + _SWEEP_MIN_INTERVAL),
                                       self._expire, loop)
