"""Subscription changes and one-off deliveries on PostgreSQL (the API's writes).

``SubscriptionOps`` is a part of ``WebhookStorage`` (storage/postgres/webhooks.py), kept
apart for size, like the subscription half of storage/sqlite/webhooks.py whose behaviour it
mirrors. Every op first makes the cached view current (``_fresh``, and the row itself under
its lock), since another instance may have changed the subscription a moment ago.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import psycopg

from ...delivery import healing, transitions
from ...delivery.subscriptions import SubscriptionInfo
from ...ids import ulids
from ...timefmt import now_ms
from ..base import AuditHook, RecordNotFound
from ..webhook_base import AttemptRow, NewSubscription, SubscriptionPatch
from ..webhook_state import SUB_COLUMNS
from . import webhook_reads as reads
from .webhook_reads import OPEN

if TYPE_CHECKING:
    from .webhooks import WebhookStorage


class SubscriptionOps:
    async def create_subscription(self: "WebhookStorage", spec: NewSubscription, audit: AuditHook | None = None) -> SubscriptionInfo:
        return await self.store.write(self._op(self._create_subscription), spec, audit=audit)

    def _create_subscription(self: "WebhookStorage", conn: psycopg.Connection, spec: NewSubscription) -> SubscriptionInfo:
        self._fresh(conn)
        now = now_ms()
        sid = "sub_" + ulids.new()
        state, reason = transitions.initial_state(spec.disabled)
        conn.execute(
            f"INSERT INTO webhook_subscriptions ({SUB_COLUMNS}) VALUES "
            "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (sid, spec.url, spec.description, json.dumps(spec.event_types), spec.organization,
             bool(spec.disabled), state, reason, now, self.sealer.seal(sid, "secret", spec.secret),
             None, None, None, None, None, now, now, None, None, 0, None))
        if state == "new":
            self._queue_test(conn, sid, now)
        self._state_log.append({"subscription_id": sid, "from_state": None, "to_state": state,
                                "reason": reason or "created"})
        self._reload(conn, [sid])
        return self.subs[sid]

    async def update_subscription(self: "WebhookStorage", sub_id: str, organization: str | None,
                                  patch: SubscriptionPatch, audit: AuditHook | None = None) -> SubscriptionInfo:
        return await self.store.write(self._op(self._update_subscription), sub_id, organization, patch, audit=audit)

    def _update_subscription(self: "WebhookStorage", conn: psycopg.Connection, sub_id: str, organization: str | None,
                             patch: SubscriptionPatch) -> SubscriptionInfo:
        self._read_rows(conn, [sub_id], lock=True)
        self._fresh(conn)
        cur = self._visible(sub_id, organization)
        now = now_ms()
        url, disabled, state, reason, retest = transitions.patched_state(cur, patch)
        conn.execute(
            "UPDATE webhook_subscriptions SET url = %s, description = %s, event_types = %s, "
            "organization = %s, disabled = %s, updated_at = %s WHERE id = %s",
            (url, patch.description if patch.description is not None else cur.description,
             json.dumps(patch.event_types if patch.event_types is not None else list(cur.event_types)),
             patch.organization if patch.set_organization else cur.organization,
             bool(disabled), now, sub_id))
        if state != cur.state or retest:
            self._set_state(conn, sub_id, state, reason, now)
        if retest:
            self._queue_test(conn, sub_id, now)
        self._reload(conn, [sub_id])
        return self.subs[sub_id]

    async def delete_subscription(self: "WebhookStorage", sub_id: str, organization: str | None,
                                  audit: AuditHook | None = None) -> SubscriptionInfo:
        return await self.store.write(self._op(self._delete_subscription), sub_id, organization, audit=audit)

    def _delete_subscription(self: "WebhookStorage", conn: psycopg.Connection, sub_id: str,
                             organization: str | None) -> SubscriptionInfo:
        self._read_rows(conn, [sub_id], lock=True)
        self._fresh(conn)
        cur = self._visible(sub_id, organization)
        for table in ("webhook_attempts", "webhook_messages", "webhook_jobs"):
            conn.execute(f"DELETE FROM {table} WHERE subscription_id = %s", (sub_id,))
        conn.execute("DELETE FROM webhook_subscriptions WHERE id = %s", (sub_id,))
        self._reload(conn, [sub_id])
        return cur

    async def test_subscription(self: "WebhookStorage", sub_id: str, organization: str | None) -> tuple[SubscriptionInfo, str]:
        return await self.store.write(self._op(self._test_subscription), sub_id, organization)

    def _test_subscription(self: "WebhookStorage", conn: psycopg.Connection, sub_id: str,
                           organization: str | None) -> tuple[SubscriptionInfo, str]:
        self._read_rows(conn, [sub_id], lock=True)
        self._fresh(conn)
        transitions.require_active(self._visible(sub_id, organization))
        now = now_ms()
        self._set_state(conn, sub_id, "new", None, now)
        self._queue_test(conn, sub_id, now)
        self._reload(conn, [sub_id])
        sub = self.subs[sub_id]
        assert sub.test_message_id is not None
        return sub, sub.test_message_id

    async def retest(self: "WebhookStorage", sub_id: str) -> bool:
        """The automatic re-test of an `invalid` subscription, when due (trigger ``retest``).
        With several instances, the subscription row's lock makes one of them send it."""
        return await self.store.write(self._op(self._retest), sub_id)

    def _retest(self: "WebhookStorage", conn: psycopg.Connection, sub_id: str) -> bool:
        self._read_rows(conn, [sub_id], lock=True)
        self._fresh(conn)
        sub = self.subs.get(sub_id)
        now = now_ms()
        if not transitions.retest_due(sub, now, self.policy):
            return False
        retests = sub.retests + 1
        next_at = healing.next_retest_at(retests, now, initial_ms=self.policy.retest_initial_ms,
                                         max_ms=self.policy.retest_max_ms)
        conn.execute("UPDATE webhook_subscriptions SET retest_at = %s, retests = %s WHERE id = %s",
                     (next_at, retests, sub_id))
        open_test = sub.test_message_id is not None and conn.execute(
            f"SELECT 1 FROM webhook_messages WHERE id = %s AND {OPEN}", (sub.test_message_id,)).fetchone()
        if not open_test:
            self._queue_test(conn, sub_id, now, trigger="retest")
        self._reload(conn, [sub_id])
        return True

    async def rotate_secret(self: "WebhookStorage", sub_id: str, organization: str | None, new_secret: str,
                            overlap_ms: int, audit: AuditHook | None = None) -> SubscriptionInfo:
        return await self.store.write(self._op(self._rotate_secret), sub_id, organization, new_secret,
                                      overlap_ms, audit=audit)

    def _rotate_secret(self: "WebhookStorage", conn: psycopg.Connection, sub_id: str, organization: str | None,
                       new_secret: str, overlap_ms: int) -> SubscriptionInfo:
        self._read_rows(conn, [sub_id], lock=True)
        self._fresh(conn)
        cur = self._visible(sub_id, organization)
        now = now_ms()
        previous = (self.sealer.seal(sub_id, "previous_secret", cur.secret)
                    if overlap_ms > 0 and cur.secret else None)
        conn.execute(
            "UPDATE webhook_subscriptions SET secret = %s, previous_secret = %s, "
            "previous_secret_expires_at = %s, updated_at = %s WHERE id = %s",
            (self.sealer.seal(sub_id, "secret", new_secret), previous,
             now + overlap_ms if previous else None, now, sub_id))
        self._reload(conn, [sub_id])
        return self.subs[sub_id]

    # ----------------------------------------------------------------------------------------
    # one-off deliveries (API)
    # ----------------------------------------------------------------------------------------

    async def resend(self: "WebhookStorage", event_id: str, sub_id: str, organization: str | None) -> AttemptRow:
        return await self.store.write(self._op(self._resend), event_id, sub_id, organization)

    def _resend(self: "WebhookStorage", conn: psycopg.Connection, event_id: str, sub_id: str, organization: str | None) -> AttemptRow:
        self._fresh(conn)
        sub = self._usable(sub_id, organization)
        row = conn.execute("SELECT seq, organization FROM events WHERE id = %s", (event_id,)).fetchone()
        if row is None or (organization is not None and row[1] != organization):
            raise RecordNotFound(event_id)
        seq, event_org = row
        transitions.require_same_organization(sub, event_org)
        now = now_ms()
        existing = conn.execute(
            "SELECT id FROM webhook_messages WHERE subscription_id = %s AND event_seq = %s",
            (sub_id, seq)).fetchone()
        if existing is None:
            mid = "whd_" + ulids.new()
            self._enqueue(conn, [(mid, sub_id, seq, "event.created", None, "manual")], now)
        else:
            mid = existing[0]
            self._requeue(conn, [mid], "manual", now)
        return reads.open_attempt(conn, mid)

    async def send_example(self: "WebhookStorage", sub_id: str, organization: str | None, action: str) -> AttemptRow:
        return await self.store.write(self._op(self._send_example), sub_id, organization, action)

    def _send_example(self: "WebhookStorage", conn: psycopg.Connection, sub_id: str, organization: str | None,
                      action: str) -> AttemptRow:
        self._fresh(conn)
        self._usable(sub_id, organization)
        mid = "whd_" + ulids.new()
        self._enqueue(conn, [(mid, sub_id, None, "event.example", action, "example")], now_ms())
        return reads.open_attempt(conn, mid)
