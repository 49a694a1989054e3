"""The task that re-tests `invalid` subscriptions when their re-test is due (rules:
delivery/healing.py). The storage queues the test message and schedules the next re-test
in one transaction; the outcome is handled like any test's (storage apply_results)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from ..timefmt import now_ms
from .quarantine import describe
from .subscriptions import SubscriptionInfo

log = logging.getLogger("recalled_lite.webhooks")

# Sleep at most this long at a time, so a wall-clock step does not stall re-tests.
_MAX_SLEEP_SECONDS = 30.0
_FAILURE_PAUSE_SECONDS = 5.0


class Retester:
    def __init__(self, storage: Any, subs: Callable[[], dict[str, SubscriptionInfo]]) -> None:
        self.storage = storage
        self._subs = subs
        self._changed = asyncio.Event()
        self.retests = 0

    def subscriptions_changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        while True:
            self._changed.clear()
            now = now_ms()
            due = sorted((s.retest_at, s.id) for s in self._subs().values()
                         if s.state == "invalid" and s.retest_at is not None)
            ready = [sid for at, sid in due if at <= now]
            progressed = False
            for sid in ready:
                try:
                    if await self.storage.retest(sid):
                        progressed = True
                        self.retests += 1
                        log.info("re-testing an invalid subscription", extra={"fields": {"subscription_id": sid}})
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("queueing a re-test failed: %s", describe(exc),
                                extra={"fields": {"subscription_id": sid}})
                    await asyncio.sleep(_FAILURE_PAUSE_SECONDS)
            if ready:
                if not progressed:  # a stale snapshot: wait for the new one rather than spin
                    await asyncio.sleep(1.0)
                continue
            timeout = _MAX_SLEEP_SECONDS
            if due:
                timeout = min(max((due[0][0] - now) / 1000, 0.0), _MAX_SLEEP_SECONDS)
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass
