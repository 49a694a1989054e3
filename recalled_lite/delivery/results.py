"""Attempt results, written in batches by one task - and a poison result never blocks the rest.

Outcomes are buffered and written together (an attempt row, the message's next state, the
subscription's state: one transaction for many attempts). A batch that fails is retried:

* a transient failure (disk full, database locked) holds the batch and retries it with a
  backoff, counting nothing;
* any other failure splits the batch in halves until the failing results are alone; each
  of those is retried with its own backoff while new results keep flowing, and after
  ``quarantine_after_failures`` it is quarantined: its delivery becomes ``failed`` with the
  error on its attempt (delivery/quarantine.py).

Until its result is committed a delivery is still ``sending`` in the table, so everything
buffered here counts as held (``held_ids``): its lease is renewed, never reclaimed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..storage.webhook_base import AttemptOutcome
from .faults import Faults, InjectedFault
from .quarantine import FailurePolicy, backoff_seconds, describe, halves, is_transient, should_quarantine

log = logging.getLogger("recalled_lite.webhooks")


@dataclass(slots=True)
class _Parked:
    due: float  # time.monotonic()
    failures: int
    outcome: AttemptOutcome
    error: str


class ResultRecorder:
    def __init__(self, storage: Any, policy: FailurePolicy, faults: Faults) -> None:
        self.storage = storage
        self.policy = policy
        self.faults = faults
        self._pending: list[AttemptOutcome] = []
        self._flushing: list[AttemptOutcome] = []
        self._parked: list[_Parked] = []
        self._ready = asyncio.Event()
        self._transient_failures = 0
        self.quarantined = 0

    def add(self, outcome: AttemptOutcome) -> None:
        self._pending.append(outcome)
        self._ready.set()

    def held_ids(self) -> set[str]:
        held = {o.item.message_id for o in self._pending}
        held.update(o.item.message_id for o in self._flushing)
        held.update(p.outcome.item.message_id for p in self._parked)
        return held

    async def run(self) -> None:
        while True:
            await self._wait()
            now = time.monotonic()
            due = [p for p in self._parked if p.due <= now]
            if due:
                self._parked = [p for p in self._parked if p.due > now]
            batch, self._pending = self._pending, []
            if not batch and not due:
                continue
            self._flushing = batch + [p.outcome for p in due]
            try:
                if batch:
                    await self._flush(batch)
                doomed = [p for p in due if should_quarantine(p.failures, self.policy)]
                for parked in due:
                    if not should_quarantine(parked.failures, self.policy):
                        await self._retry_parked(parked)
                if doomed:
                    await self._quarantine(doomed)
            except asyncio.CancelledError:
                # Shutting down mid-write: whatever this round held goes back, for drain().
                self._pending = _unique(self._flushing + self._pending)
                raise
            finally:
                self._flushing = []

    async def _wait(self) -> None:
        if self._pending:
            return
        self._ready.clear()
        timeout = None
        if self._parked:
            timeout = max(min(p.due for p in self._parked) - time.monotonic(), 0.0)
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            pass

    async def _apply(self, batch: list[AttemptOutcome]) -> None:
        if self.faults:
            for outcome in batch:
                if outcome.item.type == "event.created" and self.faults.mark("poison_result", outcome.item.message_id):
                    raise InjectedFault(f"test fault: the result of {outcome.item.message_id} cannot be recorded")
        await self.storage.apply_results(batch)

    async def _flush(self, batch: list[AttemptOutcome]) -> None:
        try:
            await self._apply(batch)
            self._transient_failures = 0
        except Exception as exc:
            if is_transient(exc):
                await self._hold(batch, exc)
            else:
                await self._isolate(batch, exc)

    async def _hold(self, batch: list[AttemptOutcome], exc: BaseException) -> None:
        """The database as a whole failed: keep the batch, wait, try again; count nothing."""
        self._transient_failures += 1
        delay = backoff_seconds(self._transient_failures, self.policy)
        log.warning("recording %d webhook attempts failed (%s); retrying in %g s", len(batch), exc, delay)
        self._pending = batch + self._pending
        await asyncio.sleep(delay)

    async def _isolate(self, batch: list[AttemptOutcome], exc: BaseException) -> None:
        if len(batch) == 1:
            self._failed(batch[0], exc, 0)
            return
        for half in halves(batch):
            try:
                await self._apply(half)
            except Exception as half_exc:
                if is_transient(half_exc):
                    await self._hold(half, half_exc)
                else:
                    await self._isolate(half, half_exc)

    async def _retry_parked(self, parked: _Parked) -> None:
        try:
            await self._apply([parked.outcome])
        except Exception as exc:
            if is_transient(exc):
                parked.due = time.monotonic() + backoff_seconds(1, self.policy)
                self._parked.append(parked)
            else:
                self._failed(parked.outcome, exc, parked.failures)

    def _failed(self, outcome: AttemptOutcome, exc: BaseException, failures_before: int) -> None:
        failures = failures_before + 1
        error = describe(exc)
        # At the cap it is due at once: the next round quarantines it.
        delay = 0.0 if should_quarantine(failures, self.policy) else backoff_seconds(failures, self.policy)
        log.warning("recording a webhook attempt failed", extra={"fields": {
            "message_id": outcome.item.message_id, "failures": failures, "error": error,
            "retry_in_seconds": delay}})
        self._parked.append(_Parked(time.monotonic() + delay, failures, outcome, error))

    async def _quarantine(self, doomed: list[_Parked]) -> None:
        pairs = [(p.outcome, f"this attempt's result could not be recorded ({p.failures} tries, last: "
                             f"{p.error}); the delivery was quarantined as failed: resend or recover it")
                 for p in doomed]
        try:
            await self.storage.quarantine_results(pairs)
        except Exception:
            log.exception("quarantining %d webhook results failed; trying again later", len(doomed))
            for p in doomed:
                p.due = time.monotonic() + self.policy.max_seconds
            self._parked.extend(doomed)
            return
        self.quarantined += len(doomed)
        for p in doomed:
            log.error("webhook delivery quarantined: its result could not be recorded", extra={"fields": {
                "message_id": p.outcome.item.message_id, "subscription_id": p.outcome.item.subscription_id,
                "failures": p.failures, "error": p.error}})

    async def drain(self) -> None:
        """At shutdown: one last try to record everything, a poison result isolated so it
        does not take the others with it (what is not recorded is sent again at start)."""
        batch = _unique(self._pending + self._flushing + [p.outcome for p in self._parked])
        self._pending, self._flushing, self._parked = [], [], []
        await self._record_what_can_be(batch)

    async def _record_what_can_be(self, batch: list[AttemptOutcome]) -> None:
        if not batch:
            return
        try:
            await self._apply(batch)
        except Exception as exc:
            if len(batch) == 1 or is_transient(exc):
                log.warning("could not record %d webhook attempts at shutdown (%s); they will be resent",
                            len(batch), describe(exc))
                return
            for half in halves(batch):
                await self._record_what_can_be(half)


def _unique(outcomes: list[AttemptOutcome]) -> list[AttemptOutcome]:
    seen: set[str] = set()
    kept = []
    for outcome in outcomes:
        if outcome.item.message_id not in seen:
            seen.add(outcome.item.message_id)
            kept.append(outcome)
    return kept
