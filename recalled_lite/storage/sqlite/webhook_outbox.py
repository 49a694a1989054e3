"""The outbox side of webhook storage on SQLite: what the delivery loop asks of it - claim
due rows, keep leases, record results (and the subscription state they imply, by the pure
rules of delivery/transitions.py), quarantine results that cannot be recorded, read what to send.

``OutboxOps`` is a part of ``WebhookStorage`` (storage/sqlite/webhooks.py), kept apart for
size: it uses that class's subscription cache and state changes (``subs``, ``_set_state``,
``_reload``, ``_insert_job``) and its per-transaction notes (``_due``).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from ...delivery import healing, transitions
from ...delivery.healing import InvalidCause
from ...delivery.retry import Outcome, classify, retry_delay
from ...ids import ulids
from ...timefmt import now_ms
from ..base import EventRecord
from ..webhook_base import AttemptOutcome, OpenItem, attempt_id_for
from . import webhook_reads as reads
from .webhook_reads import OPEN

if TYPE_CHECKING:
    from .webhooks import WebhookStorage

_INSERT_ATTEMPT = (
    "INSERT OR REPLACE INTO webhook_attempts (id, message_id, subscription_id, event_seq, attempt, "
    "status, trigger, url, response_status_code, response_body, error, duration_ms, created_at, "
    "next_attempt_at, warning) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_MESSAGE_DONE = (
    "UPDATE webhook_messages SET status = ?, attempts = ?, run_attempts = ?, attempt_id = NULL, "
    "next_attempt_at = NULL, lease_until = NULL, lease_owner = NULL WHERE id = ?"
)


class OutboxOps:
    async def claim(self: "WebhookStorage", requests: list[tuple[str, int]]) -> tuple[list[OpenItem], dict[str, int | None]]:
        return await self.store.write(self._undoable(self._claim), requests)

    def _claim(self: "WebhookStorage", conn: sqlite3.Connection, requests: list[tuple[str, int]]
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

    async def renew_leases(self: "WebhookStorage", message_ids: list[str]) -> None:
        """Extend the leases of the rows this instance still holds in memory."""
        if message_ids:
            await self.store.write(self._undoable(self._renew_leases), message_ids)

    def _renew_leases(self: "WebhookStorage", conn: sqlite3.Connection, message_ids: list[str]) -> None:
        lease = now_ms() + self.policy.lease_ms
        conn.executemany(
            "UPDATE webhook_messages SET lease_until = ? WHERE id = ? AND status = 'sending' AND lease_owner = ?",
            [(lease, mid, self.instance) for mid in message_ids])

    async def reclaim_expired(self: "WebhookStorage", held: frozenset[str]) -> int:
        """Make due again every `sending` row whose lease ran out (lost in memory here, or
        held by an instance that died), except those this instance still holds. Same
        message id, same open attempt: the receiver sees the same webhook-id."""
        return await self.store.write(self._undoable(self._reclaim_expired), held)

    def _reclaim_expired(self: "WebhookStorage", conn: sqlite3.Connection, held: frozenset[str]) -> int:
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

    async def release(self: "WebhookStorage") -> None:
        """Nothing to hand over: one server runs on a file, and its next start takes every
        `sending` row back (webhooks._attach)."""

    async def apply_results(self: "WebhookStorage", results: list[AttemptOutcome]) -> None:
        await self.store.write(self._undoable(self._apply_results), results)

    def _apply_results(self: "WebhookStorage", conn: sqlite3.Connection, results: list[AttemptOutcome]) -> None:
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
                    t = track[sid] = transitions.new_track(sub)
            if not r.sent:
                conn.execute(_MESSAGE_DONE, ("failed", row[2], row[3], mid))
                continue
            made, run = row[2] + 1, row[3] + 1
            outcome = classify(r.status_code, r.error)
            if t is not None and sub is not None:
                transitions.track_attempt(t, sub, item, r, outcome, now, policy)
            next_at = None
            if outcome is Outcome.SUCCESS:
                conn.execute(_MESSAGE_DONE, ("success", made, run, mid))
            else:
                may_retry = transitions.may_retry(outcome, item, t)
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

    async def quarantine_results(self: "WebhookStorage", results: list[tuple[AttemptOutcome, str]]) -> None:
        """Results that could not be recorded, however often tried: each delivery becomes
        ``failed``, with an attempt that says why (a minimal write, none of the bookkeeping
        that failed). ``recover`` or a resend can send them again."""
        await self.store.write(self._undoable(self._quarantine_results), results)

    def _quarantine_results(self: "WebhookStorage", conn: sqlite3.Connection, results: list[tuple[AttemptOutcome, str]]) -> None:
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

    async def load_for_send(self: "WebhookStorage", items: list[OpenItem]) -> tuple[set[str], dict[int, EventRecord]]:
        """Which of these messages are still ``sending`` (a rolled-back or deleted one is
        dropped), and the events to put in the payloads - read now, so an erasure that
        happened after intake applies to this delivery too."""
        return await self.store.read(reads.load_for_send, [i.message_id for i in items],
                                     [i.event_seq for i in items if i.event_seq is not None])

    async def due_snapshot(self) -> dict[str, int]:
        return await self.store.read(reads.due_snapshot)

