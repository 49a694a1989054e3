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
* **sending** - the SSRF-guarded httpx transport (one small keep-alive pool per
  subscription, on the lean asyncio socket layer of netstream.py), no redirects, no cookies,
  no proxies, one timeout around the whole attempt, at most ``max_in_flight`` (64) attempts
  at once and ``max_in_flight_per_subscription`` (4) per subscription; signed with every
  valid secret of the subscription (Standard Webhooks).
* **results** - outcomes are buffered and written in batches by one flusher task (an
  attempt row, the message's next state, the subscription's state) - one transaction for
  many attempts.
* **jobs** - ``recover`` and ``replay_missing`` advance one chunk per transaction.

At-least-once: a delivery is ``success`` only after its outcome is committed. Anything
unfinished when the process stops or dies is ``sending`` in the table and is made due again
at the next start, with the same message id (``webhook-id``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
import time
from collections import deque
from typing import Any

import httpx
import msgspec

from ..api.common import event_to_wire
from ..config import Config
from ..schemas import ActorOut, EventOut
from ..storage.sqlite.webhooks import AttemptOutcome, OpenItem, RetryPolicy, WebhookStorage
from ..timefmt import format_ms, now_ms
from .netstream import AsyncioBackend
from .signing import headers as signed_headers
from .http1 import Http1Pool
from .ssrf import DestinationRefused, GuardedBackend
from .subscriptions import SCHEDULED_TRIGGERS, SubscriptionInfo

log = logging.getLogger("recalled_lite.webhooks")

# httpcore asks the optional `sniffio` which event loop runs, with an `import sniffio` on
# every request. When it is not installed, each of those is a failed import that scans
# sys.path (~0.15 ms here, a large share of an attempt's CPU). Recording the absence once makes the probe
# a dict lookup; httpcore then assumes asyncio, which is what runs here.
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

USER_AGENT = "recalled-lite-webhooks/1"
_RESYNC_SECONDS = 30.0
_KEEPALIVE_SECONDS = 30.0


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
    """Started after the store, stopped before it closes (see ``cli._services``)."""

    def __init__(self, config: Config) -> None:
        w = config.webhooks
        self.config = w
        self.dev = config.server.dev
        self.allow_private = w.allow_private_destinations or self.dev
        schedule = w.dev_retry_schedule if self.dev else w.retry_schedule
        self.policy = RetryPolicy(
            schedule=tuple(float(s) for s in schedule), jitter=w.jitter,
            disable_after_ms=int(w.disable_after_seconds * 1000), lease_ms=int(w.lease_seconds * 1000),
        )
        self.timeout = w.timeout_seconds
        self.max_in_flight = w.max_in_flight
        self.per_sub = w.max_in_flight_per_subscription
        self.storage: WebhookStorage | None = None
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
        self._taken = 0  # hand-off items taken off the queue (read by the writer thread)
        self._results: list[AttemptOutcome] = []
        self._wake = asyncio.Event()
        self._results_ready = asyncio.Event()
        self._jobs_ready = asyncio.Event()
        self._jobs: deque[str] = deque()
        self._batches: set[asyncio.Task[None]] = set()
        self._claim_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_resync = 0.0
        # One small keep-alive pool per subscription (at most its in-flight cap), every
        # connection dialled through the SSRF guard. One TLS context is shared by all.
        self._transports: dict[str, Http1Pool] = {}
        self._transport_used: dict[str, float] = {}
        self._urls: dict[str, httpx.URL] = {}
        self._ssl_context: Any = None
        # No per-operation timers: one asyncio.timeout bounds each whole attempt.
        self._backend = AsyncioBackend()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.delivered = 0
        self.failed_attempts = 0

    # ------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------

    async def start(self, ctx: Any) -> None:
        self.loop = asyncio.get_running_loop()
        store = ctx.store
        self.project_id = store.project_id
        self._store = store
        self.storage = WebhookStorage(store, self.policy, handoff_limit=self.config.handoff_limit)
        self.storage.taken = lambda: self._taken
        self.storage.sink = self._sink
        self.subs, due, jobs = await self.storage.attach()
        self.next_due = dict(due)
        self._jobs.extend(jobs)
        self._ssl_context = httpx.create_ssl_context()
        self._main = asyncio.create_task(self._run(), name="webhook-delivery")
        self._tasks = [
            self._main,
            asyncio.create_task(self._flush_loop(), name="webhook-results"),
            asyncio.create_task(self._jobs_loop(), name="webhook-jobs"),
        ]
        ctx.readiness_checks["delivery"] = self._readiness
        ctx.metrics_providers.append(self._metrics)
        self._wake.set()
        if due or jobs:
            log.info("webhook delivery resumed", extra={"fields": {
                "subscriptions_with_due_deliveries": len(due), "running_jobs": len(jobs)}})

    def _readiness(self) -> str | None:
        if self._main is None or self._main.done():
            return "the webhook delivery loop is not running"
        return None

    async def stop(self) -> None:
        """Stop claiming; give in-flight attempts ``shutdown_grace_seconds`` to finish and
        record them; anything still unfinished stays ``sending`` in the table and is sent
        again (same webhook-id) at the next start."""
        self._stopping = True
        self._wake.set()
        if not self._tasks:
            return
        main, flusher, jobs = self._tasks
        main.cancel()
        jobs.cancel()
        for task in (self._claim_task, self._load_task):
            if task is not None:
                task.cancel()
        if self._batches:
            _, pending = await asyncio.wait(set(self._batches), timeout=self.config.shutdown_grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        flusher.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._results and self.storage is not None:
            batch, self._results = self._results, []
            try:
                await self.storage.apply_results(batch)
            except Exception:
                log.exception("could not record %d webhook attempts at shutdown; they will be resent", len(batch))
        transports, self._transports = list(self._transports.values()), {}
        await asyncio.gather(*(t.aclose() for t in transports), return_exceptions=True)

    # ------------------------------------------------------------------------------------
    # from the writer thread
    # ------------------------------------------------------------------------------------

    def _sink(self, subs: dict[str, SubscriptionInfo] | None, items: list[OpenItem],
              due: dict[str, int]) -> None:
        loop = self.loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._accept, subs, items, due)
        except RuntimeError:  # loop closed: the rows are in the table, the next start sends them
            pass

    def _accept(self, subs: dict[str, SubscriptionInfo] | None, items: list[OpenItem],
                due: dict[str, int]) -> None:
        if subs is not None:
            self.subs = subs
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
        self.inflight[sid] = self.inflight.get(sid, 0) + 1
        self.inflight_total += 1
        task = asyncio.create_task(self._send_one(item, sub, body))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)
        return True

    def _release(self, sid: str) -> None:
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
            self._load_task = asyncio.create_task(self._load(batch))

    async def _load(self, batch: list[OpenItem]) -> None:
        assert self.storage is not None
        try:
            live, events = await self.storage.load_for_send(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("loading %d webhook deliveries failed; retrying in 1 s", len(batch))
            await asyncio.sleep(1)
            for item in reversed(batch):
                self.ready.setdefault(item.subscription_id, deque()).appendleft(item)
            return
        finally:
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
    # sending
    # ------------------------------------------------------------------------------------

    def _transport(self, sub_id: str) -> Http1Pool:
        transport = self._transports.get(sub_id)
        if transport is None:
            transport = self._transports[sub_id] = Http1Pool(
                GuardedBackend(self.allow_private, delegate=self._backend), self._ssl_context,
                max_idle=self.per_sub, keepalive_expiry=_KEEPALIVE_SECONDS)
        self._transport_used[sub_id] = time.monotonic()
        return transport

    def _url(self, text: str) -> httpx.URL:
        url = self._urls.get(text)
        if url is None:
            if len(self._urls) > 4096:
                self._urls.clear()
            url = self._urls[text] = httpx.URL(text)
        return url

    def _close_idle_transports(self) -> None:
        now = time.monotonic()
        for sub_id, used in list(self._transport_used.items()):
            if sub_id not in self.subs or (now - used > _KEEPALIVE_SECONDS * 2 and not self.inflight.get(sub_id)):
                transport = self._transports.pop(sub_id, None)
                del self._transport_used[sub_id]
                if transport is not None:
                    task = asyncio.create_task(transport.aclose())
                    self._batches.add(task)
                    task.add_done_callback(self._batches.discard)

    async def _send_one(self, item: OpenItem, sub: SubscriptionInfo, body: bytes) -> None:
        started_at = now_ms()
        t0 = time.perf_counter()
        status: int | None = None
        response_body: str | None = None
        error: str | None = None
        retry_after: str | None = None
        progress: list[int] = []  # the status code, once the response head has arrived
        try:
            transport = self._transport(sub.id)
            hdrs = signed_headers(item.message_id, started_at // 1000, body,
                                  sub.signing_secrets(started_at))
            hdrs["user-agent"] = USER_AGENT
            hdrs["accept-encoding"] = "identity"
            async with asyncio.timeout(self.timeout):
                # http1.Http1Pool: one POST, never a redirect, no cookie jar, no proxy
                # settings; the response body is read no further than the read limit.
                response = await transport.post(self._url(sub.url), hdrs, body,
                                                self.config.max_response_read_bytes, progress)
            status = response.status
            retry_after = response.headers.get("retry-after")
            if 300 <= status < 400:
                location = response.headers.get("location")
                error = "redirects are not followed" + (f" (Location: {location[:200]})" if location else "")
            response_body = self._keep_body(response.body)
        except TimeoutError:
            phase = "reading the response" if progress else "waiting for a response"
            if progress:
                status = progress[0]
            error = f"timed out after {self.timeout:g} s {phase}"
        except DestinationRefused as exc:
            error = f"destination refused: {exc}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except asyncio.CancelledError:
            self._release(item.subscription_id)
            raise  # shutting down: the row stays `sending` and is sent again at the next start
        except Exception as exc:
            log.exception("webhook attempt failed unexpectedly")
            error = f"internal error: {type(exc).__name__}"
        duration = int((time.perf_counter() - t0) * 1000)
        if status is not None and 200 <= status < 300 and error is None:
            self.delivered += 1
        else:
            self.failed_attempts += 1
        self._record(AttemptOutcome(item, True, sub.url, status, response_body, error, duration,
                                    started_at, retry_after))
        self._release(item.subscription_id)

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

    def _keep_body(self, raw: bytes) -> str:
        """The response body (already read no further than max_response_read_bytes), stored
        up to max_response_body_bytes. Raw bytes: `accept-encoding: identity` was asked for,
        and a compressed body is never inflated (no decompression bombs)."""
        keep = self.config.max_response_body_bytes
        text = raw[:keep].decode("utf-8", "replace")
        while len(text.encode("utf-8")) > keep:  # a replacement char can be wider than its byte
            text = text[:-1]
        return text

    def _record(self, outcome: AttemptOutcome) -> None:
        self._results.append(outcome)
        self._results_ready.set()

    async def _flush_loop(self) -> None:
        assert self.storage is not None
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            while self._results:
                batch, self._results = self._results, []
                try:
                    await self.storage.apply_results(batch)
                except asyncio.CancelledError:
                    self._results = batch + self._results
                    raise
                except Exception:
                    log.exception("recording %d webhook attempts failed; retrying", len(batch))
                    self._results = batch + self._results
                    await asyncio.sleep(1)

    # ------------------------------------------------------------------------------------
    # jobs
    # ------------------------------------------------------------------------------------

    def add_job(self, job_id: str) -> None:
        self._jobs.append(job_id)
        self._jobs_ready.set()

    async def _jobs_loop(self) -> None:
        assert self.storage is not None
        chunk, backlog = self.config.job_chunk_size, self.config.job_max_backlog
        while True:
            if not self._jobs:
                await self._jobs_ready.wait()
                self._jobs_ready.clear()
                continue
            job_id = self._jobs.popleft()
            try:
                result = await self.storage.job_step(job_id, chunk, backlog)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook job %s step failed; retrying", job_id)
                result = "paused"
            if result != "done":
                self._jobs.append(job_id)
            if result == "paused":
                await asyncio.sleep(0.2)
            else:
                await asyncio.sleep(0)
