"""The in-process webhook delivery loop (spec §5.2, §5.3; docs/webhooks.md).

One asyncio task drives everything; it never polls for first attempts:

* **hand-off** - the intake hook inserts each new delivery as ``sending`` inside the event's
  own transaction and, after COMMIT, the writer thread passes it here
  (``call_soon_threadsafe``): the first attempt starts within milliseconds of the commit,
  with no claim write in between. At most ``webhooks.handoff_limit`` deliveries wait in
  memory; beyond that they are inserted ``pending`` and claimed from the table.
* **claims** - rows left ``pending`` (retries, backlog, a restart) are claimed in one write
  per round, a read-ahead window per subscription that has something due. The loop knows
  each subscription's earliest due time (it is told after every commit that queued
  something), so it sleeps exactly until the next retry is due.
* **loading** - the events of the next deliveries are read in one batch on a reader thread,
  just ahead of the free slots. Payloads are built from the events table at this point, not
  copied at intake, so an erasure applies to later deliveries too.
* **sending** - one signed POST per attempt (sender.py: the SSRF guard, a keep-alive pool
  per subscription, the minimal HTTP/1.1 client of http1.py), at most ``max_in_flight`` (64)
  attempts at once and ``max_in_flight_per_subscription`` (4) per subscription.
* **results** - outcomes are buffered and written in batches (results.py), one transaction
  for many attempts; a result that cannot be recorded is isolated and quarantined.
* **jobs** - ``recover`` and ``replay_missing`` advance one chunk per transaction (jobs.py).
* **leases** - what this instance holds is leased to it and renewed; a delivery lost in
  memory is taken back when its lease ends (leases.py).
* **re-tests** - `invalid` subscriptions are re-tested with a backoff (retests.py).

At-least-once: a delivery is ``success`` only after its outcome is committed. Anything
unfinished when the process stops or dies is ``sending`` in the table and is made due again
at the next start, with the same message id (``webhook-id``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import msgspec

from ..config import Config
from ..schemas import ActorOut, EventOut
from ..storage.webhook_base import AttemptOutcome, OpenItem, RetryPolicy, WebhookStore
from ..timefmt import format_ms, now_ms
from ..wire import event_to_wire
from .faults import Faults
from .jobs import JobRunner
from .leases import LeaseKeeper, instance_name
from .quarantine import FailurePolicy
from .results import ResultRecorder
from .retests import Retester
from .sender import Sender
from .subscriptions import SCHEDULED_TRIGGERS, SubscriptionInfo

log = logging.getLogger("recalled_lite.webhooks")

_RESYNC_SECONDS = 30.0


class WebhookPayload(msgspec.Struct, rename="camel", omit_defaults=False):
    """The delivery body (spec §5.2)."""

    id: str
    type: str
    created_at: str
    project_id: str
    event: EventOut | None
    # The latest signed checkpoint (a C2SP signed note), so a receiver can act as a witness.
    checkpoint: str | None = None


_encode = msgspec.json.Encoder().encode
_ZERO_HASH = "0" * 64


def example_event(project_id: str, organization: str | None, action: str, at: int) -> EventOut:
    """A made-up event for ``event.example`` deliveries (no stored event, no personal data)."""
    return EventOut(
        id="evt_00000000000000000000000000", project_id=project_id, organization=organization,
        action=action, actor=ActorOut("user", "user_example", "Example User", "user@example.com"),
        targets=msgspec.Raw(b'[{"type":"example","id":"example_1","name":"Example"}]'),
        metadata=msgspec.Raw(b'{"example":true}'), ip_address="203.0.113.7",
        user_agent="recalled-lite example", occurred_at=format_ms(at), received_at=format_ms(at),
        idempotency_key=None, seq=0, hash="sha256:" + _ZERO_HASH, prev_hash=None,
        signature="hmac-sha256:" + _ZERO_HASH,
    )


class DeliveryService:
    """Started after the store, stopped before it closes (see ``commands.serve._services``)."""

    def __init__(self, config: Config) -> None:
        w = config.webhooks
        self.config = w
        self.dev = config.server.dev
        self.allow_private = w.allow_private_destinations or self.dev
        schedule = w.dev_retry_schedule if self.dev else w.retry_schedule
        retest_initial = w.dev_retest_initial_seconds if self.dev else w.retest_initial_seconds
        retest_max = w.dev_retest_max_seconds if self.dev else w.retest_max_seconds
        self.policy = RetryPolicy(
            schedule=tuple(float(s) for s in schedule), jitter=w.jitter,
            disable_after_ms=int(w.disable_after_seconds * 1000), lease_ms=int(w.lease_seconds * 1000),
            retest_initial_ms=int(retest_initial * 1000), retest_max_ms=int(max(retest_max, retest_initial) * 1000),
            retest_enabled=w.retest_enabled, replay_after_retest=w.replay_after_retest,
        )
        self.failure_policy = FailurePolicy(
            initial_seconds=w.failure_backoff_initial_seconds,
            max_seconds=max(w.failure_backoff_max_seconds, w.failure_backoff_initial_seconds),
            quarantine_after=w.quarantine_after_failures,
        )
        self.faults = Faults.from_env()
        self._faulty = bool(self.faults)  # checked per delivery: one attribute, not a call
        self.instance = instance_name(config.server.host, config.server.port)
        self.max_in_flight = w.max_in_flight
        self.per_sub = w.max_in_flight_per_subscription
        self.storage: WebhookStore | None = None
        self.subs: dict[str, SubscriptionInfo] = {}
        self.project_id = ""
        # loop-thread state
        # Read-ahead: claim up to `prefetch_per_sub` rows per subscription (`prefetch_total`
        # in all) and keep up to `load_ahead` deliveries with their event already read.
        self.prefetch_per_sub = max(self.per_sub * 8, 32)
        self.prefetch_total = max(self.max_in_flight * 8, 512)
        self.refill_below = self.prefetch_per_sub // 2
        self.load_ahead = max(self.max_in_flight * 2, 16)
        self.ready: dict[str, deque[OpenItem]] = {}  # claimed or handed off, event not read yet
        self.loaded: dict[str, deque[tuple[OpenItem, Any]]] = {}  # with their event record
        self._loaded_total = 0
        self._load_task: asyncio.Task[None] | None = None
        self.inflight: dict[str, int] = {}
        self.inflight_total = 0
        self.next_due: dict[str, int] = {}
        self._notes: dict[str, int] | None = None  # due notes that arrive while a claim runs
        # Hand-off items taken off `ready` for good (read by the writer thread): each counts
        # once, however often a failed read puts it back.
        self._taken = 0
        self._loading: list[OpenItem] = []  # the batch whose events are being read
        self._sending: dict[str, OpenItem] = {}  # message id -> attempt in flight
        self.results: ResultRecorder | None = None
        self.jobs: JobRunner | None = None
        self.leases: LeaseKeeper | None = None
        self.retester: Retester | None = None
        self._wake = asyncio.Event()
        self._batches: set[asyncio.Task[None]] = set()
        self._claim_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_resync = 0.0
        self.sender = Sender(w, allow_private=self.allow_private, per_subscription=self.per_sub)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.delivered = 0
        self.failed_attempts = 0
        self.app_metrics: Any = None  # recalled_lite.metrics.AppMetrics, from the app at start

    # ------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------

    async def start(self, ctx: Any) -> None:
        self.loop = asyncio.get_running_loop()
        store = ctx.store
        self.project_id = store.project_id
        self._store = store
        storage = self.storage = store.webhook_storage(self.policy, handoff_limit=self.config.handoff_limit)
        storage.instance = self.instance
        storage.taken = lambda: self._taken
        storage.sink = self._sink
        self.subs, due, jobs = await storage.attach()
        self.next_due = dict(due)
        self.results = ResultRecorder(storage, self.failure_policy, self.faults)
        self.jobs = JobRunner(storage, chunk=self.config.job_chunk_size, max_backlog=self.config.job_max_backlog,
                              policy=self.failure_policy, faults=self.faults)
        for job_id in jobs:
            self.jobs.add(job_id)
        self.leases = LeaseKeeper(storage, self.policy.lease_ms, self.held_ids)
        self.retester = Retester(storage, lambda: self.subs)
        self._main = asyncio.create_task(self._run(), name="webhook-delivery")
        self._tasks = [
            self._main,
            asyncio.create_task(self.results.run(), name="webhook-results"),
            asyncio.create_task(self.jobs.run(), name="webhook-jobs"),
            asyncio.create_task(self.leases.run(), name="webhook-leases"),
        ]
        if self.policy.retest_enabled:
            self._tasks.append(asyncio.create_task(self.retester.run(), name="webhook-retests"))
        ctx.readiness_checks["delivery"] = self._readiness
        ctx.metrics_providers.append(self._metrics)
        self.app_metrics = ctx.metrics
        self._wake.set()
        if storage.secrets_upgraded:
            log.info("webhook signing secrets sealed with AES-GCM (sealed:v2)", extra={"fields": {
                "upgraded": storage.secrets_upgraded}})
        broken = sorted(s.id for s in self.subs.values() if s.secret_error)
        if broken:
            log.error("webhook subscriptions with an unusable signing secret: they sign nothing until "
                      "their secret is rotated", extra={"fields": {"subscription_ids": broken}})
        if self.faults:
            log.warning("test faults are active (RECALLED_TEST_FAULTS): never in production")
        if due or jobs:
            log.info("webhook delivery resumed", extra={"fields": {
                "subscriptions_with_due_deliveries": len(due), "running_jobs": len(jobs)}})

    def _readiness(self) -> str | None:
        if self._main is None or self._main.done():
            return "the webhook delivery loop is not running"
        for task in self._tasks[1:]:
            if task.done():
                return f"the {task.get_name()} task is not running"
        return None

    async def stop(self) -> None:
        """Stop claiming; give in-flight attempts ``shutdown_grace_seconds`` to finish and
        record them; anything still unfinished is released (storage.release) and sent again
        (same webhook-id) by another instance or at the next start."""
        self._stopping = True
        self._wake.set()
        if not self._tasks:
            return
        main, recorder, *others = self._tasks
        main.cancel()
        for task in others:
            task.cancel()
        for task in (self._claim_task, self._load_task):
            if task is not None:
                task.cancel()
        if self._batches:
            _, pending = await asyncio.wait(set(self._batches), timeout=self.config.shutdown_grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        recorder.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.results is not None:
            await self.results.drain()
        if self.storage is not None:
            try:
                await self.storage.release()
            except Exception:  # the leases then end on their own
                log.warning("releasing webhook leases at shutdown failed", exc_info=True)
        await self.sender.aclose()

    def held_ids(self) -> set[str]:
        """Every delivery this instance holds in memory, in any stage: their leases are
        renewed; any other `sending` row whose lease ran out is taken back."""
        held: set[str] = set(self._sending)
        for queue in self.ready.values():
            held.update(item.message_id for item in queue)
        for loaded in self.loaded.values():
            held.update(item.message_id for item, _ in loaded)
        held.update(item.message_id for item in self._loading)
        if self.results is not None:
            held |= self.results.held_ids()
        return held

    # ------------------------------------------------------------------------------------
    # from the writer thread
    # ------------------------------------------------------------------------------------

    def _sink(self, subs: dict[str, SubscriptionInfo] | None, items: list[OpenItem],
              due: dict[str, int], jobs: list[str]) -> None:
        loop = self.loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._accept, subs, items, due, jobs)
        except RuntimeError:  # loop closed: the rows are in the table, the next start sends them
            pass

    def _accept(self, subs: dict[str, SubscriptionInfo] | None, items: list[OpenItem],
                due: dict[str, int], jobs: list[str] | None = None) -> None:
        if subs is not None:
            self.subs = subs
            if self.retester is not None:
                self.retester.subscriptions_changed()
        if jobs and self.jobs is not None:
            for job_id in jobs:
                self.jobs.add(job_id)
        ready = self.ready
        for item in items:
            queue = ready.get(item.subscription_id)
            if queue is None:
                queue = ready[item.subscription_id] = deque()
            queue.append(item)
        if due:
            for sid, at in due.items():
                current = self.next_due.get(sid)
                if current is None or at < current:
                    self.next_due[sid] = at
                if self._notes is not None:
                    noted = self._notes.get(sid)
                    if noted is None or at < noted:
                        self._notes[sid] = at
        self._wake.set()

    # ------------------------------------------------------------------------------------
    # the loop: claimed/handed-off rows -> `ready` -> (batch read) -> `loaded` -> in flight
    # ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                self._dispatch()
                self._maybe_load()
                self._maybe_claim()
                self._maybe_resync()
            except Exception:  # never let the loop die on a bug in one round
                log.exception("webhook delivery round failed")
                await asyncio.sleep(1)
            if self._wake.is_set():
                await asyncio.sleep(0)
                continue
            try:
                async with asyncio.timeout(self._sleep_seconds()):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _backlog(self, sid: str) -> int:
        return (self.inflight.get(sid, 0) + len(self.ready.get(sid, ()))
                + len(self.loaded.get(sid, ())))

    def _claim_room(self) -> int:
        return self.prefetch_total - self.inflight_total - self._loaded_total - sum(
            len(q) for q in self.ready.values())

    def _sleep_seconds(self) -> float:
        """Until the earliest retry that could be claimed. Everything else that makes work
        possible (a commit, a finished claim or read, a freed slot) sets the wake event."""
        if self._claim_task is not None or self._claim_room() <= 0:
            return _RESYNC_SECONDS
        now = now_ms()
        earliest = None
        for sid, at in self.next_due.items():
            if (earliest is None or at < earliest) and self._backlog(sid) <= self.refill_below:
                earliest = at
        if earliest is None:
            return _RESYNC_SECONDS
        return min(max((earliest - now) / 1000, 0.0), _RESYNC_SECONDS)

    def _dispatch(self) -> None:
        """Start attempts from `loaded`, within the global and per-subscription caps."""
        free = self.max_in_flight - self.inflight_total
        if free <= 0 or not self.loaded or self._stopping:
            return
        for sid in list(self.loaded):
            queue = self.loaded.pop(sid)
            slots = self.per_sub - self.inflight.get(sid, 0)
            while queue and slots > 0 and free > 0:
                item, record = queue.popleft()
                self._loaded_total -= 1
                if self._faulty and item.type == "event.created" and self.faults.take("lose_delivery"):
                    log.warning("test fault: a delivery was dropped in memory", extra={"fields": {
                        "message_id": item.message_id}})
                    continue
                if self._start(item, record):
                    slots -= 1
                    free -= 1
            if queue:
                self.loaded[sid] = queue  # re-inserted last: the next round starts elsewhere
            if free <= 0:
                break

    def _start(self, item: OpenItem, record: Any) -> bool:
        sid = item.subscription_id
        sub = self.subs.get(sid)
        if sub is None:
            return False  # deleted meanwhile: its rows are gone too
        if sub.state == "deactivated" or (
                sub.state == "invalid" and item.trigger in SCHEDULED_TRIGGERS
                and sub.state_changed_at >= item.queued_at):
            # Not sent: the owner deactivated it, or it became invalid after this was queued.
            self._record(AttemptOutcome(item, False, sub.url, None, None, None, None, now_ms(), None))
            return False
        if not sub.secret:
            # Never signed with a wrong key: a failed attempt that says why, retried on the
            # schedule (a rotation repairs the secret; `recover` sends what failed meanwhile).
            self._record(AttemptOutcome(item, True, sub.url, None, None,
                                        f"not sent: {sub.secret_error or 'the signing secret is unusable'}",
                                        0, now_ms(), None))
            return False
        try:
            if item.event_seq is not None:
                event = event_to_wire(record, self.project_id)
            elif item.type == "event.example":
                event = example_event(self.project_id, sub.organization,
                                      item.example_action or "example.created", now_ms())
            else:
                event = None
            checkpoint = self._store.latest_checkpoint
            body = _encode(WebhookPayload(item.message_id, item.type, format_ms(item.created_at),
                                          self.project_id, event, checkpoint.note if checkpoint else None))
        except Exception as exc:
            # A delivery that cannot be built fails like an attempt (and runs out its retries)
            # rather than vanishing from memory and coming back at every lease.
            log.exception("building a webhook delivery failed", extra={"fields": {"message_id": item.message_id}})
            self._record(AttemptOutcome(item, True, sub.url, None, None,
                                        f"internal error building the delivery: {type(exc).__name__}",
                                        0, now_ms(), None))
            return False
        self.inflight[sid] = self.inflight.get(sid, 0) + 1
        self.inflight_total += 1
        self._sending[item.message_id] = item
        task = asyncio.create_task(self._send_one(item, sub, body))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)
        return True

    def _release(self, item: OpenItem) -> None:
        self._sending.pop(item.message_id, None)
        sid = item.subscription_id
        left = self.inflight.get(sid, 0) - 1
        if left > 0:
            self.inflight[sid] = left
        else:
            self.inflight.pop(sid, None)
        self.inflight_total -= 1
        self._wake.set()

    def _maybe_load(self) -> None:
        """Read the events of the next deliveries in one batch (a reader thread), a little
        ahead of the free slots, so a freed slot is refilled without a round trip."""
        if self._load_task is not None or not self.ready or self._stopping:
            return
        room = self.load_ahead - self._loaded_total
        if room <= 0:
            return
        batch: list[OpenItem] = []
        per_sub_target = self.per_sub * 2
        for sid in list(self.ready):
            want = per_sub_target - len(self.loaded.get(sid, ()))
            if want <= 0:
                continue
            queue = self.ready.pop(sid)
            while queue and want > 0 and len(batch) < room:
                item = queue.popleft()
                batch.append(item)
                want -= 1
                if item.handoff:
                    self._taken += 1
            if queue:
                self.ready[sid] = queue
            if len(batch) >= room:
                break
        if batch:
            self._loading = batch
            self._load_task = asyncio.create_task(self._load(batch))

    async def _load(self, batch: list[OpenItem]) -> None:
        assert self.storage is not None
        try:
            if self._faulty and self.faults.take("fail_load"):
                raise RuntimeError("test fault: reading the deliveries failed")
            live, events = await self.storage.load_for_send(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("loading %d webhook deliveries failed; retrying in 1 s", len(batch))
            await asyncio.sleep(1)
            for item in reversed(batch):
                self.ready.setdefault(item.subscription_id, deque()).appendleft(item)
                if item.handoff:
                    self._taken -= 1  # back in `ready`: counted again when it is taken again
            return
        finally:
            self._loading = []
            self._load_task = None
            self._wake.set()
        for item in batch:
            if item.message_id not in live:
                continue  # rolled back, deleted, or no longer ours
            record = None
            if item.event_seq is not None:
                record = events.get(item.event_seq)
                if record is None:
                    continue
            queue = self.loaded.get(item.subscription_id)
            if queue is None:
                queue = self.loaded[item.subscription_id] = deque()
            queue.append((item, record))
            self._loaded_total += 1

    def _maybe_claim(self) -> None:
        """Claim due `pending` rows: up to a read-ahead window per subscription, in one write."""
        if self._claim_task is not None or self._stopping or not self.next_due:
            return
        free = self._claim_room()
        if free <= 0:
            return
        now = now_ms()
        requests = []
        for sid, at in self.next_due.items():
            if at > now:
                continue
            backlog = self._backlog(sid)
            if backlog > self.refill_below:
                continue  # refill in larger steps: fewer, bigger claim transactions
            slots = self.prefetch_per_sub - backlog
            if slots > 0:
                n = min(slots, free)
                requests.append((sid, n))
                free -= n
                if free <= 0:
                    break
        if requests:
            self._notes = {}
            self._claim_task = asyncio.create_task(self._claim(requests))

    async def _claim(self, requests: list[tuple[str, int]]) -> None:
        assert self.storage is not None
        try:
            items, next_due = await self.storage.claim(requests)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("claiming due webhook deliveries failed")
            await asyncio.sleep(1)
            return
        finally:
            self._claim_task = None
            self._wake.set()
        notes, self._notes = self._notes or {}, None
        for sid, at in next_due.items():
            noted = notes.get(sid)
            if noted is not None and (at is None or noted < at):
                at = noted
            if at is None:
                self.next_due.pop(sid, None)
            else:
                self.next_due[sid] = at
        for item in items:
            self.ready.setdefault(item.subscription_id, deque()).append(item)

    def _maybe_resync(self) -> None:
        # Belt and braces: the loop is told about every pending row, but re-reading the
        # due times now and then bounds the cost of any missed note to half a minute.
        now = time.monotonic()
        if now - self._last_resync < _RESYNC_SECONDS:
            return
        self._last_resync = now
        self._close_idle_transports()
        task = asyncio.create_task(self._resync())
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _resync(self) -> None:
        assert self.storage is not None
        try:
            due = await self.storage.due_snapshot()
        except Exception:
            log.exception("reading due webhook deliveries failed")
            return
        self._accept(None, [], due)

    # ------------------------------------------------------------------------------------
    # sending (sender.py)
    # ------------------------------------------------------------------------------------

    def _close_idle_transports(self) -> None:
        for close in self.sender.close_idle(self.subs, self.inflight):
            task = asyncio.create_task(close)
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _send_one(self, item: OpenItem, sub: SubscriptionInfo, body: bytes) -> None:
        started = time.perf_counter()
        try:
            outcome = await self.sender.attempt(item, sub, body)
        except asyncio.CancelledError:
            self._release(item)
            raise  # shutting down: the row stays `sending` and is sent again at the next start
        if outcome.status_code is not None and 200 <= outcome.status_code < 300 and outcome.error is None:
            self.delivered += 1
        else:
            self.failed_attempts += 1
        if self.app_metrics is not None:
            self.app_metrics.observe_attempt(time.perf_counter() - started, outcome.error is None
                                             and outcome.status_code is not None
                                             and 200 <= outcome.status_code < 300)
        self._record(outcome)
        self._release(item)

    def _metrics(self) -> list[str]:
        return [
            "# HELP recalled_webhook_deliveries_total Webhook attempts that got a 2xx.",
            "# TYPE recalled_webhook_deliveries_total counter",
            f"recalled_webhook_deliveries_total {self.delivered}",
            "# HELP recalled_webhook_failed_attempts_total Webhook attempts that failed (retried or final).",
            "# TYPE recalled_webhook_failed_attempts_total counter",
            f"recalled_webhook_failed_attempts_total {self.failed_attempts}",
            "# HELP recalled_webhook_in_flight Webhook attempts in flight now.",
            "# TYPE recalled_webhook_in_flight gauge",
            f"recalled_webhook_in_flight {self.inflight_total}",
        ]

    def _record(self, outcome: AttemptOutcome) -> None:
        assert self.results is not None
        self.results.add(outcome)

    # ------------------------------------------------------------------------------------
    # jobs
    # ------------------------------------------------------------------------------------

    def add_job(self, job_id: str) -> None:
        if self.jobs is not None:
            self.jobs.add(job_id)
