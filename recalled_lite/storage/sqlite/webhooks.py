"""Webhook storage on SQLite (spec §5): subscriptions, the outbox, attempts and jobs.

Everything here that writes runs on the single writer thread (through ``store.write``),
inside a group transaction; reads run on the reader pool. ``WebhookStorage`` keeps the
writer-side view of the subscriptions (secrets unsealed, patterns compiled), which the
intake hook matches events against without a query, and hands three things to the delivery
loop after every COMMIT (never before, so the loop only acts on durable rows):

* a new snapshot of the subscriptions when one changed;
* deliveries to send now (``OpenItem``), already marked ``sending`` in the same
  transaction that created them, so the first attempt needs no claim round trip;
* "due" notes: subscription -> earliest ``next_attempt_at`` of rows left ``pending``
  (retries, or the backlog beyond the in-memory hand-off limit), claimed later.

A delivery loop on another backend (PostgreSQL) would implement the same methods.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from ...delivery.retry import Outcome, classify, retry_delay, should_disable
from ...delivery.signing import secret_key_bytes
from ...delivery.subscriptions import (
    SCHEDULED_TRIGGERS, SubscriptionIndex, SubscriptionInfo, TypeFilter,
)
from ...ids import ulid_ceiling, ulid_floor, ulids
from ...timefmt import now_ms
from ..base import EventRecord, RecordNotFound


class InvalidWebhookOperation(Exception):
    """A request that is well-formed but not allowed in the current state (-> 400)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


# --------------------------------------------------------------------------------------------
# Records passed between the storage and the delivery loop
# --------------------------------------------------------------------------------------------


class OpenItem(NamedTuple):
    """A delivery the loop should attempt now (its row is ``sending``)."""

    message_id: str
    subscription_id: str
    event_seq: int | None
    type: str
    example_action: str | None
    trigger: str
    attempt_id: str
    attempt: int  # number of the attempt about to be made (1 = first)
    created_at: int
    queued_at: int
    handoff: bool  # came through the in-memory hand-off (counts against its limit)


class AttemptOutcome(NamedTuple):
    item: OpenItem
    sent: bool  # False: not sent at all (subscription deactivated/invalid meanwhile)
    url: str
    status_code: int | None
    response_body: str | None
    error: str | None
    duration_ms: int | None
    started_at: int
    retry_after: str | None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule: tuple[float, ...]
    jitter: float
    disable_after_ms: int
    lease_ms: int


def attempt_id_for(message_id: str, attempt_id: str | None) -> str:
    # The first attempt of a message shares its ULID: no second id on the intake hot path.
    return attempt_id if attempt_id is not None else "atm_" + message_id[4:]


# --------------------------------------------------------------------------------------------
# Secret sealing: signing secrets are stored XOR-ed with an HMAC-SHA256 keystream derived
# from the server secret (which never lives in the database) and a random nonce.
# --------------------------------------------------------------------------------------------

_SEAL_PREFIX = "sealed:v1:"
_SEAL_LABEL = b"recalled-lite webhook secret\x00"


def _keystream(server_secret: bytes, sub_id: str, nonce: bytes, n: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hmac.new(server_secret, _SEAL_LABEL + sub_id.encode() + b"\x00" + nonce
                        + counter.to_bytes(4, "big"), hashlib.sha256).digest()
        counter += 1
    return bytes(out[:n])


def seal_secret(server_secret: bytes, sub_id: str, secret: str) -> str:
    key = secret_key_bytes(secret)
    nonce = os.urandom(16)
    stream = _keystream(server_secret, sub_id, nonce, len(key))
    sealed = bytes(a ^ b for a, b in zip(key, stream))
    return _SEAL_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")


def unseal_secret(server_secret: bytes, sub_id: str, stored: str) -> str:
    if not stored.startswith(_SEAL_PREFIX):
        return stored  # written by hand in clear: accept it as is
    raw = base64.b64decode(stored[len(_SEAL_PREFIX):])
    nonce, sealed = raw[:16], raw[16:]
    stream = _keystream(server_secret, sub_id, nonce, len(sealed))
    key = bytes(a ^ b for a, b in zip(sealed, stream))
    return "whsec_" + base64.b64encode(key).decode("ascii")


# --------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------

_SUB_COLUMNS = (
    "id, url, description, event_types, organization, disabled, state, state_reason, "
    "state_changed_at, secret, previous_secret, previous_secret_expires_at, test_message_id, "
    "first_failure_at, last_success_at, created_at, updated_at"
)
_INSERT_MESSAGE = (
    "INSERT INTO webhook_messages (id, subscription_id, event_seq, type, example_action, status, "
    "trigger, attempt_id, created_at, queued_at, next_attempt_at, lease_until) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_ATTEMPT = (
    "INSERT OR REPLACE INTO webhook_attempts (id, message_id, subscription_id, event_seq, attempt, "
    "status, trigger, url, response_status_code, response_body, error, duration_ms, created_at, "
    "next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
# The WHERE term of the partial index webhook_messages_open, repeated verbatim in every
# query on open rows: SQLite uses a partial index only when the query contains its term
# (it does not infer `status IN (...)` from `status = 'pending'`).
_OPEN = "status IN ('pending', 'sending')"
_FAIL_PENDING = (
    "UPDATE webhook_messages SET status = 'failed', next_attempt_at = NULL, lease_until = NULL "
    f"WHERE subscription_id = ? AND status = 'pending' AND {_OPEN} "
    "AND trigger IN ('scheduled', 'replay', 'recover')"
)
_EVENT_COLUMNS = (
    "seq, id, organization, action, actor_type, actor_id, actor_name, actor_email, "
    "targets, metadata, ip_address, user_agent, occurred_at, received_at, "
    "idempotency_key, prev_hash, hash, signature"
)
_ATTEMPT_SELECT = (
    "SELECT a.id, a.message_id, e.id, a.subscription_id, a.attempt, a.status, a.trigger, a.url, "
    "a.response_status_code, a.response_body, a.error, a.duration_ms, a.created_at, "
    "a.next_attempt_at FROM webhook_attempts a LEFT JOIN events e ON e.seq = a.event_seq"
)
_OPEN_SELECT = (
    "SELECT coalesce(m.attempt_id, 'atm_' || substr(m.id, 5)), m.id, e.id, m.subscription_id, "
    "m.attempts + 1, m.status, m.trigger, s.url, NULL, NULL, NULL, NULL, m.queued_at, "
    "m.next_attempt_at FROM webhook_messages m LEFT JOIN events e ON e.seq = m.event_seq "
    "JOIN webhook_subscriptions s ON s.id = m.subscription_id"
)
_JOB_COLUMNS = (
    "id, subscription_id, kind, status, begin_at, end_at, total, scanned, queued, skipped, "
    "error, created_at, updated_at, finished_at"
)

AttemptRow = tuple  # (id, message_id, event_id, subscription_id, attempt, status, trigger, url,
#                      response_status_code, response_body, error, duration_ms, created_at,
#                      next_attempt_at)
JobRow = tuple  # _JOB_COLUMNS order


@dataclass(slots=True)
class NewSubscription:
    url: str
    description: str
    event_types: list[str]
    organization: str | None
    disabled: bool
    secret: str


@dataclass(slots=True)
class SubscriptionPatch:
    url: str | None = None
    description: str | None = None
    event_types: list[str] | None = None
    organization: str | None = None
    set_organization: bool = False
    disabled: bool | None = None
    state: str | None = None


class WebhookStorage:
    """The webhook tables of one ``SqliteStore``, and the writer-side subscription view."""

    def __init__(self, store: Any, policy: RetryPolicy, *, handoff_limit: int) -> None:
        self.store = store
        self.policy = policy
        self.handoff_limit = handoff_limit
        self._server_secret: bytes = store.writer.state["secret"]
        self._rng = random.Random()
        # -- writer-thread state ---------------------------------------------------------
        self.subs: dict[str, SubscriptionInfo] = {}
        self.index = SubscriptionIndex(())
        self._handoff: list[OpenItem] = []
        self._due: dict[str, int] = {}
        self._dirty = False
        self.handed = 0  # writer thread only
        # -- set by the delivery loop ----------------------------------------------------
        self.taken: Callable[[], int] = lambda: 0
        self.sink: Callable[[dict[str, SubscriptionInfo] | None, list[OpenItem], dict[str, int]], None] = (
            lambda subs, items, due: None
        )

    # ----------------------------------------------------------------------------------------
    # start-up (writer thread)
    # ----------------------------------------------------------------------------------------

    async def attach(self) -> tuple[dict[str, SubscriptionInfo], dict[str, int], list[str]]:
        """Load the subscriptions, make every unfinished delivery due again (a previous
        process may have died mid-send: at-least-once, same webhook-id), register the
        intake hook and the commit listener. One writer op, so no event slips between."""
        return await self.store.write(self._attach)

    def _attach(self, conn: sqlite3.Connection) -> tuple[dict[str, SubscriptionInfo], dict[str, int], list[str]]:
        now = now_ms()
        self._reload_all(conn)
        for sub_id in self.subs:
            conn.execute(
                "UPDATE webhook_messages SET status = 'pending', next_attempt_at = ?, lease_until = NULL "
                f"WHERE subscription_id = ? AND status = 'sending' AND {_OPEN}", (now, sub_id))
        due = {sid: at for sid, at in conn.execute(
            "SELECT subscription_id, min(next_attempt_at) FROM webhook_messages "
            f"WHERE status = 'pending' AND {_OPEN} GROUP BY subscription_id")}
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
        return self.subs, due, jobs

    def _savepoint_mark(self) -> tuple[Any, ...]:
        return (len(self._handoff), self.handed, dict(self._due), self.subs, self.index, self._dirty)

    def _savepoint_rewind(self, mark: tuple[Any, ...]) -> None:
        # A rolled-back savepoint (one failed op): what it queued or reloaded does not exist.
        handoff_len, self.handed, self._due, self.subs, self.index, self._dirty = mark
        del self._handoff[handoff_len:]

    def _after_rollback(self, conn: sqlite3.Connection) -> None:
        # A whole group was rolled back: nothing it queued exists.
        self.handed -= len(self._handoff)
        self._handoff = []
        self._due = {}
        self._reload_all(conn)

    def _on_commit(self) -> None:
        if not (self._handoff or self._due or self._dirty):
            return
        subs = self.subs if self._dirty else None
        items, due = self._handoff, self._due
        self._handoff, self._due, self._dirty = [], {}, False
        self.sink(subs, items, due)

    # ----------------------------------------------------------------------------------------
    # subscription cache (writer thread)
    # ----------------------------------------------------------------------------------------

    def _info(self, row: Sequence[Any]) -> SubscriptionInfo:
        sid = row[0]
        return SubscriptionInfo(
            id=sid, url=row[1], description=row[2], event_types=tuple(json.loads(row[3])),
            organization=row[4], disabled=bool(row[5]), state=row[6], state_reason=row[7],
            state_changed_at=row[8], secret=unseal_secret(self._server_secret, sid, row[9]),
            previous_secret=(unseal_secret(self._server_secret, sid, row[10])
                             if row[10] is not None else None),
            previous_secret_expires_at=row[11], test_message_id=row[12], first_failure_at=row[13],
            last_success_at=row[14], created_at=row[15], updated_at=row[16],
        )

    def _reload_all(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute(f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions").fetchall()
        self.subs = {row[0]: self._info(row) for row in rows}
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
                subs[sid] = self._info(row)
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
        out: list[OpenItem | None] = []
        params = []
        for mid, sid, seq, mtype, example, trigger in rows:
            if budget > 0:
                budget -= 1
                item = OpenItem(mid, sid, seq, mtype, example, trigger, "atm_" + mid[4:], 1, now, now, True)
                self._handoff.append(item)
                out.append(item)
                params.append((mid, sid, seq, mtype, example, "sending", trigger, None, now, now, now, lease))
            else:
                out.append(None)
                params.append((mid, sid, seq, mtype, example, "pending", trigger, None, now, now, now, None))
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
                status, lease_until = "sending", lease
            else:
                status, lease_until = "pending", None
                if self._due.get(sid, now + 1) > now:
                    self._due[sid] = now
            conn.execute(
                "UPDATE webhook_messages SET status = ?, trigger = ?, attempt_id = ?, run_attempts = 0, "
                "queued_at = ?, next_attempt_at = ?, lease_until = ? WHERE id = ?",
                (status, trigger, attempt_id, now, now, lease_until, mid))
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
                   now: int) -> None:
        conn.execute(
            "UPDATE webhook_subscriptions SET state = ?, state_reason = ?, state_changed_at = ?, "
            "updated_at = ? WHERE id = ?", (state, reason, now, now, sub_id))
        if state in ("invalid", "deactivated"):
            # Deliveries still waiting for a retry stop here; `recover` can send them later.
            conn.execute(_FAIL_PENDING, (sub_id,))

    def _queue_test(self, conn: sqlite3.Connection, sub_id: str, now: int) -> OpenItem | None:
        mid = "whd_" + ulids.new()
        conn.execute("UPDATE webhook_subscriptions SET test_message_id = ? WHERE id = ?", (mid, sub_id))
        (item,) = self._enqueue(conn, [(mid, sub_id, None, "webhook.test", None, "test")], now)
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
            f"INSERT INTO webhook_subscriptions ({_SUB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (sid, spec.url, spec.description, json.dumps(spec.event_types), spec.organization,
             int(spec.disabled), state, reason, now, seal_secret(self._server_secret, sid, spec.secret),
             None, None, None, None, None, now, now))
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

    async def rotate_secret(self, sub_id: str, organization: str | None, new_secret: str,
                            overlap_ms: int) -> SubscriptionInfo:
        return await self.store.write(self._rotate_secret, sub_id, organization, new_secret, overlap_ms)

    def _rotate_secret(self, conn: sqlite3.Connection, sub_id: str, organization: str | None,
                       new_secret: str, overlap_ms: int) -> SubscriptionInfo:
        cur = self._visible(sub_id, organization)
        now = now_ms()
        previous = seal_secret(self._server_secret, sub_id, cur.secret) if overlap_ms > 0 else None
        conn.execute(
            "UPDATE webhook_subscriptions SET secret = ?, previous_secret = ?, "
            "previous_secret_expires_at = ?, updated_at = ? WHERE id = ?",
            (seal_secret(self._server_secret, sub_id, new_secret), previous,
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
        return _open_attempt(conn, mid)

    async def send_example(self, sub_id: str, organization: str | None, action: str) -> AttemptRow:
        return await self.store.write(self._send_example, sub_id, organization, action)

    def _send_example(self, conn: sqlite3.Connection, sub_id: str, organization: str | None,
                      action: str) -> AttemptRow:
        self._usable(sub_id, organization)
        mid = "whd_" + ulids.new()
        self._enqueue(conn, [(mid, sub_id, None, "event.example", action, "example")], now_ms())
        return _open_attempt(conn, mid)

    # ----------------------------------------------------------------------------------------
    # jobs: recover / replay_missing
    # ----------------------------------------------------------------------------------------

    async def create_job(self, kind: str, sub_id: str, organization: str | None, begin: int,
                         end: int | None) -> JobRow:
        return await self.store.write(self._create_job, kind, sub_id, organization, begin, end)

    def _create_job(self, conn: sqlite3.Connection, kind: str, sub_id: str, organization: str | None,
                    begin: int, end: int | None) -> JobRow:
        self._usable(sub_id, organization)
        now = now_ms()
        job_id = "job_" + ulids.new()
        cursor_seq = stop_seq = None
        cursor_id = stop_id = None
        if kind == "replay_missing":
            stop_seq = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            cursor_seq = _first_seq_received_after(conn, begin - _RECEIVED_SKEW_MS, stop_seq) - 1
            total = max(stop_seq - cursor_seq, 0)
        else:
            cursor_id = "whd_" + ulid_floor(begin)
            stop_id = "whd_" + ulid_ceiling(min(end, now) if end is not None else now)
            total = conn.execute(
                "SELECT count(*) FROM webhook_messages WHERE subscription_id = ? AND status = 'failed' "
                "AND id >= ? AND id <= ?", (sub_id, cursor_id, stop_id)).fetchone()[0]
        conn.execute(
            "INSERT INTO webhook_jobs (id, subscription_id, kind, status, begin_at, end_at, cursor_seq, "
            "stop_seq, cursor_id, stop_id, total, created_at, updated_at) "
            "VALUES (?,?,?,'running',?,?,?,?,?,?,?,?,?)",
            (job_id, sub_id, kind, begin, end, cursor_seq, stop_seq, cursor_id, stop_id, total, now, now))
        return _select_job(conn, job_id)

    async def job_step(self, job_id: str, chunk: int, max_backlog: int) -> str:
        """Process one chunk. Returns 'done', 'more' or 'paused' (subscription backlog)."""
        return await self.store.write(self._job_step, job_id, chunk, max_backlog)

    def _job_step(self, conn: sqlite3.Connection, job_id: str, chunk: int, max_backlog: int) -> str:
        row = conn.execute(
            "SELECT subscription_id, kind, status, begin_at, end_at, cursor_seq, stop_seq, cursor_id, "
            "stop_id, created_at FROM webhook_jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row[2] != "running":
            return "done"
        sid, kind, _, begin, end, cursor_seq, stop_seq, cursor_id, stop_id, created_at = row
        now = now_ms()
        sub = self.subs.get(sid)
        stop_reason = None
        if sub is None:
            stop_reason = "the subscription was deleted"
        elif sub.state == "deactivated":
            stop_reason = "the subscription was deactivated"
        elif sub.state == "invalid" and sub.state_changed_at > created_at:
            stop_reason = f"the subscription became invalid: {sub.state_reason}"
        if stop_reason is not None:
            conn.execute(
                "UPDATE webhook_jobs SET status = 'cancelled', error = ?, updated_at = ?, finished_at = ? "
                "WHERE id = ?", (stop_reason, now, now, job_id))
            return "done"
        backlog = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM webhook_messages WHERE subscription_id = ? AND {_OPEN} "
            "LIMIT ?)", (sid, max_backlog)).fetchone()[0]
        if backlog >= max_backlog:
            return "paused"
        if kind == "replay_missing":
            done, scanned, queued, skipped, cursor = self._replay_chunk(
                conn, sub, begin, end, cursor_seq, stop_seq, chunk, now)
            conn.execute(
                "UPDATE webhook_jobs SET cursor_seq = ?, scanned = scanned + ?, queued = queued + ?, "
                "skipped = skipped + ?, updated_at = ? WHERE id = ?",
                (cursor, scanned, queued, skipped, now, job_id))
        else:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM webhook_messages WHERE subscription_id = ? AND status = 'failed' "
                "AND id > ? AND id <= ? ORDER BY id LIMIT ?", (sid, cursor_id, stop_id, chunk))]
            queued = self._requeue(conn, ids, "recover", now)
            done = len(ids) < chunk
            conn.execute(
                "UPDATE webhook_jobs SET cursor_id = ?, scanned = scanned + ?, queued = queued + ?, "
                "updated_at = ? WHERE id = ?",
                (ids[-1] if ids else cursor_id, len(ids), queued, now, job_id))
        if done:
            conn.execute(
                "UPDATE webhook_jobs SET status = 'completed', finished_at = ?, updated_at = ? WHERE id = ?",
                (now, now, job_id))
            return "done"
        return "more"

    def _replay_chunk(self, conn: sqlite3.Connection, sub: SubscriptionInfo, begin: int, end: int | None,
                      cursor: int, stop: int, chunk: int, now: int) -> tuple[bool, int, int, int, int]:
        rows = conn.execute(
            "SELECT seq, organization, action, received_at FROM events WHERE seq > ? AND seq <= ? "
            "ORDER BY seq LIMIT ?", (cursor, stop, chunk)).fetchall()
        if not rows:
            return True, 0, 0, 0, cursor
        types = TypeFilter(sub.event_types)
        wanted = [
            seq for seq, org, action, received in rows
            if received >= begin and (end is None or received <= end)
            and (sub.organization is None or org == sub.organization) and types.matches(action)
        ]
        skipped = 0
        if wanted:
            # Structural "never twice": UNIQUE(subscription_id, event_seq). Events that already
            # have a message (delivered, failed or on their way) are skipped.
            have = {r[0] for r in conn.execute(
                "SELECT event_seq FROM webhook_messages WHERE subscription_id = ? "
                "AND event_seq BETWEEN ? AND ?", (sub.id, wanted[0], wanted[-1]))}
            fresh = [seq for seq in wanted if seq not in have]
            skipped = len(wanted) - len(fresh)
            if fresh:
                ids = ulids.batch(len(fresh))
                self._enqueue(conn, [("whd_" + mid, sub.id, seq, "event.created", None, "replay")
                                     for mid, seq in zip(ids, fresh)], now)
            queued = len(fresh)
        else:
            queued = 0
        last = rows[-1][0]
        return last >= stop or len(rows) < chunk, len(rows), queued, skipped, last

    async def get_job(self, sub_id: str, job_id: str) -> JobRow | None:
        return await self.store.read(_select_job, job_id, sub_id)

    async def list_jobs(self, sub_id: str, limit: int, before_id: str | None) -> list[JobRow]:
        return await self.store.read(_list_jobs, sub_id, limit, before_id)

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
                f"queued_at FROM webhook_messages WHERE subscription_id = ? AND status = 'pending' AND {_OPEN} "
                "AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?", (sid, now, n)).fetchall()
            if rows:
                conn.executemany(
                    "UPDATE webhook_messages SET status = 'sending', lease_until = ? WHERE id = ?",
                    [(lease, r[0]) for r in rows])
                for mid, seq, mtype, example, trigger, attempt_id, attempts, created_at, queued_at in rows:
                    items.append(OpenItem(mid, sid, seq, mtype, example, trigger,
                                          attempt_id_for(mid, attempt_id), attempts + 1, created_at,
                                          queued_at, False))
            next_due[sid] = conn.execute(
                "SELECT min(next_attempt_at) FROM webhook_messages WHERE subscription_id = ? "
                f"AND status = 'pending' AND {_OPEN}", (sid,)).fetchone()[0]
        return items, next_due

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
                "SELECT status, attempt_id, attempts, run_attempts FROM webhook_messages WHERE id = ?",
                (mid,)).fetchone()
            if row is None or row[0] != "sending" or attempt_id_for(mid, row[1]) != item.attempt_id:
                continue  # deleted meanwhile, or not ours
            sid = item.subscription_id
            sub = self.subs.get(sid)
            t = None
            if sub is not None:
                t = track.get(sid)
                if t is None:
                    t = track[sid] = {"state": sub.state, "reason": sub.state_reason,
                                      "changed_at": sub.state_changed_at, "first_failure": sub.first_failure_at,
                                      "last_success": sub.last_success_at, "transition": False,
                                      "touched": False}
            if not r.sent:
                conn.execute(
                    "UPDATE webhook_messages SET status = 'failed', next_attempt_at = NULL, lease_until = NULL "
                    "WHERE id = ?", (mid,))
                continue
            made, run = row[2] + 1, row[3] + 1
            outcome = classify(r.status_code, r.error)
            if t is not None:
                # The subscription's side first: a transition caused by this very attempt
                # (410, disable_after) must also stop this message's retries.
                t["touched"] = True
                if outcome is Outcome.SUCCESS:
                    t["last_success"] = max(t["last_success"] or 0, r.started_at)
                    t["first_failure"] = None
                elif t["first_failure"] is None:
                    t["first_failure"] = r.started_at
                if item.type == "webhook.test" and sub is not None and sub.test_message_id == mid \
                        and t["state"] == "new":
                    if outcome is Outcome.SUCCESS:
                        t.update(state="valid", reason=None, changed_at=now, transition=True)
                    else:
                        t.update(state="invalid", reason="test delivery failed: " + _describe(r),
                                 changed_at=now, transition=True)
                elif outcome is Outcome.GONE and t["state"] in ("new", "valid"):
                    t.update(state="invalid", reason="the receiver answered 410 Gone", changed_at=now,
                             transition=True)
                elif outcome is not Outcome.SUCCESS and t["state"] in ("new", "valid") and should_disable(
                        t["first_failure"] / 1000, (t["last_success"] or 0) / 1000 or None, now / 1000,
                        policy.disable_after_ms / 1000):
                    t.update(state="invalid", changed_at=now, transition=True,
                             reason=f"no successful delivery for {policy.disable_after_ms / 1000:g} seconds "
                                    f"(last error: {_describe(r)})")
            next_at = None
            if outcome is Outcome.SUCCESS:
                conn.execute(
                    "UPDATE webhook_messages SET status = 'success', attempts = ?, run_attempts = ?, "
                    "attempt_id = NULL, next_attempt_at = NULL, lease_until = NULL WHERE id = ?",
                    (made, run, mid))
            else:
                may_retry = (
                    outcome is Outcome.RETRY and item.trigger in SCHEDULED_TRIGGERS and t is not None
                    and t["state"] != "deactivated"
                    and not (t["state"] == "invalid" and t["changed_at"] >= item.queued_at)
                )
                delay = (retry_delay(run, r.status_code, r.retry_after, now / 1000, policy.schedule,
                                     policy.jitter, self._rng) if may_retry else None)
                if delay is None:
                    conn.execute(
                        "UPDATE webhook_messages SET status = 'failed', attempts = ?, run_attempts = ?, "
                        "attempt_id = NULL, next_attempt_at = NULL, lease_until = NULL WHERE id = ?",
                        (made, run, mid))
                else:
                    next_at = now + int(delay * 1000)
                    conn.execute(
                        "UPDATE webhook_messages SET status = 'pending', attempts = ?, run_attempts = ?, "
                        "attempt_id = ?, queued_at = ?, next_attempt_at = ?, lease_until = NULL WHERE id = ?",
                        (made, run, "atm_" + ulids.new(), now, next_at, mid))
                    if self._due.get(sid, next_at + 1) > next_at:
                        self._due[sid] = next_at
            attempts.append((
                item.attempt_id, mid, sid, item.event_seq, made,
                "success" if outcome is Outcome.SUCCESS else "failed", item.trigger, r.url,
                r.status_code, r.response_body, r.error, r.duration_ms, r.started_at, next_at,
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
                self._set_state(conn, sid, t["state"], t["reason"], now)
            changed.append(sid)
        if changed:
            self._reload(conn, changed)

    async def load_for_send(self, items: list[OpenItem]) -> tuple[set[str], dict[int, EventRecord]]:
        """Which of these messages are still ``sending`` (a rolled-back or deleted one is
        dropped), and the events to put in the payloads - read now, so an erasure that
        happened after intake applies to this delivery too."""
        return await self.store.read(_load_for_send, [i.message_id for i in items],
                                     [i.event_seq for i in items if i.event_seq is not None])

    async def due_snapshot(self) -> dict[str, int]:
        return await self.store.read(lambda conn: {sid: at for sid, at in conn.execute(
            "SELECT subscription_id, min(next_attempt_at) FROM webhook_messages "
            f"WHERE status = 'pending' AND {_OPEN} GROUP BY subscription_id")})

    # ----------------------------------------------------------------------------------------
    # attempts (API reads)
    # ----------------------------------------------------------------------------------------

    async def list_attempts(self, *, sub_ids: list[str], event_id: str | None, status: str | None,
                            begin: int | None, end: int | None, cursor: tuple[int, str] | None,
                            limit: int) -> list[AttemptRow] | None:
        return await self.store.read(_list_attempts, sub_ids, event_id, status, begin, end, cursor, limit)

    async def event_visible(self, event_id: str, organization: str | None) -> bool:
        return await self.store.read(_event_visible, event_id, organization)

    async def open_attempt(self, message_id: str) -> AttemptRow | None:
        return await self.store.read(_open_attempt, message_id)


# --------------------------------------------------------------------------------------------
# reader functions
# --------------------------------------------------------------------------------------------

# Events are numbered by the writer a moment after their receivedAt is stamped; a replay
# starts scanning this much before `begin` so an event stamped before a later-numbered one
# is never missed.
_RECEIVED_SKEW_MS = 3600_000


def _first_seq_received_after(conn: sqlite3.Connection, at: int, stop: int) -> int:
    """Smallest seq whose received_at >= at, by binary search over seq (received_at grows
    with seq up to the skew allowed for above). ``stop + 1`` when there is none."""
    lo, hi = 1, stop + 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute("SELECT received_at FROM events WHERE seq >= ? ORDER BY seq LIMIT 1",
                           (mid,)).fetchone()
        if row is None or row[0] >= at:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _describe(r: AttemptOutcome) -> str:
    if r.error:
        return r.error
    return f"HTTP {r.status_code}"


def _select_job(conn: sqlite3.Connection, job_id: str, sub_id: str | None = None) -> JobRow | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM webhook_jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or (sub_id is not None and row[1] != sub_id):
        return None
    return row


def _list_jobs(conn: sqlite3.Connection, sub_id: str, limit: int, before_id: str | None) -> list[JobRow]:
    if before_id is None:
        return conn.execute(f"SELECT {_JOB_COLUMNS} FROM webhook_jobs WHERE subscription_id = ? "
                            "ORDER BY id DESC LIMIT ?", (sub_id, limit)).fetchall()
    return conn.execute(f"SELECT {_JOB_COLUMNS} FROM webhook_jobs WHERE subscription_id = ? AND id < ? "
                        "ORDER BY id DESC LIMIT ?", (sub_id, before_id, limit)).fetchall()


def _load_for_send(conn: sqlite3.Connection, message_ids: list[str], seqs: list[int]
                   ) -> tuple[set[str], dict[int, EventRecord]]:
    conn.execute("BEGIN")  # one snapshot for both queries
    try:
        live: set[str] = set()
        for start in range(0, len(message_ids), 500):
            part = message_ids[start:start + 500]
            live.update(r[0] for r in conn.execute(
                f"SELECT id FROM webhook_messages WHERE status = 'sending' AND id IN ({','.join('?' * len(part))})",
                part))
        events: dict[int, EventRecord] = {}
        unique = sorted(set(seqs))
        for start in range(0, len(unique), 500):
            part = unique[start:start + 500]
            for row in conn.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq IN ({','.join('?' * len(part))})", part):
                events[row[0]] = EventRecord._make(row)
        return live, events
    finally:
        conn.execute("COMMIT")


def _event_visible(conn: sqlite3.Connection, event_id: str, organization: str | None) -> bool:
    row = conn.execute("SELECT organization FROM events WHERE id = ?", (event_id,)).fetchone()
    return row is not None and (organization is None or row[0] == organization)


def _open_attempt(conn: sqlite3.Connection, message_id: str) -> AttemptRow | None:
    return conn.execute(f"{_OPEN_SELECT} WHERE m.id = ?", (message_id,)).fetchone()


def _list_attempts(conn: sqlite3.Connection, sub_ids: list[str], event_id: str | None,
                   status: str | None, begin: int | None, end: int | None,
                   cursor: tuple[int, str] | None, limit: int) -> list[AttemptRow] | None:
    """Newest first (created_at, id). Finished attempts from webhook_attempts, plus the open
    attempt of every pending/sending message. ``limit + 1`` rows so the caller sees has_more."""
    if not sub_ids:
        return []
    conn.execute("BEGIN")
    try:
        event_seq = None
        if event_id is not None:
            row = conn.execute("SELECT seq FROM events WHERE id = ?", (event_id,)).fetchone()
            if row is None:
                return None
            event_seq = row[0]
        marks = ",".join("?" * len(sub_ids))
        rows: list[AttemptRow] = []
        if status in (None, "success", "failed"):
            where = [f"a.subscription_id IN ({marks})"]
            params: list[Any] = list(sub_ids)
            if event_seq is not None:
                where.append("a.event_seq = ?")
                params.append(event_seq)
            if status is not None:
                where.append("a.status = ?")
                params.append(status)
            _time_filters(where, params, "a", begin, end, cursor)
            rows += conn.execute(
                f"{_ATTEMPT_SELECT} WHERE {' AND '.join(where)} ORDER BY a.created_at DESC, a.id DESC LIMIT ?",
                [*params, limit + 1]).fetchall()
        if status in (None, "pending", "sending"):
            where = [f"m.subscription_id IN ({marks})", f"m.{_OPEN}"]
            params = list(sub_ids)
            if status is not None:
                where.append("m.status = ?")
                params.append(status)
            if event_seq is not None:
                where.append("m.event_seq = ?")
                params.append(event_seq)
            _time_filters(where, params, "m", begin, end, cursor, column="queued_at",
                          id_expr="coalesce(m.attempt_id, 'atm_' || substr(m.id, 5))")
            rows += conn.execute(
                f"{_OPEN_SELECT} WHERE {' AND '.join(where)} ORDER BY m.queued_at DESC LIMIT ?",
                [*params, limit + 1]).fetchall()
        rows.sort(key=lambda r: (r[12], r[0]), reverse=True)
        return rows[: limit + 1]
    finally:
        conn.execute("COMMIT")


def _time_filters(where: list[str], params: list[Any], alias: str, begin: int | None, end: int | None,
                  cursor: tuple[int, str] | None, column: str = "created_at",
                  id_expr: str | None = None) -> None:
    col = f"{alias}.{column}"
    if begin is not None:
        where.append(f"{col} >= ?")
        params.append(begin)
    if end is not None:
        where.append(f"{col} <= ?")
        params.append(end)
    if cursor is not None:
        ident = id_expr or f"{alias}.id"
        where.append(f"({col} < ? OR ({col} = ? AND {ident} < ?))")
        params.extend((cursor[0], cursor[0], cursor[1]))
