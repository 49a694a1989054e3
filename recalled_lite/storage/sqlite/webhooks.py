"""Webhook storage on SQLite (spec §5): subscriptions, the outbox, attempts and jobs.

Everything here that writes runs on the single writer thread (through ``store.write``),
inside a group transaction; reads run on the reader pool. ``WebhookStorage`` keeps the
writer-side view of the subscriptions (secrets unsealed, patterns compiled), which the
intake hook matches events against without a query, and hands four things to the delivery
loop after every COMMIT (never before, so the loop only acts on durable rows):

* a new snapshot of the subscriptions when one changed;
* deliveries to send now (``OpenItem``), already marked ``sending`` (leased to this
  instance) in the same transaction that created them, so the first attempt needs no claim
  round trip;
* "due" notes: subscription -> earliest ``next_attempt_at`` of rows left ``pending``
  (retries, or the backlog beyond the in-memory hand-off limit), claimed later;
* jobs to run (a ``replay_missing`` queued when a re-test passed).

It also writes one log line per subscription state change, after the COMMIT.
The rules (classification, backoff, re-tests, sealing) are pure code in ``delivery/``;
``storage/webhook_base.py`` is the interface a PostgreSQL backend would implement too.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
from typing import Any, Callable, Iterable, Sequence

from ...delivery import healing
from ...delivery.healing import InvalidCause
from ...delivery.retry import Outcome, classify, retry_delay, should_disable
from ...delivery.sealing import SealError, Sealer
from ...delivery.subscriptions import SCHEDULED_TRIGGERS, SubscriptionIndex, SubscriptionInfo
from ...ids import ulids
from ...timefmt import now_ms
from ..base import EventRecord, RecordNotFound
from ..webhook_base import (  # noqa: F401 - re-exported for callers of the first release
    AttemptOutcome, AttemptRow, InvalidWebhookOperation, JobRow, NewSubscription, OpenItem, RetryPolicy,
    Sink, SubscriptionPatch, attempt_id_for,
)
from . import webhook_reads as reads
from .webhook_jobs import JobOps
from .webhook_reads import OPEN

log = logging.getLogger("recalled_lite.webhooks")

_SUB_COLUMNS = (
    "id, url, description, event_types, organization, disabled, state, state_reason, "
    "state_changed_at, secret, previous_secret, previous_secret_expires_at, test_message_id, "
    "first_failure_at, last_success_at, created_at, updated_at, invalid_since, retest_at, retests, "
    "invalid_cause"
)
_INSERT_MESSAGE = (
    "INSERT INTO webhook_messages (id, subscription_id, event_seq, type, example_action, status, "
    "trigger, attempt_id, created_at, queued_at, next_attempt_at, lease_until, lease_owner) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_ATTEMPT = (
    "INSERT OR REPLACE INTO webhook_attempts (id, message_id, subscription_id, event_seq, attempt, "
    "status, trigger, url, response_status_code, response_body, error, duration_ms, created_at, "
    "next_attempt_at, warning) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_FAIL_PENDING = (
    "UPDATE webhook_messages SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, "
    f"lease_owner = NULL WHERE subscription_id = ? AND status = 'pending' AND {OPEN} "
    "AND trigger IN ('scheduled', 'replay', 'recover')"
)
_MESSAGE_DONE = (
    "UPDATE webhook_messages SET status = ?, attempts = ?, run_attempts = ?, attempt_id = NULL, "
    "next_attempt_at = NULL, lease_until = NULL, lease_owner = NULL WHERE id = ?"
)
# Set once every stored secret is sealed:v2 (the start-up upgrade ran); from then on
# anything else in a secret column is refused.
_SEAL_MARK = "webhook_secret_seal"


class WebhookStorage(JobOps):
    """The webhook tables of one ``SqliteStore``, and the writer-side subscription view."""

    def __init__(self, store: Any, policy: RetryPolicy, *, handoff_limit: int) -> None:
        self.store = store
        self.policy = policy
        self.handoff_limit = handoff_limit
        self.sealer = Sealer(store.writer.state["secret"])
        # This process's name on its leases (a second instance on a shared table has its own).
        self.instance = "ins_" + ulids.new()
        self._rng = random.Random()
        # -- writer-thread state ---------------------------------------------------------
        self.subs: dict[str, SubscriptionInfo] = {}
        self.index = SubscriptionIndex(())
        self._handoff: list[OpenItem] = []
        self._due: dict[str, int] = {}
        self._new_jobs: list[str] = []
        self._state_log: list[dict[str, Any]] = []
        self._dirty = False
        self.handed = 0  # writer thread only
        self.secrets_upgraded = 0
        # -- set by the delivery loop ----------------------------------------------------
        self.taken: Callable[[], int] = lambda: 0
        self.sink: Sink = lambda subs, items, due, jobs: None

    # ----------------------------------------------------------------------------------------
    # start-up (writer thread)
    # ----------------------------------------------------------------------------------------

    async def attach(self) -> tuple[dict[str, SubscriptionInfo], dict[str, int], list[str]]:
        """Seal every secret as v2 (once), load the subscriptions, make every unfinished
        delivery due again (a previous process may have died mid-send: at-least-once, same
        webhook-id), register the intake hook and the commit listener. One writer op, so no
        event slips between."""
        return await self.store.write(self._attach)

    def _attach(self, conn: sqlite3.Connection) -> tuple[dict[str, SubscriptionInfo], dict[str, int], list[str]]:
        now = now_ms()
        self._upgrade_secrets(conn)
        self._reload_all(conn)
        # On SQLite only one server runs on a file, so every `sending` row belongs to a
        # process that is gone: send them again now rather than after their lease.
        for sub_id in self.subs:
            conn.execute(
                "UPDATE webhook_messages SET status = 'pending', next_attempt_at = ?, lease_until = NULL, "
                f"lease_owner = NULL WHERE subscription_id = ? AND status = 'sending' AND {OPEN}", (now, sub_id))
        due = reads.due_snapshot(conn)
        jobs = [row[0] for row in conn.execute("SELECT id FROM webhook_jobs WHERE status = 'running'")]
        writer = self.store.writer
        writer.state["intake_hooks"].append(self._intake_hook)
        writer.commit_listeners.append(self._on_commit)
        previous_reload = writer.reload_state

        def reload_state(c: sqlite3.Connection) -> None:
            previous_reload(c)
            self._after_rollback(c)

        writer.reload_state = reload_state
        self._dirty = False
        self._new_jobs = []
        self._state_log = []
        return self.subs, due, jobs

    def _upgrade_secrets(self, conn: sqlite3.Connection) -> None:
        """sealed:v1 and cleartext secrets -> sealed:v2, in this one transaction, once."""
        mark = conn.execute("SELECT value FROM meta WHERE key = ?", (_SEAL_MARK,)).fetchone()
        if mark is not None and mark[0] == "v2":
            return
        upgraded = 0
        rows = conn.execute("SELECT id, secret, previous_secret FROM webhook_subscriptions").fetchall()
        for sid, *values in rows:
            for column, value in zip(("secret", "previous_secret"), values):
                if value is None:
                    continue
                try:
                    sealed = self.sealer.upgrade(sid, column, value)
                except SealError as exc:
                    # Left as it is: the subscription reports it (secret_error) and signs nothing.
                    log.error("a stored webhook secret could not be upgraded", extra={"fields": {
                        "subscription_id": sid, "column": column, "reason": str(exc)}})
                    continue
                if sealed is not None:
                    conn.execute(f"UPDATE webhook_subscriptions SET {column} = ? WHERE id = ?", (sealed, sid))
                    upgraded += 1
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, 'v2')", (_SEAL_MARK,))
        self.secrets_upgraded = upgraded

    def _after_rollback(self, conn: sqlite3.Connection) -> None:
        # A whole group was rolled back: nothing it queued or changed exists.
        self.handed -= len(self._handoff)
        self._handoff = []
        self._due = {}
        self._new_jobs = []
        self._state_log = []
        try:
            self._reload_all(conn)
        except sqlite3.Error:
            raise  # the writer reports it and carries on
        except Exception:
            log.exception("reloading the webhook subscriptions failed; keeping the previous view")

    def _on_commit(self) -> None:
        if self._state_log:
            entries, self._state_log = self._state_log, []
            for fields in entries:
                log.info("subscription state changed", extra={"fields": fields})
        if not (self._handoff or self._due or self._dirty or self._new_jobs):
            return
        subs = self.subs if self._dirty else None
        items, due, jobs = self._handoff, self._due, self._new_jobs
        self._handoff, self._due, self._dirty, self._new_jobs = [], {}, False, []
        self.sink(subs, items, due, jobs)

    # ----------------------------------------------------------------------------------------
    # subscription cache (writer thread)
    # ----------------------------------------------------------------------------------------

    def _info(self, row: Sequence[Any]) -> SubscriptionInfo:
        sid = row[0]
        problems = []
        try:
            secret = self.sealer.unseal(sid, "secret", row[9])
        except SealError as exc:
            secret = ""  # signs nothing (service.py refuses to send without a secret)
            problems.append(str(exc))
        previous = None
        if row[10] is not None:
            try:
                previous = self.sealer.unseal(sid, "previous_secret", row[10])
            except SealError as exc:
                problems.append(str(exc))  # the current secret still signs alone
        return SubscriptionInfo(
            id=sid, url=row[1], description=row[2], event_types=tuple(json.loads(row[3])),
            organization=row[4], disabled=bool(row[5]), state=row[6], state_reason=row[7],
            state_changed_at=row[8], secret=secret, previous_secret=previous,
            previous_secret_expires_at=row[11], test_message_id=row[12], first_failure_at=row[13],
            last_success_at=row[14], created_at=row[15], updated_at=row[16], invalid_since=row[17],
            retest_at=row[18], retests=row[19] or 0, invalid_cause=row[20],
            secret_error="; ".join(problems) or None,
        )

    def _safe_info(self, row: Sequence[Any]) -> SubscriptionInfo:
        """Never raises: a row that cannot be read becomes a subscription that receives
        nothing and says why, and the others carry on."""
        try:
            return self._info(row)
        except Exception as exc:
            log.exception("a webhook subscription row is unreadable", extra={"fields": {"subscription_id": row[0]}})
            now = now_ms()
            return SubscriptionInfo(
                id=str(row[0]), url=str(row[1] or ""), description="", event_types=(), organization=None,
                disabled=True, state="deactivated", state_reason="the stored subscription is unreadable",
                state_changed_at=now, secret="", previous_secret=None, previous_secret_expires_at=None,
                test_message_id=None, first_failure_at=None, last_success_at=None, created_at=now,
                updated_at=now, secret_error=f"the stored subscription is unreadable ({type(exc).__name__}); "
                                             "delete and re-create it",
            )

    def _reload_all(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute(f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions").fetchall()
        self.subs = {row[0]: self._safe_info(row) for row in rows}
        self.index = SubscriptionIndex(self.subs.values())
        self._dirty = True

    def _reload(self, conn: sqlite3.Connection, sub_ids: Iterable[str]) -> None:
        subs = dict(self.subs)
        for sid in sub_ids:
            row = conn.execute(f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions WHERE id = ?",
                               (sid,)).fetchone()
            if row is None:
                subs.pop(sid, None)
            else:
                subs[sid] = self._safe_info(row)
        self.subs = subs  # a new dict: snapshots already handed out never change
        self.index = SubscriptionIndex(subs.values())
        self._dirty = True

    def _visible(self, sub_id: str, organization: str | None) -> SubscriptionInfo:
        sub = self.subs.get(sub_id)
        if sub is None or not sub.visible_to(organization):
            raise RecordNotFound(sub_id)
        return sub

    # ----------------------------------------------------------------------------------------
    # queueing (writer thread)
    # ----------------------------------------------------------------------------------------

    def _budget(self) -> int:
        return self.handoff_limit - (self.handed - self.taken())

    def _enqueue(self, conn: sqlite3.Connection, rows: list[tuple[str, str, int | None, str, str | None, str]],
                 now: int) -> list[OpenItem | None]:
        """Insert new messages ``(id, sub_id, event_seq, type, example_action, trigger)``.

        Up to the hand-off budget they are inserted as ``sending`` (claimed by this very
        transaction) and handed to the loop at COMMIT; the rest wait as ``pending``.
        """
        budget = self._budget()
        lease = now + self.policy.lease_ms
        owner = self.instance
        out: list[OpenItem | None] = []
        params = []
        for mid, sid, seq, mtype, example, trigger in rows:
            if budget > 0:
                budget -= 1
                item = OpenItem(mid, sid, seq, mtype, example, trigger, "atm_" + mid[4:], 1, now, now, True)
                self._handoff.append(item)
                out.append(item)
                params.append((mid, sid, seq, mtype, example, "sending", trigger, None, now, now, now, lease, owner))
            else:
                out.append(None)
                params.append((mid, sid, seq, mtype, example, "pending", trigger, None, now, now, now, None, None))
                if self._due.get(sid, now + 1) > now:
                    self._due[sid] = now
        self.handed += sum(1 for o in out if o is not None)
        conn.executemany(_INSERT_MESSAGE, params)
        return out

    def _requeue(self, conn: sqlite3.Connection, message_ids: list[str], trigger: str, now: int) -> int:
        """Queue another attempt of existing finished messages (resend / recover): a fresh
        attempt id, a fresh retry run, the same message id (= webhook-id)."""
        budget = self._budget()
        lease = now + self.policy.lease_ms
        count = 0
        for mid in message_ids:
            row = conn.execute(
                "SELECT subscription_id, event_seq, type, example_action, attempts, created_at, status "
                "FROM webhook_messages WHERE id = ?", (mid,)).fetchone()
            if row is None or row[6] in ("pending", "sending"):
                continue
            sid, seq, mtype, example, attempts, created_at, _ = row
            attempt_id = "atm_" + ulids.new()
            if budget > 0:
                budget -= 1
                self.handed += 1
                self._handoff.append(OpenItem(mid, sid, seq, mtype, example, trigger, attempt_id,
                                              attempts + 1, created_at, now, True))
                status, lease_until, owner = "sending", lease, self.instance
            else:
                status, lease_until, owner = "pending", None, None
                if self._due.get(sid, now + 1) > now:
                    self._due[sid] = now
            conn.execute(
                "UPDATE webhook_messages SET status = ?, trigger = ?, attempt_id = ?, run_attempts = 0, "
                "queued_at = ?, next_attempt_at = ?, lease_until = ?, lease_owner = ? WHERE id = ?",
                (status, trigger, attempt_id, now, now, lease_until, owner, mid))
            count += 1
        return count

    def _intake_hook(self, conn: sqlite3.Connection, records: list[EventRecord]) -> None:
        """Inside the event-intake transaction: one message per matching subscription."""
        index = self.index
        if not index.active:
            return
        pairs = []
        match = index.match
        for record in records:
            for sid in match(record.organization, record.action):
                pairs.append((sid, record.seq))
        if not pairs:
            return
        ids = ulids.batch(len(pairs))
        rows = [("whd_" + mid, sid, seq, "event.created", None, "scheduled")
                for mid, (sid, seq) in zip(ids, pairs)]
        self._enqueue(conn, rows, now_ms())

    def _set_state(self, conn: sqlite3.Connection, sub_id: str, state: str, reason: str | None,
                   now: int, cause: InvalidCause = InvalidCause.TEST_FAILED) -> None:
        """Change a subscription's state (and what goes with it: `invalid_since`, the next
        re-test). The log line is written after the COMMIT (``_on_commit``)."""
        cur = self.subs.get(sub_id)
        old = cur.state if cur is not None else None
        invalid_since = cur.invalid_since if cur is not None else None
        invalid_cause = cur.invalid_cause if cur is not None else None
        retest_at, retests = None, 0
        if state == "invalid":
            if invalid_since is None or old != "invalid" and old != "new":
                invalid_since = now
            invalid_cause = cause.value
            policy = self.policy
            retest_at = healing.first_retest_at(cause, now, enabled=policy.retest_enabled,
                                                initial_ms=policy.retest_initial_ms, max_ms=policy.retest_max_ms)
        elif state in ("valid", "deactivated"):
            # valid: caught up (a replay was queued if it missed anything); deactivated: the
            # owner's choice, so what it misses from now on is not replayed.
            invalid_since = invalid_cause = None
        # `new` keeps `invalid_since`: if the test passes, what it missed is replayed.
        conn.execute(
            "UPDATE webhook_subscriptions SET state = ?, state_reason = ?, state_changed_at = ?, "
            "updated_at = ?, invalid_since = ?, invalid_cause = ?, retest_at = ?, retests = ? WHERE id = ?",
            (state, reason, now, now, invalid_since, invalid_cause, retest_at, retests, sub_id))
        if state in ("invalid", "deactivated"):
            # Deliveries still waiting for a retry stop here; `recover` can send them later.
            conn.execute(_FAIL_PENDING, (sub_id,))
        if old != state:
            fields: dict[str, Any] = {"subscription_id": sub_id, "from_state": old, "to_state": state,
                                      "reason": reason or _default_reason(state)}
            if state == "invalid":
                fields["retest_at"] = retest_at
            self._state_log.append(fields)

    def _queue_test(self, conn: sqlite3.Connection, sub_id: str, now: int, trigger: str = "test") -> OpenItem | None:
        mid = "whd_" + ulids.new()
        conn.execute("UPDATE webhook_subscriptions SET test_message_id = ? WHERE id = ?", (mid, sub_id))
        (item,) = self._enqueue(conn, [(mid, sub_id, None, "webhook.test", None, trigger)], now)
        return item

    # ----------------------------------------------------------------------------------------
    # subscription operations (API)
    # ----------------------------------------------------------------------------------------

    async def create_subscription(self, spec: NewSubscription) -> SubscriptionInfo:
        return await self.store.write(self._create_subscription, spec)

    def _create_subscription(self, conn: sqlite3.Connection, spec: NewSubscription) -> SubscriptionInfo:
        now = now_ms()
        sid = "sub_" + ulids.new()
        state, reason = ("deactivated", "disabled by the owner") if spec.disabled else ("new", None)
        conn.execute(
            f"INSERT INTO webhook_subscriptions ({_SUB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (sid, spec.url, spec.description, json.dumps(spec.event_types), spec.organization,
             int(spec.disabled), state, reason, now, self.sealer.seal(sid, "secret", spec.secret),
             None, None, None, None, None, now, now, None, None, 0, None))
        if state == "new":
            self._queue_test(conn, sid, now)
        self._reload(conn, [sid])
        return self.subs[sid]

    async def update_subscription(self, sub_id: str, organization: str | None,
                                  patch: SubscriptionPatch) -> SubscriptionInfo:
        return await self.store.write(self._update_subscription, sub_id, organization, patch)

    def _update_subscription(self, conn: sqlite3.Connection, sub_id: str, organization: str | None,
                             patch: SubscriptionPatch) -> SubscriptionInfo:
        cur = self._visible(sub_id, organization)
        now = now_ms()
        url = patch.url if patch.url is not None else cur.url
        disabled, state, reason = cur.disabled, cur.state, cur.state_reason
        retest = False
        if patch.state == "deactivated" or patch.disabled is True:
            disabled = True
            if cur.state != "deactivated":
                state, reason = "deactivated", "disabled by the owner"
        elif patch.state == "new" or (patch.disabled is False and cur.disabled):
            disabled, state, reason, retest = False, "new", None, True
        elif url != cur.url and not disabled:
            state, reason, retest = "new", None, True
        conn.execute(
            "UPDATE webhook_subscriptions SET url = ?, description = ?, event_types = ?, "
            "organization = ?, disabled = ?, updated_at = ? WHERE id = ?",
            (url, patch.description if patch.description is not None else cur.description,
             json.dumps(patch.event_types if patch.event_types is not None else list(cur.event_types)),
             patch.organization if patch.set_organization else cur.organization,
             int(disabled), now, sub_id))
        if state != cur.state or retest:
            self._set_state(conn, sub_id, state, reason, now)
        if retest:
            self._queue_test(conn, sub_id, now)
        self._reload(conn, [sub_id])
        return self.subs[sub_id]

    async def delete_subscription(self, sub_id: str, organization: str | None) -> SubscriptionInfo:
        return await self.store.write(self._delete_subscription, sub_id, organization)

    def _delete_subscription(self, conn: sqlite3.Connection, sub_id: str,
                             organization: str | None) -> SubscriptionInfo:
        cur = self._visible(sub_id, organization)
        for table in ("webhook_attempts", "webhook_messages", "webhook_jobs"):
            conn.execute(f"DELETE FROM {table} WHERE subscription_id = ?", (sub_id,))
        conn.execute("DELETE FROM webhook_subscriptions WHERE id = ?", (sub_id,))
        self._reload(conn, [sub_id])
        return cur

    async def test_subscription(self, sub_id: str, organization: str | None) -> tuple[SubscriptionInfo, str]:
        return await self.store.write(self._test_subscription, sub_id, organization)

    def _test_subscription(self, conn: sqlite3.Connection, sub_id: str,
                           organization: str | None) -> tuple[SubscriptionInfo, str]:
        cur = self._visible(sub_id, organization)
        if cur.state == "deactivated":
            raise InvalidWebhookOperation(
                "the subscription is deactivated; re-activate it with PATCH {\"state\": \"new\"}", "state")
        now = now_ms()
        self._set_state(conn, sub_id, "new", None, now)
        self._queue_test(conn, sub_id, now)
        self._reload(conn, [sub_id])
        sub = self.subs[sub_id]
        assert sub.test_message_id is not None
        return sub, sub.test_message_id

    async def retest(self, sub_id: str) -> bool:
        """The automatic re-test of an `invalid` subscription, when due: a test message
        (trigger ``retest``); the subscription stays `invalid` (and misses nothing more than
        it already does) until the test passes. False if it was not due."""
        return await self.store.write(self._retest, sub_id)

    def _retest(self, conn: sqlite3.Connection, sub_id: str) -> bool:
        sub = self.subs.get(sub_id)
        now = now_ms()
        if sub is None or sub.state != "invalid" or sub.retest_at is None or sub.retest_at > now:
            return False
        retests = sub.retests + 1
        next_at = healing.next_retest_at(retests, now, initial_ms=self.policy.retest_initial_ms,
                                         max_ms=self.policy.retest_max_ms)
        conn.execute("UPDATE webhook_subscriptions SET retest_at = ?, retests = ? WHERE id = ?",
                     (next_at, retests, sub_id))
        open_test = sub.test_message_id is not None and conn.execute(
            f"SELECT 1 FROM webhook_messages WHERE id = ? AND {OPEN}", (sub.test_message_id,)).fetchone()
        if not open_test:  # one re-test at a time: a slow receiver is not sent a second one
            self._queue_test(conn, sub_id, now, trigger="retest")
        self._reload(conn, [sub_id])
        return True

    async def rotate_secret(self, sub_id: str, organization: str | None, new_secret: str,
                            overlap_ms: int) -> SubscriptionInfo:
        return await self.store.write(self._rotate_secret, sub_id, organization, new_secret, overlap_ms)

    def _rotate_secret(self, conn: sqlite3.Connection, sub_id: str, organization: str | None,
                       new_secret: str, overlap_ms: int) -> SubscriptionInfo:
        cur = self._visible(sub_id, organization)
        now = now_ms()
        # An unusable current secret (secret_error) is not kept signing: rotating repairs it.
        previous = (self.sealer.seal(sub_id, "previous_secret", cur.secret)
                    if overlap_ms > 0 and cur.secret else None)
        conn.execute(
            "UPDATE webhook_subscriptions SET secret = ?, previous_secret = ?, "
            "previous_secret_expires_at = ?, updated_at = ? WHERE id = ?",
            (self.sealer.seal(sub_id, "secret", new_secret), previous,
             now + overlap_ms if previous else None, now, sub_id))
        self._reload(conn, [sub_id])
        return self.subs[sub_id]

    # ----------------------------------------------------------------------------------------
    # one-off deliveries (API)
    # ----------------------------------------------------------------------------------------

    def _usable(self, sub_id: str, organization: str | None) -> SubscriptionInfo:
        sub = self._visible(sub_id, organization)
        if sub.state == "deactivated":
            raise InvalidWebhookOperation(
                "the subscription is deactivated; re-activate it with PATCH {\"state\": \"new\"}", "state")
        return sub

    async def resend(self, event_id: str, sub_id: str, organization: str | None) -> AttemptRow:
        return await self.store.write(self._resend, event_id, sub_id, organization)

    def _resend(self, conn: sqlite3.Connection, event_id: str, sub_id: str, organization: str | None) -> AttemptRow:
        sub = self._usable(sub_id, organization)
        row = conn.execute("SELECT seq, organization FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None or (organization is not None and row[1] != organization):
            raise RecordNotFound(event_id)
        seq, event_org = row
        if sub.organization is not None and event_org != sub.organization:
            raise InvalidWebhookOperation(
                "this event belongs to another organization than the subscription", "event_id")
        now = now_ms()
        existing = conn.execute(
            "SELECT id FROM webhook_messages WHERE subscription_id = ? AND event_seq = ?",
            (sub_id, seq)).fetchone()
        if existing is None:
            mid = "whd_" + ulids.new()
            self._enqueue(conn, [(mid, sub_id, seq, "event.created", None, "manual")], now)
        else:
            mid = existing[0]
            self._requeue(conn, [mid], "manual", now)  # no-op if already on its way
        return reads.open_attempt(conn, mid)

    async def send_example(self, sub_id: str, organization: str | None, action: str) -> AttemptRow:
        return await self.store.write(self._send_example, sub_id, organization, action)

    def _send_example(self, conn: sqlite3.Connection, sub_id: str, organization: str | None,
                      action: str) -> AttemptRow:
        self._usable(sub_id, organization)
        mid = "whd_" + ulids.new()
        self._enqueue(conn, [(mid, sub_id, None, "event.example", action, "example")], now_ms())
        return reads.open_attempt(conn, mid)

    # ----------------------------------------------------------------------------------------
    # the delivery loop
    # ----------------------------------------------------------------------------------------

    async def claim(self, requests: list[tuple[str, int]]) -> tuple[list[OpenItem], dict[str, int | None]]:
        return await self.store.write(self._claim, requests)

    def _claim(self, conn: sqlite3.Connection, requests: list[tuple[str, int]]
               ) -> tuple[list[OpenItem], dict[str, int | None]]:
        """Lease up to ``n`` due rows of each subscription; report each one's next due time."""
        now = now_ms()
        lease = now + self.policy.lease_ms
        items: list[OpenItem] = []
        next_due: dict[str, int | None] = {}
        for sid, n in requests:
            rows = conn.execute(
                "SELECT id, event_seq, type, example_action, trigger, attempt_id, attempts, created_at, "
                f"queued_at FROM webhook_messages WHERE subscription_id = ? AND status = 'pending' AND {OPEN} "
                "AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?", (sid, now, n)).fetchall()
            if rows:
                conn.executemany(
                    "UPDATE webhook_messages SET status = 'sending', lease_until = ?, lease_owner = ? WHERE id = ?",
                    [(lease, self.instance, r[0]) for r in rows])
                for mid, seq, mtype, example, trigger, attempt_id, attempts, created_at, queued_at in rows:
                    items.append(OpenItem(mid, sid, seq, mtype, example, trigger,
                                          attempt_id_for(mid, attempt_id), attempts + 1, created_at,
                                          queued_at, False))
            next_due[sid] = conn.execute(
                "SELECT min(next_attempt_at) FROM webhook_messages WHERE subscription_id = ? "
                f"AND status = 'pending' AND {OPEN}", (sid,)).fetchone()[0]
        return items, next_due

    async def renew_leases(self, message_ids: list[str]) -> None:
        """Extend the leases of the rows this instance still holds in memory."""
        if message_ids:
            await self.store.write(self._renew_leases, message_ids)

    def _renew_leases(self, conn: sqlite3.Connection, message_ids: list[str]) -> None:
        lease = now_ms() + self.policy.lease_ms
        conn.executemany(
            "UPDATE webhook_messages SET lease_until = ? WHERE id = ? AND status = 'sending' AND lease_owner = ?",
            [(lease, mid, self.instance) for mid in message_ids])

    async def reclaim_expired(self, held: frozenset[str]) -> int:
        """Make due again every `sending` row whose lease ran out (lost in memory here, or
        held by an instance that died), except those this instance still holds. Same
        message id, same open attempt: the receiver sees the same webhook-id."""
        return await self.store.write(self._reclaim_expired, held)

    def _reclaim_expired(self, conn: sqlite3.Connection, held: frozenset[str]) -> int:
        now = now_ms()
        count = 0
        for sid in self.subs:
            expired = [r[0] for r in conn.execute(
                f"SELECT id FROM webhook_messages WHERE subscription_id = ? AND status = 'sending' AND {OPEN} "
                "AND ifnull(lease_until, 0) < ?", (sid, now)) if r[0] not in held]
            if not expired:
                continue
            conn.executemany(
                "UPDATE webhook_messages SET status = 'pending', next_attempt_at = ?, lease_until = NULL, "
                "lease_owner = NULL WHERE id = ? AND status = 'sending'", [(now, mid) for mid in expired])
            count += len(expired)
            if self._due.get(sid, now + 1) > now:
                self._due[sid] = now
        return count

    async def apply_results(self, results: list[AttemptOutcome]) -> None:
        await self.store.write(self._apply_results, results)

    def _apply_results(self, conn: sqlite3.Connection, results: list[AttemptOutcome]) -> None:
        now = now_ms()
        policy = self.policy
        # Per-subscription bookkeeping, applied once at the end of the batch.
        track: dict[str, dict[str, Any]] = {}
        attempts = []
        for r in results:
            item = r.item
            mid = item.message_id
            row = conn.execute(
                "SELECT status, attempt_id, attempts, run_attempts, lease_owner FROM webhook_messages WHERE id = ?",
                (mid,)).fetchone()
            if row is None or row[0] != "sending" or attempt_id_for(mid, row[1]) != item.attempt_id \
                    or row[4] != self.instance:
                continue  # deleted meanwhile, or not ours (any more)
            sid = item.subscription_id
            sub = self.subs.get(sid)
            t = None
            if sub is not None:
                t = track.get(sid)
                if t is None:
                    t = track[sid] = {"state": sub.state, "reason": sub.state_reason, "cause": None,
                                      "changed_at": sub.state_changed_at, "first_failure": sub.first_failure_at,
                                      "last_success": sub.last_success_at, "transition": False,
                                      "touched": False, "healed_from": None}
            if not r.sent:
                conn.execute(_MESSAGE_DONE, ("failed", row[2], row[3], mid))
                continue
            made, run = row[2] + 1, row[3] + 1
            outcome = classify(r.status_code, r.error)
            if t is not None and sub is not None:
                self._track_attempt(t, sub, item, r, outcome, now)
            next_at = None
            if outcome is Outcome.SUCCESS:
                conn.execute(_MESSAGE_DONE, ("success", made, run, mid))
            else:
                may_retry = (
                    outcome is Outcome.RETRY and item.trigger in SCHEDULED_TRIGGERS and t is not None
                    and t["state"] != "deactivated"
                    and not (t["state"] == "invalid" and t["changed_at"] >= item.queued_at)
                )
                delay = (retry_delay(run, r.status_code, r.retry_after, now / 1000, policy.schedule,
                                     policy.jitter, self._rng) if may_retry else None)
                if delay is None:
                    conn.execute(_MESSAGE_DONE, ("failed", made, run, mid))
                else:
                    next_at = now + int(delay * 1000)
                    conn.execute(
                        "UPDATE webhook_messages SET status = 'pending', attempts = ?, run_attempts = ?, "
                        "attempt_id = ?, queued_at = ?, next_attempt_at = ?, lease_until = NULL, "
                        "lease_owner = NULL WHERE id = ?",
                        (made, run, "atm_" + ulids.new(), now, next_at, mid))
                    if self._due.get(sid, next_at + 1) > next_at:
                        self._due[sid] = next_at
            attempts.append((
                item.attempt_id, mid, sid, item.event_seq, made,
                "success" if outcome is Outcome.SUCCESS else "failed", item.trigger, r.url,
                r.status_code, r.response_body, r.error, r.duration_ms, r.started_at, next_at, r.warning,
            ))
        if attempts:
            conn.executemany(_INSERT_ATTEMPT, attempts)
        changed = []
        for sid, t in track.items():
            if not t["touched"]:
                continue
            conn.execute(
                "UPDATE webhook_subscriptions SET first_failure_at = ?, last_success_at = ? WHERE id = ?",
                (t["first_failure"], t["last_success"], sid))
            if t["transition"]:
                self._set_state(conn, sid, t["state"], t["reason"], now, t["cause"] or InvalidCause.TEST_FAILED)
                healed_from = t["healed_from"]
                sub = self.subs[sid]
                if healed_from is not None and t["state"] == "valid" and self.policy.replay_after_retest:
                    # It missed events while invalid: queue them, in this same transaction.
                    self._insert_job(conn, "replay_missing", sid, healing.replay_begin(healed_from, sub.created_at),
                                     None, now)
            changed.append(sid)
        if changed:
            self._reload(conn, changed)

    def _track_attempt(self, t: dict[str, Any], sub: SubscriptionInfo, item: OpenItem, r: AttemptOutcome,
                       outcome: Outcome, now: int) -> None:
        """The subscription's side of one attempt. A transition caused by this very attempt
        (410, disable_after) must also stop this message's retries, so it comes first."""
        policy = self.policy
        t["touched"] = True
        if outcome is Outcome.SUCCESS:
            t["last_success"] = max(t["last_success"] or 0, r.started_at)
            t["first_failure"] = None
        elif t["first_failure"] is None:
            t["first_failure"] = r.started_at
        is_test = item.type == "webhook.test" and sub.test_message_id == item.message_id
        if is_test and (t["state"] == "new" or (t["state"] == "invalid" and item.trigger == "retest")):
            if outcome is Outcome.SUCCESS:
                t.update(state="valid", reason=None, changed_at=now, transition=True,
                         healed_from=sub.invalid_since if healing.replays_when_healed(sub.invalid_cause) else None)
            elif outcome is Outcome.GONE:
                t.update(state="invalid", reason="the receiver answered 410 Gone", changed_at=now,
                         transition=True, cause=InvalidCause.GONE)
            elif t["state"] == "new":
                t.update(state="invalid", reason="test delivery failed: " + _describe(r),
                         changed_at=now, transition=True, cause=InvalidCause.TEST_FAILED)
            # a failed re-test leaves it invalid; the next one is already scheduled
        elif outcome is Outcome.GONE and t["state"] in ("new", "valid"):
            t.update(state="invalid", reason="the receiver answered 410 Gone", changed_at=now,
                     transition=True, cause=InvalidCause.GONE)
        elif outcome is not Outcome.SUCCESS and t["state"] in ("new", "valid") and should_disable(
                t["first_failure"] / 1000, (t["last_success"] or 0) / 1000 or None, now / 1000,
                policy.disable_after_ms / 1000):
            t.update(state="invalid", changed_at=now, transition=True, cause=InvalidCause.NO_SUCCESS,
                     reason=f"no successful delivery for {policy.disable_after_ms / 1000:g} seconds "
                            f"(last error: {_describe(r)})")

    async def quarantine_results(self, results: list[tuple[AttemptOutcome, str]]) -> None:
        """Results that could not be recorded, however often tried: each delivery becomes
        ``failed``, with an attempt that says why (a minimal write, none of the bookkeeping
        that failed). ``recover`` or a resend can send them again."""
        await self.store.write(self._quarantine_results, results)

    def _quarantine_results(self, conn: sqlite3.Connection, results: list[tuple[AttemptOutcome, str]]) -> None:
        attempts = []
        for r, error in results:
            mid = r.item.message_id
            row = conn.execute("SELECT status, attempts, run_attempts, lease_owner FROM webhook_messages "
                               "WHERE id = ?", (mid,)).fetchone()
            if row is None or row[0] != "sending" or row[3] != self.instance:
                continue
            made = row[1] + 1
            conn.execute(_MESSAGE_DONE, ("failed", made, row[2] + 1, mid))
            attempts.append((
                r.item.attempt_id, mid, r.item.subscription_id, r.item.event_seq, made, "failed", r.item.trigger,
                r.url, r.status_code, r.response_body, error, r.duration_ms, r.started_at, None, r.warning))
        if attempts:
            conn.executemany(_INSERT_ATTEMPT, attempts)

    async def load_for_send(self, items: list[OpenItem]) -> tuple[set[str], dict[int, EventRecord]]:
        """Which of these messages are still ``sending`` (a rolled-back or deleted one is
        dropped), and the events to put in the payloads - read now, so an erasure that
        happened after intake applies to this delivery too."""
        return await self.store.read(reads.load_for_send, [i.message_id for i in items],
                                     [i.event_seq for i in items if i.event_seq is not None])

    async def due_snapshot(self) -> dict[str, int]:
        return await self.store.read(reads.due_snapshot)

    # ----------------------------------------------------------------------------------------
    # attempts (API reads)
    # ----------------------------------------------------------------------------------------

    async def list_attempts(self, *, sub_ids: list[str], event_id: str | None, status: str | None,
                            begin: int | None, end: int | None, cursor: tuple[int, str] | None,
                            limit: int) -> list[AttemptRow] | None:
        return await self.store.read(reads.list_attempts, sub_ids, event_id, status, begin, end, cursor, limit)

    async def event_visible(self, event_id: str, organization: str | None) -> bool:
        return await self.store.read(reads.event_visible, event_id, organization)

    async def open_attempt(self, message_id: str) -> AttemptRow | None:
        return await self.store.read(reads.open_attempt, message_id)


def _describe(r: AttemptOutcome) -> str:
    if r.error:
        return r.error
    return f"HTTP {r.status_code}"


def _default_reason(state: str) -> str:
    return {"new": "waiting for its test message", "valid": "its test message succeeded"}.get(state, state)
