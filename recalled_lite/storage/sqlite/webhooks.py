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
The rules (classification, state changes, backoff, re-tests, sealing) are pure code in
``delivery/`` (``transitions.py`` is the subscription state machine); the in-memory view
and its notes are ``storage/webhook_state.WebhookState``, shared with storage/postgres/.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Iterable

from ...delivery import healing, transitions
from ...delivery.healing import InvalidCause
from ...delivery.sealing import SealError
from ...delivery.subscriptions import SubscriptionInfo
from ...ids import ulids
from ...timefmt import now_ms
from ..base import AuditHook, EventRecord, RecordNotFound
from ..webhook_base import (  # noqa: F401 - re-exported for callers of the first release
    AttemptOutcome, AttemptRow, InvalidWebhookOperation, JobRow, NewSubscription, OpenItem, RetryPolicy,
    Sink, SubscriptionPatch, attempt_id_for,
)
from ..webhook_state import SUB_COLUMNS as _SUB_COLUMNS
from ..webhook_state import NewMessage, WebhookState
from . import webhook_reads as reads
from .webhook_jobs import JobOps
from .webhook_outbox import OutboxOps
from .webhook_reads import OPEN

log = logging.getLogger("recalled_lite.webhooks")

_INSERT_MESSAGE = (
    "INSERT INTO webhook_messages (id, subscription_id, event_seq, type, example_action, status, "
    "trigger, attempt_id, created_at, queued_at, next_attempt_at, lease_until, lease_owner) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_FAIL_PENDING = (
    "UPDATE webhook_messages SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, "
    f"lease_owner = NULL WHERE subscription_id = ? AND status = 'pending' AND {OPEN} "
    "AND trigger IN ('scheduled', 'replay', 'recover')"
)
# Set once every stored secret is sealed:v2 (the start-up upgrade ran); from then on
# anything else in a secret column is refused.
_SEAL_MARK = "webhook_secret_seal"


class WebhookStorage(WebhookState, OutboxOps, JobOps):
    """The webhook tables of one ``SqliteStore``, and the writer-side subscription view."""

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
        writer.savepoint_listeners.append((self._savepoint_mark, self._savepoint_rewind))
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
        self._forget_notes()
        try:
            self._reload_all(conn)
        except sqlite3.Error:
            raise  # the writer reports it and carries on
        except Exception:
            log.exception("reloading the webhook subscriptions failed; keeping the previous view")

    # ----------------------------------------------------------------------------------------
    # subscription cache (writer thread)
    # ----------------------------------------------------------------------------------------

    def _reload_all(self, conn: sqlite3.Connection) -> None:
        self._set_all(conn.execute(f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions").fetchall())

    def _reload(self, conn: sqlite3.Connection, sub_ids: Iterable[str]) -> None:
        self._set_some({sid: conn.execute(f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions WHERE id = ?",
                                          (sid,)).fetchone() for sid in sub_ids})

    # ----------------------------------------------------------------------------------------
    # queueing (writer thread)
    # ----------------------------------------------------------------------------------------

    def _enqueue(self, conn: sqlite3.Connection, rows: list[NewMessage], now: int) -> list[OpenItem | None]:
        """Insert new messages ``(id, sub_id, event_seq, type, example_action, trigger)``:
        handed off up to the budget, the rest ``pending`` (WebhookState._plan_enqueue)."""
        out, params = self._plan_enqueue(rows, now)
        conn.executemany(_INSERT_MESSAGE, params)
        return out

    def _requeue(self, conn: sqlite3.Connection, message_ids: list[str], trigger: str, now: int) -> int:
        """Queue another attempt of existing finished messages (resend / recover): a fresh
        attempt id, a fresh retry run, the same message id (= webhook-id)."""
        budget = self._budget()
        count = 0
        for mid in message_ids:
            row = conn.execute(
                "SELECT subscription_id, event_seq, type, example_action, attempts, created_at, status "
                "FROM webhook_messages WHERE id = ?", (mid,)).fetchone()
            if row is None or row[6] in ("pending", "sending"):
                continue
            sid, seq, mtype, example, attempts, created_at, _ = row
            values, budget = self._plan_requeue(mid, sid, seq, mtype, example, attempts, created_at,
                                                trigger, now, budget)
            conn.execute(
                "UPDATE webhook_messages SET status = ?, trigger = ?, attempt_id = ?, run_attempts = 0, "
                "queued_at = ?, next_attempt_at = ?, lease_until = ?, lease_owner = ? WHERE id = ?",
                (*values, mid))
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
        invalid_since, invalid_cause, retest_at, retests = transitions.state_change(cur, state, now, cause, self.policy)
        conn.execute(
            "UPDATE webhook_subscriptions SET state = ?, state_reason = ?, state_changed_at = ?, "
            "updated_at = ?, invalid_since = ?, invalid_cause = ?, retest_at = ?, retests = ? WHERE id = ?",
            (state, reason, now, now, invalid_since, invalid_cause, retest_at, retests, sub_id))
        if state in transitions.STOPS_PENDING:
            # Deliveries still waiting for a retry stop here; `recover` can send them later.
            conn.execute(_FAIL_PENDING, (sub_id,))
        self._state_note(sub_id, old, state, reason, retest_at)

    def _queue_test(self, conn: sqlite3.Connection, sub_id: str, now: int, trigger: str = "test") -> OpenItem | None:
        mid = "whd_" + ulids.new()
        conn.execute("UPDATE webhook_subscriptions SET test_message_id = ? WHERE id = ?", (mid, sub_id))
        (item,) = self._enqueue(conn, [(mid, sub_id, None, "webhook.test", None, trigger)], now)
        return item

    # ----------------------------------------------------------------------------------------
    # subscription operations (API)
    # ----------------------------------------------------------------------------------------

    async def create_subscription(self, spec: NewSubscription, audit: AuditHook | None = None) -> SubscriptionInfo:
        return await self.store.write(self._create_subscription, spec, audit=audit)

    def _create_subscription(self, conn: sqlite3.Connection, spec: NewSubscription) -> SubscriptionInfo:
        now = now_ms()
        sid = "sub_" + ulids.new()
        state, reason = transitions.initial_state(spec.disabled)
        conn.execute(
            f"INSERT INTO webhook_subscriptions ({_SUB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (sid, spec.url, spec.description, json.dumps(spec.event_types), spec.organization,
             int(spec.disabled), state, reason, now, self.sealer.seal(sid, "secret", spec.secret),
             None, None, None, None, None, now, now, None, None, 0, None))
        if state == "new":
            self._queue_test(conn, sid, now)
        self._state_log.append({"subscription_id": sid, "from_state": None, "to_state": state,
                                "reason": reason or "created"})
        self._reload(conn, [sid])
        return self.subs[sid]

    async def update_subscription(self, sub_id: str, organization: str | None,
                                  patch: SubscriptionPatch, audit: AuditHook | None = None) -> SubscriptionInfo:
        return await self.store.write(self._update_subscription, sub_id, organization, patch, audit=audit)

    def _update_subscription(self, conn: sqlite3.Connection, sub_id: str, organization: str | None,
                             patch: SubscriptionPatch) -> SubscriptionInfo:
        cur = self._visible(sub_id, organization)
        now = now_ms()
        url, disabled, state, reason, retest = transitions.patched_state(cur, patch)
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

    async def delete_subscription(self, sub_id: str, organization: str | None,
                                  audit: AuditHook | None = None) -> SubscriptionInfo:
        return await self.store.write(self._delete_subscription, sub_id, organization, audit=audit)

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
        transitions.require_active(self._visible(sub_id, organization))
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
        return await self.store.write(self._undoable(self._retest), sub_id)

    def _retest(self, conn: sqlite3.Connection, sub_id: str) -> bool:
        sub = self.subs.get(sub_id)
        now = now_ms()
        if not transitions.retest_due(sub, now, self.policy):
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
                            overlap_ms: int, audit: AuditHook | None = None) -> SubscriptionInfo:
        return await self.store.write(self._rotate_secret, sub_id, organization, new_secret, overlap_ms, audit=audit)

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

    async def resend(self, event_id: str, sub_id: str, organization: str | None) -> AttemptRow:
        return await self.store.write(self._undoable(self._resend), event_id, sub_id, organization)

    def _resend(self, conn: sqlite3.Connection, event_id: str, sub_id: str, organization: str | None) -> AttemptRow:
        sub = self._usable(sub_id, organization)
        row = conn.execute("SELECT seq, organization FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None or (organization is not None and row[1] != organization):
            raise RecordNotFound(event_id)
        seq, event_org = row
        transitions.require_same_organization(sub, event_org)
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


# --------------------------------------------------------------------------------------------
# read-only figures for the console (the preview of a job is webhook_jobs.preview_job_count)
# --------------------------------------------------------------------------------------------


def backlog_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Open (pending or sending) deliveries per subscription: a walk of the small partial
    index webhook_messages_open, whose rows leave it once finished."""
    return dict(conn.execute(
        f"SELECT subscription_id, count(*) FROM webhook_messages WHERE {OPEN} GROUP BY subscription_id"))
