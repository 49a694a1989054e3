"""Running the purge that erasures owe (erasure.py), interleaved with intake.

Each step is its own write op with a fixed page budget, submitted only when the previous
one has committed, so it queues behind whatever intake is waiting: a write group holds at
most one step, and the writer never spends longer on erasure than on about one normal
group before it serves intake again. Once the index is merged, the WAL is truncated
between two groups, never waiting for a reader (checkpoint.WalTruncator); the erasure's
answer waits for that only briefly (WAL_WAIT_SECONDS), the truncation itself retries until
it succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from . import erasure
from .checkpoint import WalTruncator

log = logging.getLogger("recalled_lite.erasure")

# How long DELETE /v1/actors/{id} waits for the WAL truncation. Without long readers it
# takes milliseconds; a read transaction opened before the erasure (a long export or
# verify) delays it until that read ends, and the answer does not wait for that.
WAL_WAIT_SECONDS = 2.0

Write = Callable[..., Awaitable[Any]]


class ErasurePurge:
    def __init__(self, write: Write, between_groups: Write) -> None:
        self._write = write
        self._lock: asyncio.Lock | None = None
        self.truncator = WalTruncator(between_groups, self._clear_wal_marker)
        self.rounds = 0  # purge rounds completed by this process (observability, tests)

    async def _clear_wal_marker(self, generation: str) -> None:
        await self._write(erasure.clear_wal_marker, generation)

    async def after_erasure(self, *, erased: bool) -> None:
        """`run`, shielded: a client that goes away does not stop the purge half-way (a
        restart would finish it, but there is no reason to wait for one)."""
        task = asyncio.ensure_future(self.run(erased=erased))
        task.add_done_callback(_retrieve)
        await asyncio.shield(task)

    async def run(self, *, erased: bool, wal_wait: float = WAL_WAIT_SECONDS) -> None:
        """Purge whatever is owed, then truncate the WAL (waiting up to `wal_wait`).

        Concurrent erasures queue on the lock; one whose rows an earlier round already
        covered finds nothing owed and only waits for that round's WAL truncation."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            generation = await self._purge()
            if generation is not None:
                waiter: asyncio.Future[None] | None = self.truncator.request(generation)
            else:
                waiter = self.truncator.outstanding() if erased else None
        if waiter is not None and wal_wait > 0:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), wal_wait)
            except asyncio.TimeoutError:
                log.info("erasure: the WAL truncation waits for an older read transaction to end; "
                         "it continues in the background")

    async def resume(self, wal_generation: str | None) -> None:
        """At start: finish a purge or a WAL truncation a previous process left owed."""
        try:
            if wal_generation is not None:
                self.truncator.request(wal_generation)
            await self.run(erased=False, wal_wait=0)
        except Exception as exc:  # e.g. 503 while the server shuts down: the markers stay
            log.warning("erasure: resuming the owed purge failed (%s); the next start retries", exc)

    async def _purge(self) -> str | None:
        """Purge rounds until nothing is owed; the WAL generation owed afterwards, if any."""
        wal_generation = None
        while True:
            generation = await self._write(erasure.purge_begin)
            if generation is None:
                return wal_generation
            started, steps, changes = time.monotonic(), 1, 0
            while True:
                step = await self._write(erasure.purge_step, generation)
                steps += 1
                changes += step.changes
                if step.wal_generation is not None:
                    wal_generation = step.wal_generation
                    break
            self.rounds += 1
            log.info("erasure: full-text index purged in %d steps of %d pages (%.2f s, %d rows changed)",
                     steps, erasure.PURGE_STEP_PAGES, time.monotonic() - started, changes)


def _retrieve(task: "asyncio.Task[None]") -> None:
    # The waiting request may have been cancelled; the failure is the request's to report,
    # and the marker rows keep the work owed.
    if not task.cancelled() and task.exception() is not None:
        log.warning("erasure: the purge stopped early (%s); it resumes with the next erasure "
                    "or start", task.exception())
