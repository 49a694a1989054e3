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
``delivery/`` (``transitions.py`` is the subscription state machine);
``storage/webhook_base.py`` is the interface a PostgreSQL backend would implement too.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
from typing import Any, Callable, Iterable, Sequence

from ...delivery import healing, transitions
from ...delivery.healing import InvalidCause
from ...delivery.sealing import SealError, Sealer
from ...delivery.subscriptions import SubscriptionIndex, SubscriptionInfo
from ...ids import ulids
from ...timefmt import now_ms
from ..base import AuditHook, EventRecord, RecordNotFound
from ..webhook_base import (  # noqa: F401 - re-exported for callers of the first release
    AttemptOutcome, AttemptRow, InvalidWebhookOperation, JobRow, NewSubscription, OpenItem, RetryPolicy,
    Sink, SubscriptionPatch, attempt_id_for,
)
from . import webhook_reads as reads
from .webhook_jobs import JobOps
from .webhook_outbox import OutboxOps
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
_FAIL_PENDING = (
    "UPDATE webhook_messages SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, "
    f"lease_owner = NULL WHERE subscription_id = ? AND status = 'pending' AND {OPEN} "
    "AND trigger IN ('scheduled', 'replay', 'recover')"
)
# Set once every stored secret is sealed:v2 (the start-up upgrade ran); from then on
# anything else in a secret column is refused.
_SEAL_MARK = "webhook_secret_seal"


class WebhookStorage(OutboxOps, JobOps):
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

    def _savepoint_mark(self) -> tuple[Any, ...]:
        return (len(self._handoff), self.handed, dict(self._due), self.subs, self.index, self._dirty)

    def _savepoint_rewind(self, mark: tuple[Any, ...]) -> None:
        # A rolled-back savepoint (one failed op): what it queued or reloaded does not exist.
        handoff_len, self.handed, self._due, self.subs, self.index, self._dirty = mark
        del self._handoff[handoff_len:]

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

    def _undoable(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as a writer op whose in-memory notes are undone with its SAVEPOINT: when it
        raises, the writer rolls back only its statements, so what it queued for the loop,
        logged for after the COMMIT or changed in the cache must go too."""
        def op(conn: sqlite3.Connection, *args: Any) -> Any:
            marks = (len(self._handoff), len(self._state_log), len(self._new_jobs), dict(self._due),
                     self.handed, self.subs, self.index, self._dirty)
            try:
                return fn(conn, *args)
            except BaseException:
                handoff, state_log, new_jobs, self._due, self.handed, self.subs, self.index, self._dirty = marks
                del self._handoff[handoff:], self._state_log[state_log:], self._new_jobs[new_jobs:]
                raise
        return op

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
        invalid_since, invalid_cause, retest_at, retests = transitions.state_change(cur, state, now, cause, self.policy)
        conn.execute(
            "UPDATE webhook_subscriptions SET state = ?, state_reason = ?, state_changed_at = ?, "
            "updated_at = ?, invalid_since = ?, invalid_cause = ?, retest_at = ?, retests = ? WHERE id = ?",
            (state, reason, now, now, invalid_since, invalid_cause, retest_at, retests, sub_id))
        if state in transitions.STOPS_PENDING:
            # Deliveries still waiting for a retry stop here; `recover` can send them later.
            conn.execute(_FAIL_PENDING, (sub_id,))
        if old != state:
            fields: dict[str, Any] = {"subscription_id": sub_id, "from_state": old, "to_state": state,
                                      "reason": reason or transitions.default_reason(state)}
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

    def _usable(self, sub_id: str, organization: str | None) -> SubscriptionInfo:
        return transitions.require_active(self._visible(sub_id, organization))

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
