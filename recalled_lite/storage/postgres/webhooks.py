"""Webhook storage on PostgreSQL (spec §5), for several instances on one database.

The same contract as storage/sqlite/webhooks.py, and the same writer-side view
(storage/webhook_state.WebhookState): each instance's writer thread caches the
subscriptions, matches events against them inside the intake transaction, inserts the
outbox rows there and hands first attempts to its own loop, leased to itself. What changes
with several instances:

* **The cache is checked, not trusted.** Every change of a subscription bumps
  ``webhook_state.subs_version`` in its transaction; before an instance matches events,
  applies results or runs an API change, it compares that version with its own and reloads
  when another instance changed something. Every webhook write takes the chain-head lock
  first (``lock_order``), so an event numbered after a change is always matched against it,
  and no two instances' write groups can deadlock on webhook rows.
* **Claims skip what others hold.** Pending rows are claimed ``FOR UPDATE SKIP LOCKED`` and
  leased (``lease_owner``, ``lease_until``); a row whose lease ended (its instance died) goes
  back to ``pending`` with the same message id, for whichever instance claims it next
  (webhook_outbox.py). Jobs carry a lease too (webhook_jobs.py).
* **NOTIFY wakes the others.** An op that leaves work pending, or changes subscriptions,
  calls ``pg_notify`` inside its transaction (so it fires at COMMIT and never for a rollback);
  each instance's listener thread (webhook_notify.py) feeds the due times to its loop and
  reloads the subscriptions. Poolers may drop NOTIFY: the version check, the loop's resync
  of due times and the lease keeper's tick make a missed one a delay, never a loss.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Callable, Iterable

import psycopg

from ...delivery import transitions
from ...delivery.healing import InvalidCause
from ...delivery.subscriptions import SubscriptionInfo
from ...ids import ulids
from ...timefmt import now_ms
from ..base import EventRecord
from ..webhook_base import AttemptRow, OpenItem, RetryPolicy
from ..webhook_state import SUB_COLUMNS, NewMessage, WebhookState
from . import webhook_reads as reads
from .webhook_jobs import JobOps
from .webhook_subscriptions import SubscriptionOps
from .webhook_notify import CHANNEL, Listener, payloads
from .webhook_outbox import OutboxOps
from .webhook_reads import OPEN

log = logging.getLogger("recalled_lite.webhooks")

# One statement for all the messages of an intake group: one array per column.
_INSERT_MESSAGES = (
    "INSERT INTO webhook_messages (id, subscription_id, event_seq, type, example_action, status, "
    "trigger, attempt_id, created_at, queued_at, next_attempt_at, lease_until, lease_owner) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::text[])"
)
_FAIL_PENDING = (
    "UPDATE webhook_messages SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, "
    f"lease_owner = NULL WHERE subscription_id = %s AND status = 'pending' AND {OPEN} "
    "AND trigger IN ('scheduled', 'replay', 'recover')"
)
_SEAL_MARK = "webhook_secret_seal"
_NAME_WAIT_SECONDS = 3.0


def lock_order(conn: psycopg.Connection, state: dict[str, Any] | None = None) -> None:
    """Every webhook write op takes the chain-head row lock first, as every append does.
    (PostgresStore's writer already takes it at the start of every group, `chain_locked` in
    its state; then this costs nothing. It stays so these ops keep the order on their own.)

    A write group holds its locks until its COMMIT, and a group mixes ops in any order: one
    instance's group may append (chain head) and then record results (subscription and
    message rows) while another's does the same the other way round. Taking the chain head
    first in every op that locks webhook rows gives all of them one order, so two instances
    never deadlock; the cost is that webhook writes serialize with intake across instances,
    which appends already do among themselves."""
    if state is None or not state.get("chain_locked"):
        conn.execute("SELECT 1 FROM chain_head WHERE id = 1 FOR UPDATE")


class WebhookStorage(WebhookState, SubscriptionOps, OutboxOps, JobOps):
    """The webhook tables of one ``PostgresStore``, and this instance's view of them."""

    def __init__(self, store: Any, policy: RetryPolicy, *, handoff_limit: int) -> None:
        super().__init__(store, policy, handoff_limit=handoff_limit)
        # -- writer-thread state, besides WebhookState's ---------------------------------
        self._version = -1  # webhook_state.subs_version the cache reflects
        self._raw: dict[str, tuple[Any, ...]] = {}  # sid -> the row the cache was built from
        self._pub_due: dict[str, int] = {}  # due times to tell the other instances
        self._pub_subs = False
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refresh_pending = False

    # ----------------------------------------------------------------------------------------
    # start-up and shutdown
    # ----------------------------------------------------------------------------------------

    async def attach(self) -> tuple[dict[str, SubscriptionInfo], dict[str, int], list[str]]:
        """Seal every secret as v2 (once), load the subscriptions, make due again every
        `sending` row whose lease ran out, register the hooks; then start listening. One
        writer op, so no event slips between."""
        result = await self.store.write(self._attach)
        self._loop = asyncio.get_running_loop()
        store = self.store
        # Ends on its own once the store is closed (store.started goes False), so a store
        # closed without close_webhooks() leaves no thread or connection behind.
        self._listener = Listener(store.url, self.instance, self._heard, self._resync_from,
                                  alive=lambda: getattr(store, "started", True))
        self._listener.start()
        return result

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def _attach(self, conn: psycopg.Connection) -> tuple[dict[str, SubscriptionInfo], dict[str, int], list[str]]:
        self._claim_name(conn)
        lock_order(conn, self.store.writer.state)
        now = now_ms()
        self._upgrade_secrets(conn)
        self._reload_all(conn)
        # Other instances may be running: the orphans are the rows whose lease ended, and the
        # rows of this instance's own previous run (same name, and it holds the name now).
        conn.execute(
            "UPDATE webhook_messages SET status = 'pending', next_attempt_at = %s, lease_until = NULL, "
            f"lease_owner = NULL WHERE status = 'sending' AND {OPEN} "
            "AND (coalesce(lease_until, 0) < %s OR lease_owner = %s)", (now, now, self.instance))
        due = reads.due_snapshot(conn)
        jobs = [row[0] for row in conn.execute(
            "SELECT id FROM webhook_jobs WHERE status = 'running' "
            "AND (coalesce(lease_until, 0) < %s OR lease_owner = %s) ORDER BY id", (now, self.instance))]
        self.store.add_intake_hook(self._intake_hook)
        self.store.add_commit_listener(self._on_commit)
        writer = self.store.writer
        previous_reload = writer.reload_state

        def reload_state(c: Any) -> None:
            previous_reload(c)
            self._after_rollback(c)

        writer.reload_state = reload_state
        writer.savepoint_listeners.append((self._savepoint_mark, self._savepoint_rewind))
        self._dirty = False
        self._new_jobs = []
        self._state_log = []
        self._pub_due, self._pub_subs = {}, False
        return self.subs, due, jobs

    def _claim_name(self, conn: psycopg.Connection) -> None:
        """Hold this instance's name (a session advisory lock on the writer's connection) so
        that a second live process given the same name - two servers on one address by
        mistake - cannot take this one's rows for its previous run's: it gets a random one."""
        key = int.from_bytes(hashlib.sha256(self.instance.encode()).digest()[:8], "big", signed=True)
        # A restart right after a crash may find its previous run's session not gone yet:
        # the server ends it as soon as it sees the closed socket, so wait a moment.
        deadline = time.monotonic() + _NAME_WAIT_SECONDS
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            taken, self.instance = self.instance, "ins_" + ulids.new()
            log.warning("another running server uses this instance name; leasing under a random one",
                        extra={"fields": {"name": taken, "instance": self.instance}})
            return

    async def release(self) -> None:
        """At a graceful stop: what this instance still holds goes back to `pending` (due now)
        and its jobs lose their lease, so the other instances take them at once."""
        await self.store.write(self._op(self._release))

    def _release(self, conn: psycopg.Connection) -> None:
        now = now_ms()
        for (sid,) in conn.execute(
                "UPDATE webhook_messages SET status = 'pending', next_attempt_at = %s, lease_until = NULL, "
                f"lease_owner = NULL WHERE status = 'sending' AND {OPEN} AND lease_owner = %s "
                "RETURNING subscription_id", (now, self.instance)).fetchall():
            self._note_due(sid, now)
        conn.execute("UPDATE webhook_jobs SET lease_owner = NULL, lease_until = NULL "
                     "WHERE status = 'running' AND lease_owner = %s", (self.instance,))

    def _upgrade_secrets(self, conn: psycopg.Connection) -> None:
        """sealed:v1 and cleartext secrets (a log copied from SQLite) -> sealed:v2, once."""
        mark = conn.execute("SELECT value FROM meta WHERE key = %s", (_SEAL_MARK,)).fetchone()
        if mark is not None and mark[0] == "v2":
            return
        rows = conn.execute("SELECT id, secret, previous_secret FROM webhook_subscriptions FOR UPDATE").fetchall()
        upgrades = self._plan_secret_upgrades(rows)
        for column, sealed, sid in upgrades:
            conn.execute(f"UPDATE webhook_subscriptions SET {column} = %s WHERE id = %s", (sealed, sid))
        upgraded = len(upgrades)
        conn.execute("INSERT INTO meta (key, value) VALUES (%s, 'v2') ON CONFLICT (key) DO UPDATE SET value = 'v2'",
                     (_SEAL_MARK,))
        if upgraded:
            self._bump_version(conn)
        self.secrets_upgraded = upgraded

    # -- undo: WebhookState's notes plus the version, the raw rows and what to publish --------

    def _savepoint_mark(self) -> tuple[Any, ...]:
        return (super()._savepoint_mark(), self._version, self._raw, dict(self._pub_due), self._pub_subs)

    def _savepoint_rewind(self, mark: tuple[Any, ...]) -> None:
        base, self._version, self._raw, self._pub_due, self._pub_subs = mark
        super()._savepoint_rewind(base)

    def _op(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """A writer op: its notes undone if it raises (WebhookState._undoable), and what the
        other instances must hear published in its transaction before it returns."""
        undoable = self._undoable(fn)

        def op(conn: psycopg.Connection, *args: Any) -> Any:
            marks = (self._version, self._raw, dict(self._pub_due), self._pub_subs)
            try:
                lock_order(conn, self.store.writer.state)
                result = undoable(conn, *args)
                self._publish(conn)
                return result
            except BaseException:
                self._version, self._raw, self._pub_due, self._pub_subs = marks
                raise
        return op

    def _after_rollback(self, conn: psycopg.Connection) -> None:
        self._forget_notes()
        self._pub_due, self._pub_subs = {}, False
        try:
            self._reload_all(conn)
        except psycopg.Error:
            raise
        except Exception:
            log.exception("reloading the webhook subscriptions failed; keeping the previous view")

    # -- NOTIFY --------------------------------------------------------------------------------

    def _note_due(self, sub_id: str, at: int) -> None:
        super()._note_due(sub_id, at)
        if self._pub_due.get(sub_id, at + 1) > at:
            self._pub_due[sub_id] = at

    def _publish(self, conn: psycopg.Connection) -> None:
        if not (self._pub_due or self._pub_subs):
            return
        for payload in payloads(self.instance, self._pub_due, self._version if self._pub_subs else None):
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        self._pub_due, self._pub_subs = {}, False

    def _heard(self, due: dict[str, int], subs_changed: bool) -> None:
        """On the listener thread: another instance committed pending work or a change of
        subscriptions."""
        if due:
            self.sink(None, [], due, [])
        if subs_changed:
            self._schedule_refresh()

    def _resync_from(self, conn: psycopg.Connection) -> None:
        """On the listener thread, right after (re)connecting: whatever was committed before
        LISTEN took effect was not announced to us."""
        due = reads.due_snapshot(conn)
        if due:
            self.sink(None, [], due, [])
        self._schedule_refresh()

    def _schedule_refresh(self) -> None:
        loop = self._loop
        if loop is None or self._refresh_pending:
            return
        self._refresh_pending = True

        async def refresh() -> None:
            self._refresh_pending = False  # a notice arriving while this runs queues another
            try:
                await self.store.write(self._op(self._fresh))
            except Exception:
                log.warning("reloading webhook subscriptions after a notice failed; the next check retries",
                            exc_info=True)

        try:
            asyncio.run_coroutine_threadsafe(refresh(), loop)
        except RuntimeError:  # the loop is closed: shutting down
            self._refresh_pending = False

    # ----------------------------------------------------------------------------------------
    # subscription cache (writer thread)
    # ----------------------------------------------------------------------------------------

    def _fresh(self, conn: psycopg.Connection) -> None:
        """Reload everything when another instance changed a subscription since we looked."""
        version = conn.execute("SELECT subs_version FROM webhook_state WHERE id = 1").fetchone()[0]
        if version != self._version:
            self._reload_all(conn)

    def _reload_all(self, conn: psycopg.Connection) -> None:
        # The version first: a change committed between the two reads makes the rows newer
        # than the version, which only costs another reload.
        self._version = conn.execute("SELECT subs_version FROM webhook_state WHERE id = 1").fetchone()[0]
        rows = [tuple(r) for r in conn.execute(f"SELECT {SUB_COLUMNS} FROM webhook_subscriptions").fetchall()]
        self._raw = {row[0]: row for row in rows}
        self._set_all(rows)

    def _bump_version(self, conn: psycopg.Connection) -> bool:
        """Count a change of subscriptions (taking webhook_state's row lock, so changes
        serialize across instances). True if our cache had missed another's change."""
        new = conn.execute("UPDATE webhook_state SET subs_version = subs_version + 1 WHERE id = 1 "
                           "RETURNING subs_version").fetchone()[0]
        missed = new - 1 != self._version
        self._version = new
        self._pub_subs = True
        return missed

    def _reload(self, conn: psycopg.Connection, sub_ids: Iterable[str]) -> None:
        """This op changed `sub_ids`: count the change and re-read them."""
        if self._bump_version(conn):
            version = self._version
            self._reload_all(conn)
            self._version = version
            return
        self._read_rows(conn, list(sub_ids), lock=False)

    def _read_rows(self, conn: psycopg.Connection, sub_ids: list[str], *, lock: bool) -> None:
        """Refresh the cached rows of `sub_ids` that differ from the table (a change by
        another instance that did not change the version: failure streak bookkeeping)."""
        if not sub_ids:
            return
        found = {r[0]: tuple(r) for r in conn.execute(
            f"SELECT {SUB_COLUMNS} FROM webhook_subscriptions WHERE id = ANY(%s) ORDER BY id"
            + (" FOR UPDATE" if lock else ""), (sub_ids,))}
        changed: dict[str, Any] = {sid: found.get(sid) for sid in sub_ids
                                   if found.get(sid) != self._raw.get(sid)}
        if not changed:
            return
        raw = dict(self._raw)
        for sid, row in changed.items():
            if row is None:
                raw.pop(sid, None)
            else:
                raw[sid] = row
        self._raw = raw
        self._set_some(changed)

    # ----------------------------------------------------------------------------------------
    # queueing (writer thread)
    # ----------------------------------------------------------------------------------------

    def _enqueue(self, conn: psycopg.Connection, rows: list[NewMessage], now: int) -> list[OpenItem | None]:
        out, params = self._plan_enqueue(rows, now)
        if params:
            conn.execute(_INSERT_MESSAGES, [list(column) for column in zip(*params)])
        return out

    def _requeue(self, conn: psycopg.Connection, message_ids: list[str], trigger: str, now: int) -> int:
        """Another attempt of finished messages (resend / recover), same message ids."""
        budget = self._budget()
        count = 0
        for mid in message_ids:
            row = conn.execute(
                "SELECT subscription_id, event_seq, type, example_action, attempts, created_at, status "
                "FROM webhook_messages WHERE id = %s FOR UPDATE", (mid,)).fetchone()
            if row is None or row[6] in ("pending", "sending"):
                continue
            sid, seq, mtype, example, attempts, created_at, _ = row
            values, budget = self._plan_requeue(mid, sid, seq, mtype, example, attempts, created_at,
                                                trigger, now, budget)
            conn.execute(
                "UPDATE webhook_messages SET status = %s, trigger = %s, attempt_id = %s, run_attempts = 0, "
                "queued_at = %s, next_attempt_at = %s, lease_until = %s, lease_owner = %s WHERE id = %s",
                (*values, mid))
            count += 1
        return count

    def _intake_hook(self, conn: psycopg.Connection, records: list[EventRecord]) -> None:
        """Inside the event-intake transaction (after the chain-head lock): one message per
        matching subscription, matched against the subscriptions as committed."""
        self._fresh(conn)
        rows = self._intake_messages(records)
        if not rows:
            return
        self._enqueue(conn, rows, now_ms())
        self._publish(conn)

    def _set_state(self, conn: psycopg.Connection, sub_id: str, state: str, reason: str | None,
                   now: int, cause: InvalidCause = InvalidCause.TEST_FAILED) -> None:
        cur = self.subs.get(sub_id)
        old = cur.state if cur is not None else None
        invalid_since, invalid_cause, retest_at, retests = transitions.state_change(cur, state, now, cause, self.policy)
        conn.execute(
            "UPDATE webhook_subscriptions SET state = %s, state_reason = %s, state_changed_at = %s, "
            "updated_at = %s, invalid_since = %s, invalid_cause = %s, retest_at = %s, retests = %s WHERE id = %s",
            (state, reason, now, now, invalid_since, invalid_cause, retest_at, retests, sub_id))
        if state in transitions.STOPS_PENDING:
            conn.execute(_FAIL_PENDING, (sub_id,))
        self._state_note(sub_id, old, state, reason, retest_at)

    def _queue_test(self, conn: psycopg.Connection, sub_id: str, now: int, trigger: str = "test") -> OpenItem | None:
        mid = "whd_" + ulids.new()
        conn.execute("UPDATE webhook_subscriptions SET test_message_id = %s WHERE id = %s", (mid, sub_id))
        (item,) = self._enqueue(conn, [(mid, sub_id, None, "webhook.test", None, trigger)], now)
        return item

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


# The console's figures (the preview of a job is webhook_jobs.preview_job_count) and the gauges.
backlog_counts = reads.backlog_counts
webhook_counts = reads.webhook_counts
