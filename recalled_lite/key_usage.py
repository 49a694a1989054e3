"""When each API key was last used: noted in memory by every authorized request, written by
a background service in one transaction a minute (never a write on the request path).

``KeyUsage.note`` is a dict store on the hot path (intake calls it once per request);
``KeyUsageFlusher`` drains the dict every ``interval`` seconds into
``store.record_key_usage`` (one UPDATE per key that was used, all in one write), and once
more when the server stops, so a clean shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .services import cancel, run_every

log = logging.getLogger("recalled_lite")

FLUSH_SECONDS = 60.0


class KeyUsage:
    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[str, int] = {}

    def note(self, key_id: str) -> None:
        self._pending[key_id] = time.time_ns() // 1_000_000

    def last_used(self, key_id: str, stored: int | None) -> int | None:
        """The newer of the stored time and one noted since the last flush."""
        noted = self._pending.get(key_id)
        if noted is None:
            return stored
        return noted if stored is None or noted > stored else stored

    def drain(self) -> dict[str, int]:
        pending, self._pending = self._pending, {}
        return pending

    def restore(self, pending: dict[str, int]) -> None:
        """Put back what a failed flush took (newer notes win)."""
        for key_id, at in pending.items():
            if self._pending.get(key_id, 0) < at:
                self._pending[key_id] = at


class KeyUsageFlusher:
    """Writes the noted times every ``interval`` seconds: at most one write per key per interval."""

    def __init__(self, interval: float = FLUSH_SECONDS) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._ctx: Any = None

    async def start(self, ctx: Any) -> None:
        self._ctx = ctx
        self._task = asyncio.create_task(
            run_every(self.interval, self.flush, "recording when API keys were last used failed; retrying later"),
            name="key-usage-flusher")

    async def flush(self) -> None:
        usage: KeyUsage = self._ctx.key_usage
        pending = usage.drain()
        if not pending:
            return
        try:
            await self._ctx.store.record_key_usage(pending)
        except Exception:
            usage.restore(pending)
            raise

    async def stop(self) -> None:
        await cancel(self._task)
        try:
            await self.flush()
        except Exception:
            log.exception("recording when API keys were last used failed at shutdown")
