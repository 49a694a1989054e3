"""The task that advances recover / replay_missing jobs, one chunk per write transaction.

Jobs take turns. A job whose subscription has a backlog waits a moment; a job whose step
fails is retried with a backoff (a transient database failure is not counted), and after
``quarantine_after_failures`` failures it is marked ``failed`` with the error so that the
other jobs move on (delivery/quarantine.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from .faults import Faults, InjectedFault
from .quarantine import FailurePolicy, backoff_seconds, describe, is_transient, should_quarantine

log = logging.getLogger("recalled_lite.webhooks")

# A job paused by its subscription's backlog looks again after this long.
_PAUSE_SECONDS = 0.2


class JobRunner:
    def __init__(self, storage: Any, *, chunk: int, max_backlog: int, policy: FailurePolicy,
                 faults: Faults) -> None:
        self.storage = storage
        self.chunk = chunk
        self.max_backlog = max_backlog
        self.policy = policy
        self.faults = faults
        self._queue: deque[str] = deque()
        self._known: set[str] = set()
        self._waiting: dict[str, float] = {}  # job id -> time.monotonic() it may run again
        self._failures: dict[str, int] = {}
        self._ready = asyncio.Event()
        self.quarantined = 0

    def add(self, job_id: str) -> None:
        if job_id in self._known:
            return  # told twice (the API and the commit that created it)
        self._known.add(job_id)
        self._queue.append(job_id)
        self._ready.set()

    async def run(self) -> None:
        while True:
            job_id = await self._next()
            try:
                result = await self._step(job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(job_id, exc)
                continue
            self._failures.pop(job_id, None)
            if result == "done":
                self._known.discard(job_id)
                continue
            if result == "paused":
                self._waiting[job_id] = time.monotonic() + _PAUSE_SECONDS
            self._queue.append(job_id)
            await asyncio.sleep(0)  # let deliveries run between chunks

    async def _next(self) -> str:
        while True:
            now = time.monotonic()
            for _ in range(len(self._queue)):
                job_id = self._queue.popleft()
                if self._waiting.get(job_id, 0.0) <= now:
                    self._waiting.pop(job_id, None)
                    return job_id
                self._queue.append(job_id)
            self._ready.clear()
            timeout = None
            if self._waiting:
                timeout = max(min(self._waiting.values()) - now, 0.0)
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                pass

    async def _step(self, job_id: str) -> str:
        if self.faults and self.faults.mark("poison_job", job_id):
            raise InjectedFault(f"test fault: every step of {job_id} fails")
        return await self.storage.job_step(job_id, self.chunk, self.max_backlog)

    async def _failed(self, job_id: str, exc: BaseException) -> None:
        error = describe(exc)
        if is_transient(exc):
            failures = 1  # the database as a whole: wait, but never quarantine for it
        else:
            failures = self._failures.get(job_id, 0) + 1
            self._failures[job_id] = failures
            if should_quarantine(failures, self.policy):
                await self._quarantine(job_id, failures, error)
                return
        delay = backoff_seconds(failures, self.policy)
        log.warning("a webhook job step failed", extra={"fields": {
            "job_id": job_id, "failures": failures, "error": error, "retry_in_seconds": delay}})
        self._waiting[job_id] = time.monotonic() + delay
        self._queue.append(job_id)

    async def _quarantine(self, job_id: str, failures: int, error: str) -> None:
        try:
            await self.storage.fail_job(job_id, f"quarantined after {failures} failed steps; last error: {error}")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("marking webhook job %s failed did not work; trying again later", job_id)
            self._waiting[job_id] = time.monotonic() + self.policy.max_seconds
            self._queue.append(job_id)
            return
        self._failures.pop(job_id, None)
        self._known.discard(job_id)
        self.quarantined += 1
        log.error("webhook job quarantined", extra={"fields": {
            "job_id": job_id, "failures": failures, "error": error}})
