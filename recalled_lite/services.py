"""Background services the app starts after the store and stops before closing it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("recalled_lite")


class KeyCacheRefresher:
    """Re-reads the API key table every few seconds.

    Keys are cached in memory for speed; this picks up keys created or revoked
    by another process (`recalled-lite keys ...` on the same file), so a
    revocation there takes effect within `interval` seconds.
    """

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self, ctx: Any) -> None:
        self._store = ctx.store
        self._task = asyncio.create_task(self._run(), name="key-cache-refresher")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._store.refresh_keys()
            except Exception:
                log.exception("refreshing the API key cache failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
