"""Background services the app starts after the store and stops before closing it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

log = logging.getLogger("recalled_lite")


async def run_every(interval: float, step: Callable[[], Awaitable[Any]], failure: str) -> None:
    """Await `step` every `interval` seconds until cancelled. A failing step is logged with
    `failure` and tried again next time: a background service never dies of one error."""
    while True:
        await asyncio.sleep(interval)
        try:
            await step()
        except Exception:
            log.exception(failure)


async def cancel(task: "asyncio.Task[Any] | None") -> None:
    """Cancel a service's task and wait for it to end."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


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
        self._task = asyncio.create_task(
            run_every(self.interval, self._store.refresh_keys, "refreshing the API key cache failed"),
            name="key-cache-refresher")

    async def stop(self) -> None:
        await cancel(self._task)
