"""The writer-side view of webhook storage that both backends keep (no SQL here).

``WebhookState`` is the common base of storage/sqlite/webhooks.py and
storage/postgres/webhooks.py: the subscription cache (secrets unsealed, the match index),
the notes a write transaction collects for the delivery loop (hand-off items, due times,
jobs, state-change log lines), how a failed op or a rolled-back group undoes them, and the
hand-off budget. Everything here runs on the writer thread. Each backend adds its SQL.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any, Callable, Iterable, Sequence

from ..delivery import transitions
from ..delivery.retry import Outcome, classify, retry_delay
from ..delivery.sealing import SealError, Sealer
from ..delivery.subscriptions import SubscriptionIndex, SubscriptionInfo
from ..ids import ulids
from ..timefmt import now_ms
from .base import RecordNotFound
from .webhook_base import AttemptOutcome, OpenItem, RetryPolicy, Sink

log = logging.getLogger("recalled_lite.webhooks")

# The columns of webhook_subscriptions in the order _info reads them (both schemas).
SUB_COLUMNS = (
    "id, url, description, event_types, organization, disabled, state, state_reason, "
    "state_changed_at, secret, previous_secret, previous_secret_expires_at, test_message_id, "
    "first_failure_at, last_success_at, created_at, updated_at, invalid_since, retest_at, retests, "
    "invalid_cause"
)
# A new message: (id, sub_id, event_seq, type, example_action, trigger).
NewMessage = tuple[str, str, "int | None", str, "str | None", str]


class WebhookState:
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

    # -- undoing what a failed op or group noted ----------------------------------------------

    def _savepoint_mark(self) -> tuple[Any, ...]:
        return (len(self._handoff), self.handed, dict(self._due), self.subs, self.index, self._dirty)

    def _savepoint_rewind(self, mark: tuple[Any, ...]) -> None:
        # A rolled-back savepoint (one failed op): what it queued or reloaded does not exist.
        handoff_len, self.handed, self._due, self.subs, self.index, self._dirty = mark
        del self._handoff[handoff_len:]

    def _forget_notes(self) -> None:
        # A whole group was rolled back: nothing it queued or changed exists (the caller
        # reloads the subscriptions).
        self.handed -= len(self._handoff)
        self._handoff = []
        self._due = {}
        self._new_jobs = []
        self._state_log = []

    def _undoable(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as a writer op whose in-memory notes are undone with its SAVEPOINT: when it
        raises, the writer rolls back only its statements, so what it queued for the loop,
        logged for after the COMMIT or changed in the cache must go too."""
        def op(conn: Any, *args: Any) -> Any:
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

    def _note_due(self, sub_id: str, at: int) -> None:
        if self._due.get(sub_id, at + 1) > at:
            self._due[sub_id] = at

    # -- the subscription cache --------------------------------------------------------------

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

    def _set_all(self, rows: Iterable[Sequence[Any]]) -> None:
        self.subs = {row[0]: self._safe_info(row) for row in rows}
        self.index = SubscriptionIndex(self.subs.values())
        self._dirty = True

    def _set_some(self, found: dict[str, Sequence[Any] | None]) -> None:
        """Replace the cached subscriptions named in `found` (None = deleted)."""
        subs = dict(self.subs)
        for sid, row in found.items():
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

    def _usable(self, sub_id: str, organization: str | None) -> SubscriptionInfo:
        return transitions.require_active(self._visible(sub_id, organization))

    def _state_note(self, sub_id: str, old: str | None, state: str, reason: str | None,
                    retest_at: int | None) -> None:
        if old != state:
            fields: dict[str, Any] = {"subscription_id": sub_id, "from_state": old, "to_state": state,
                                      "reason": reason or transitions.default_reason(state)}
            if state == "invalid":
                fields["retest_at"] = retest_at
            self._state_log.append(fields)

    # -- queueing ----------------------------------------------------------------------------

    def _budget(self) -> int:
        return self.handoff_limit - (self.handed - self.taken())

    def _plan_enqueue(self, rows: list[NewMessage], now: int) -> tuple[list[OpenItem | None], list[tuple[Any, ...]]]:
        """New messages: up to the hand-off budget they are inserted ``sending`` (claimed by
        this very transaction, leased to this instance) and handed to the loop at COMMIT;
        the rest wait ``pending``. Returns the items and the INSERT parameters (id, sub,
        seq, type, example, status, trigger, attempt_id, created, queued, next_attempt_at,
        lease_until, lease_owner)."""
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
                self._note_due(sid, now)
        self.handed += sum(1 for o in out if o is not None)
        return out, params

    def _event_messages(self, pairs: list[tuple[str, int]], trigger: str) -> list[NewMessage]:
        """New ``event.created`` messages for (subscription id, event seq) pairs."""
        ids = ulids.batch(len(pairs))
        return [("whd_" + mid, sid, seq, "event.created", None, trigger) for mid, (sid, seq) in zip(ids, pairs)]

    def _intake_messages(self, records: Sequence[Any]) -> list[NewMessage]:
        """The messages new events (EventRecords) make: one per matching active subscription."""
        index = self.index
        if not index.active:
            return []
        match = index.match
        pairs = [(sid, record.seq) for record in records for sid in match(record.organization, record.action)]
        return self._event_messages(pairs, "scheduled") if pairs else []

    def _plan_requeue(self, mid: str, sid: str, seq: int | None, mtype: str, example: str | None,
                      attempts: int, created_at: int, trigger: str, now: int,
                      budget: int) -> tuple[tuple[Any, ...], int]:
        """Another attempt of a finished message (resend / recover): a fresh attempt id, the
        same message id (= webhook-id). Returns (status, trigger, attempt_id, queued_at,
        next_attempt_at, lease_until, lease_owner) and the budget left."""
        attempt_id = "atm_" + ulids.new()
        if budget > 0:
            self.handed += 1
            self._handoff.append(OpenItem(mid, sid, seq, mtype, example, trigger, attempt_id,
                                          attempts + 1, created_at, now, True))
            return ("sending", trigger, attempt_id, now, now, now + self.policy.lease_ms, self.instance), budget - 1
        self._note_due(sid, now)
        return ("pending", trigger, attempt_id, now, now, None, None), budget

    def _plan_result(self, r: AttemptOutcome, attempts: int, run_attempts: int,
                     track: dict[str, dict[str, Any]], now: int) -> tuple[str, int, int, int | None,
                                                                          tuple[Any, ...] | None]:
        """What one result of a message that is still ours does to it: (status, attempts,
        run_attempts, next_attempt_at, the webhook_attempts row or None). ``pending`` means
        retry at next_attempt_at under a fresh attempt id. A result that was never sent
        fails the message without counting an attempt. Feeds the subscription's failure
        streak in `track` (delivery/transitions.py), which the caller applies per batch."""
        item = r.item
        sid = item.subscription_id
        sub = self.subs.get(sid)
        t = None
        if sub is not None:
            t = track.get(sid)
            if t is None:
                t = track[sid] = transitions.new_track(sub)
        if not r.sent:
            return "failed", attempts, run_attempts, None, None
        made, run = attempts + 1, run_attempts + 1
        outcome = classify(r.status_code, r.error)
        if t is not None and sub is not None:
            transitions.track_attempt(t, sub, item, r, outcome, now, self.policy)
        next_at = None
        if outcome is Outcome.SUCCESS:
            status = "success"
        else:
            policy = self.policy
            delay = (retry_delay(run, r.status_code, r.retry_after, now / 1000, policy.schedule,
                                 policy.jitter, self._rng) if transitions.may_retry(outcome, item, t) else None)
            if delay is None:
                status = "failed"
            else:
                status = "pending"
                next_at = now + int(delay * 1000)
                self._note_due(sid, next_at)
        attempt = (item.attempt_id, item.message_id, sid, item.event_seq, made,
                   "success" if outcome is Outcome.SUCCESS else "failed", item.trigger, r.url,
                   r.status_code, r.response_body, r.error, r.duration_ms, r.started_at, next_at, r.warning)
        return status, made, run, next_at, attempt

    def _plan_secret_upgrades(self, rows: Iterable[Sequence[Any]]) -> list[tuple[str, str, str]]:
        """(column, sealed value, subscription id) for each stored secret of the
        (id, secret, previous_secret) rows that is not sealed:v2 yet."""
        out = []
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
                    out.append((column, sealed, sid))
        return out

    @staticmethod
    def _patched_columns(cur: SubscriptionInfo, patch: Any) -> tuple[str | None, str, str | None]:
        """(description, event_types as stored JSON, organization) after a SubscriptionPatch:
        what the patch leaves out keeps its current value."""
        return (patch.description if patch.description is not None else cur.description,
                json.dumps(patch.event_types if patch.event_types is not None else list(cur.event_types)),
                patch.organization if patch.set_organization else cur.organization)
