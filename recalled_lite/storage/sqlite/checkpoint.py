"""Emptying the WAL after an erasure, without ever holding up the writer.

A TRUNCATE checkpoint copies every WAL frame into the database file and cuts the WAL to
zero bytes, which removes the pre-erasure page images it still holds. To do so it must
take the write lock and then wait until no reader is on an older snapshot. With a busy
timeout it would wait for those readers *while holding the write lock*: with a long read
open (`GET /v1/events/verify` on a big log), each attempt of the first release held every
writer off for its whole 1 s busy timeout, ten times over (erase_actor 10.5 s, intake
requests up to 1.0 s).

Every attempt runs with busy_timeout=0, so a reader that is behind makes it copy what it
can (as a PASSIVE checkpoint would) and give up at once. It runs on the writer's own
connection, between two write groups (group_writer.BetweenGroupsOp): the writer never
contends with itself, so only readers can make an attempt fail. (An earlier version tried
from a connection of its own on an executor thread; under continuous intake on a loaded
machine it could go seconds without catching the lock in the tens of microseconds the
writer frees it between groups.) A checkpoint that copies frames holds the write lock
while it copies wherever it runs, so intake pays the same either way. Attempts come in
short bursts, with a growing pause between bursts while readers keep it from finishing,
until one succeeds or the store closes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Awaitable, Callable

log = logging.getLogger("recalled_lite.erasure")

BURST_ATTEMPTS = 25
BURST_PAUSE_SECONDS = 0.002
FIRST_PAUSE_SECONDS = 0.05
MAX_PAUSE_SECONDS = 2.0
# Say so in the log when readers have kept the WAL from being emptied this long.
WARN_AFTER_SECONDS = 10.0


def truncate_wal_once(conn: sqlite3.Connection) -> bool:
    """One non-blocking attempt (no transaction may be open on `conn`); True when the WAL is
    now empty."""
    (busy_timeout,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute("PRAGMA busy_timeout=0")
    try:
        busy, log_frames, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError:
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout)}")
    return busy == 0 and log_frames in (0, -1)  # -1: not in WAL mode, nothing to empty


class WalTruncator:
    """Truncates the WAL on request, retrying in the background until it succeeds.

    `request(generation)` returns a future resolved by the first truncation that started
    after the request; `on_truncated(generation)` runs after it (the store clears its
    marker row there)."""

    def __init__(self, between_groups: Callable[[Callable[[sqlite3.Connection], bool]], Awaitable[bool]],
                 on_truncated: Callable[[str], Awaitable[None]]) -> None:
        # Runs a function on the writer's connection between two groups (SqliteStore).
        self._between_groups = between_groups
        self._on_truncated = on_truncated
        self._tickets = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._generation: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def request(self, generation: str | None) -> "asyncio.Future[None]":
        loop = asyncio.get_running_loop()
        self._tickets += 1
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((self._tickets, future))
        if generation is not None:
            self._generation = generation
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="recalled-wal-truncate")
        return future

    def outstanding(self) -> "asyncio.Future[None] | None":
        """A future for the truncation still being retried, if any."""
        return self.request(None) if self._waiters else None

    def close(self) -> None:
        """Stop retrying (the store is closing; the marker row makes the next start retry)."""
        self._closed = True

    async def _run(self) -> None:
        started = time.monotonic()
        pause = FIRST_PAUSE_SECONDS
        warned = False
        while self._waiters and not self._closed:
            covered, generation = self._tickets, self._generation
            if await self._burst():
                done = [f for t, f in self._waiters if t <= covered]
                self._waiters = [(t, f) for t, f in self._waiters if t > covered]
                if generation is not None and generation == self._generation:
                    self._generation = None
                if warned:
                    log.info("the WAL was truncated after %.0f s; erased data is gone from it",
                             time.monotonic() - started)
                if generation is not None:
                    try:
                        await self._on_truncated(generation)
                    except Exception as exc:  # the marker stays; the next start truncates again
                        log.warning("could not clear the WAL truncation marker: %s", exc)
                for future in done:
                    if not future.done():
                        future.set_result(None)
                started, pause, warned = time.monotonic(), FIRST_PAUSE_SECONDS, False
                continue
            if not warned and time.monotonic() - started >= WARN_AFTER_SECONDS:
                warned = True
                log.warning("the WAL could not be truncated for %.0f s: a read transaction opened "
                            "before the erasure is still running (a long export or verify?); "
                            "erased data stays in the WAL file until it ends, retrying",
                            time.monotonic() - started)
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_SECONDS)

    async def _burst(self) -> bool:
        for attempt in range(BURST_ATTEMPTS):
            if self._closed:
                return False
            try:
                if await self._between_groups(truncate_wal_once):
                    return True
            except Exception as exc:  # the writer refused (shutting down, or dead): not now
                log.debug("WAL truncation attempt refused: %s", exc)
                return False
            await asyncio.sleep(BURST_PAUSE_SECONDS)
        return False
