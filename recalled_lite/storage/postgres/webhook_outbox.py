"""The outbox side of webhook storage on PostgreSQL, shared by several instances: claim due
rows (``FOR UPDATE SKIP LOCKED``, leased to this instance), keep leases, take back rows
whose lease ended (whoever held them), record results (and the subscription state they
imply, by delivery/transitions.py), quarantine results that cannot be recorded.

``OutboxOps`` is a part of ``WebhookStorage`` (storage/postgres/webhooks.py), kept apart for
size, like storage/sqlite/webhook_outbox.py, whose behaviour it mirrors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from ...delivery import healing
from ...delivery.healing import InvalidCause
from ...ids import ulids
from ...timefmt import now_ms
from ..base import EventRecord
from ..webhook_base import AttemptOutcome, OpenItem, attempt_id_for
from . import webhook_reads as reads
from .webhook_reads import OPEN

if TYPE_CHECKING:
    from .webhooks import WebhookStorage

_INSERT_ATTEMPT = (
    "INSERT INTO webhook_attempts (id, message_id, subscription_id, event_seq, attempt, "
    "status, trigger, url, response_status_code, response_body, error, duration_ms, created_at, "
    "next_attempt_at, warning) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
    "ON CONFLICT (id) DO UPDATE SET message_id = EXCLUDED.message_id, "
    "subscription_id = EXCLUDED.subscription_id, event_seq = EXCLUDED.event_seq, attempt = EXCLUDED.attempt, "
    "status = EXCLUDED.status, trigger = EXCLUDED.trigger, url = EXCLUDED.url, "
    "response_status_code = EXCLUDED.response_status_code, response_body = EXCLUDED.response_body, "
    "error = EXCLUDED.error, duration_ms = EXCLUDED.duration_ms, created_at = EXCLUDED.created_at, "
    "next_attempt_at = EXCLUDED.next_attempt_at, warning = EXCLUDED.warning"
)
_MESSAGE_DONE = (
    "UPDATE webhook_messages SET status = %s, attempts = %s, run_attempts = %s, attempt_id = NULL, "
    "next_attempt_at = NULL, lease_until = NULL, lease_owner = NULL WHERE id = %s"
)
# Due rows another instance is claiming right now are skipped (locked): look again after
# this long rather than at once, so two loops do not spin on each other's rows.
_LOCKED_RETRY_MS = 200


def _insert_attempts(conn: psycopg.Connection, attempts: list[tuple[Any, ...]]) -> None:
    if attempts:
        with conn.cursor() as cur:
            cur.executemany(_INSERT_ATTEMPT, attempts)


class OutboxOps:
    async def claim(self: "WebhookStorage", requests: list[tuple[str, int]]) -> tuple[list[OpenItem], dict[str, int | None]]:
        return await self.store.write(self._op(self._claim), requests)

    def _claim(self: "WebhookStorage", conn: psycopg.Connection, requests: list[tuple[str, int]]
               ) -> tuple[list[OpenItem], dict[str, int | None]]:
        """Lease up to ``n`` due rows of each subscription that no other instance is
        claiming; report each one's next due time. The subscriptions are checked first: a
        row may belong to one another instance created a moment ago, which the loop must
        know before it gets the row."""
        self._fresh(conn)
        now = now_ms()
        lease = now + self.policy.lease_ms
        items: list[OpenItem] = []
        next_due: dict[str, int | None] = {}
        for sid, n in requests:
            rows = conn.execute(
                "UPDATE webhook_messages m SET status = 'sending', lease_until = %s, lease_owner = %s "
                "FROM (SELECT id FROM webhook_messages WHERE subscription_id = %s AND status = 'pending' "
                f"AND {OPEN} AND next_attempt_at <= %s ORDER BY next_attempt_at, id LIMIT %s "
                "FOR UPDATE SKIP LOCKED) c WHERE m.id = c.id RETURNING m.id, m.event_seq, m.type, "
                "m.example_action, m.trigger, m.attempt_id, m.attempts, m.created_at, m.queued_at, "
                "m.next_attempt_at", (lease, self.instance, sid, now, n)).fetchall()
            rows.sort(key=lambda r: (r[9], r[0]))
            for mid, seq, mtype, example, trigger, attempt_id, attempts, created_at, queued_at, _ in rows:
                items.append(OpenItem(mid, sid, seq, mtype, example, trigger, attempt_id_for(mid, attempt_id),
                                      attempts + 1, created_at, queued_at, False))
            due = conn.execute(
                "SELECT min(next_attempt_at) FROM webhook_messages WHERE subscription_id = %s "
                f"AND status = 'pending' AND {OPEN}", (sid,)).fetchone()[0]
            if due is not None and due <= now and len(rows) < n:
                due = now + _LOCKED_RETRY_MS  # the rest is being claimed by another instance
            next_due[sid] = due
        return items, next_due

    async def renew_leases(self: "WebhookStorage", message_ids: list[str]) -> None:
        """Extend the leases of the rows this instance still holds in memory."""
        if message_ids:
            await self.store.write(self._op(self._renew_leases), message_ids)

    def _renew_leases(self: "WebhookStorage", conn: psycopg.Connection, message_ids: list[str]) -> None:
        conn.execute(
            "UPDATE webhook_messages SET lease_until = %s WHERE id = ANY(%s) AND status = 'sending' "
            "AND lease_owner = %s", (now_ms() + self.policy.lease_ms, message_ids, self.instance))

    async def reclaim_expired(self: "WebhookStorage", held: frozenset[str]) -> int:
        """Make due again every `sending` row whose lease ran out - lost in memory here, or
        held by an instance that died - except those this instance still holds. Same message
        id, same open attempt: the receiver sees the same webhook-id. Also the periodic
        check that covers missed notices: the subscription version, and running jobs whose
        lease ended (their instance died), which this instance then runs."""
        return await self.store.write(self._op(self._reclaim_expired), held)

    def _reclaim_expired(self: "WebhookStorage", conn: psycopg.Connection, held: frozenset[str]) -> int:
        self._fresh(conn)
        now = now_ms()
        rows = conn.execute(
            "UPDATE webhook_messages m SET status = 'pending', next_attempt_at = %s, lease_until = NULL, "
            "lease_owner = NULL FROM (SELECT id FROM webhook_messages WHERE status = 'sending' "
            f"AND {OPEN} AND coalesce(lease_until, 0) < %s AND NOT (id = ANY(%s)) FOR UPDATE SKIP LOCKED) c "
            "WHERE m.id = c.id RETURNING m.subscription_id", (now, now, sorted(held))).fetchall()
        for (sid,) in rows:
            self._note_due(sid, now)
        self._adopt_orphan_jobs(conn, now)
        return len(rows)

    async def apply_results(self: "WebhookStorage", results: list[AttemptOutcome]) -> None:
        await self.store.write(self._op(self._apply_results), results)

    def _apply_results(self: "WebhookStorage", conn: psycopg.Connection, results: list[AttemptOutcome]) -> None:
        now = now_ms()
        # Subscriptions first, then messages (the order every op locks them in): the failure
        # streak and the state are read as committed, under the row lock, not from a cache
        # another instance's results may have made stale.
        self._read_rows(conn, sorted({r.item.subscription_id for r in results}), lock=True)
        self._fresh(conn)
        current = {row[0]: row for row in conn.execute(
            "SELECT id, status, attempt_id, attempts, run_attempts, lease_owner FROM webhook_messages "
            "WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (sorted({r.item.message_id for r in results}),))}
        track: dict[str, dict[str, Any]] = {}
        attempts = []
        for r in results:
            item = r.item
            mid = item.message_id
            row = current.get(mid)
            if row is None or row[1] != "sending" or attempt_id_for(mid, row[2]) != item.attempt_id \
                    or row[5] != self.instance:
                continue  # deleted meanwhile, or not ours (any more): its new holder sends it
            row = current[mid] = (mid, "done", None, row[3], row[4], None)  # a result twice counts once
            status, made, run, next_at, attempt = self._plan_result(r, row[3], row[4], track, now)
            if status == "pending":
                conn.execute(
                    "UPDATE webhook_messages SET status = 'pending', attempts = %s, run_attempts = %s, "
                    "attempt_id = %s, queued_at = %s, next_attempt_at = %s, lease_until = NULL, "
                    "lease_owner = NULL WHERE id = %s",
                    (made, run, "atm_" + ulids.new(), now, next_at, mid))
            else:
                conn.execute(_MESSAGE_DONE, (status, made, run, mid))
            if attempt is not None:
                attempts.append(attempt)
        _insert_attempts(conn, attempts)
        changed = []
        for sid, t in track.items():
            if not t["touched"]:
                continue
            conn.execute(
                "UPDATE webhook_subscriptions SET first_failure_at = %s, last_success_at = %s WHERE id = %s",
                (t["first_failure"], t["last_success"], sid))
            if t["transition"]:
                self._set_state(conn, sid, t["state"], t["reason"], now, t["cause"] or InvalidCause.TEST_FAILED)
                healed_from = t["healed_from"]
                sub = self.subs[sid]
                if healed_from is not None and t["state"] == "valid" and self.policy.replay_after_retest:
                    self._insert_job(conn, "replay_missing", sid, healing.replay_begin(healed_from, sub.created_at),
                                     None, now)
                changed.append(sid)
            else:
                # Only the failure streak moved: no new version (the others re-read the row
                # under its lock when they apply results), but our own cache follows it.
                self._read_rows(conn, [sid], lock=False)
        if changed:
            self._reload(conn, changed)

    async def quarantine_results(self: "WebhookStorage", results: list[tuple[AttemptOutcome, str]]) -> None:
        """Results that could not be recorded, however often tried: each delivery becomes
        ``failed``, with an attempt that says why. ``recover`` or a resend can send them again."""
        await self.store.write(self._op(self._quarantine_results), results)

    def _quarantine_results(self: "WebhookStorage", conn: psycopg.Connection,
                            results: list[tuple[AttemptOutcome, str]]) -> None:
        attempts = []
        for r, error in results:
            mid = r.item.message_id
            row = conn.execute("SELECT status, attempts, run_attempts, lease_owner FROM webhook_messages "
                               "WHERE id = %s FOR UPDATE", (mid,)).fetchone()
            if row is None or row[0] != "sending" or row[3] != self.instance:
                continue
            made = row[1] + 1
            conn.execute(_MESSAGE_DONE, ("failed", made, row[2] + 1, mid))
            attempts.append((
                r.item.attempt_id, mid, r.item.subscription_id, r.item.event_seq, made, "failed", r.item.trigger,
                r.url, r.status_code, r.response_body, error, r.duration_ms, r.started_at, None, r.warning))
        _insert_attempts(conn, attempts)

    async def load_for_send(self: "WebhookStorage", items: list[OpenItem]) -> tuple[set[str], dict[int, EventRecord]]:
        """Which of these messages are still ``sending`` (a rolled-back, deleted or taken-back
        one is dropped), and the events to put in the payloads, read now (erasure applies)."""
        return await self.store.read(reads.load_for_send, [i.message_id for i in items],
                                     [i.event_seq for i in items if i.event_seq is not None], self.instance)

    async def due_snapshot(self) -> dict[str, int]:
        """The loop's periodic resync (delivery/service.py), which doubles as the fallback
        for a missed notice of a subscription change: it reloads when the version moved."""
        due, version = await self.store.read(reads.due_and_version)
        if version != self._version:
            self._schedule_refresh()
        return due
