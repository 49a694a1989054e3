"""A subscription's state machine (spec §5.1; docs/webhooks.md) - pure functions.

What an attempt's outcome does to its subscription (a test that passes makes it `valid`,
a 410 or ``disable_after`` with no success makes it `invalid`), whether a failed delivery is
retried, what a change of state sets with it (``invalid_since``, the next re-test), what a
PATCH does to the state, and which operations a `deactivated` subscription refuses.

Every storage backend calls these inside its own transaction and writes what they return;
nothing here reads the clock or a table, so the rules are the same on every backend.
The outcome of one HTTP attempt (``retry.classify``), the retry schedule (``retry``), the
re-test backoff (``healing``) and event matching (``subscriptions``) are their own modules.
"""

from __future__ import annotations

from typing import Any

from ..storage.webhook_base import AttemptOutcome, InvalidWebhookOperation, OpenItem, RetryPolicy, SubscriptionPatch
from . import healing
from .healing import InvalidCause
from .retry import Outcome, should_disable
from .subscriptions import SCHEDULED_TRIGGERS, SubscriptionInfo

# States in which deliveries still waiting for a retry stop (``recover`` can send them later).
STOPS_PENDING = ("invalid", "deactivated")


def initial_state(disabled: bool) -> tuple[str, str | None]:
    """(state, reason) of a new subscription: `new` (a test message is queued) unless disabled."""
    return ("deactivated", "disabled by the owner") if disabled else ("new", None)


def patched_state(cur: SubscriptionInfo, patch: SubscriptionPatch) -> tuple[str, bool, str, str | None, bool]:
    """(url, disabled, state, reason, retest) after a PATCH: re-activating or a new URL
    puts it back to `new`, which queues a test message (retest=True)."""
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
    return url, disabled, state, reason, retest


def require_active(sub: SubscriptionInfo) -> SubscriptionInfo:
    """A test, resend or example needs a subscription that is not `deactivated`."""
    if sub.state == "deactivated":
        raise InvalidWebhookOperation(
            "the subscription is deactivated; re-activate it with PATCH {\"state\": \"new\"}", "state")
    return sub


def require_same_organization(sub: SubscriptionInfo, event_organization: str | None) -> None:
    """A resend never gives a subscription bound to an organization another one's event."""
    if sub.organization is not None and event_organization != sub.organization:
        raise InvalidWebhookOperation(
            "this event belongs to another organization than the subscription", "event_id")


def state_change(cur: SubscriptionInfo | None, state: str, now: int, cause: InvalidCause,
                 policy: RetryPolicy) -> tuple[int | None, str | None, int | None, int]:
    """(invalid_since, invalid_cause, retest_at, retests) that go with changing `cur` to `state`."""
    old = cur.state if cur is not None else None
    invalid_since = cur.invalid_since if cur is not None else None
    invalid_cause = cur.invalid_cause if cur is not None else None
    retest_at, retests = None, 0
    if state == "invalid":
        if invalid_since is None or old != "invalid" and old != "new":
            invalid_since = now
        invalid_cause = cause.value
        retest_at = healing.first_retest_at(cause, now, enabled=policy.retest_enabled,
                                            initial_ms=policy.retest_initial_ms, max_ms=policy.retest_max_ms)
    elif state in ("valid", "deactivated"):
        # valid: caught up (a replay was queued if it missed anything); deactivated: the
        # owner's choice, so what it misses from now on is not replayed.
        invalid_since = invalid_cause = None
    # `new` keeps `invalid_since`: if the test passes, what it missed is replayed.
    return invalid_since, invalid_cause, retest_at, retests


def retest_due(sub: SubscriptionInfo | None, now: int, policy: RetryPolicy) -> bool:
    """Whether the automatic re-test of an `invalid` subscription is due now."""
    return not (not policy.retest_enabled or sub is None or sub.state != "invalid" or sub.retest_at is None
                or sub.retest_at > now)


def new_track(sub: SubscriptionInfo) -> dict[str, Any]:
    """The per-subscription bookkeeping of one batch of results, applied once at its end."""
    return {"state": sub.state, "reason": sub.state_reason, "cause": None,
            "changed_at": sub.state_changed_at, "first_failure": sub.first_failure_at,
            "last_success": sub.last_success_at, "transition": False,
            "touched": False, "healed_from": None}


def may_retry(outcome: Outcome, item: OpenItem, t: dict[str, Any] | None) -> bool:
    """A failed scheduled delivery is retried unless its subscription stopped receiving
    (deactivated, or made invalid after this delivery was queued)."""
    return (
        outcome is Outcome.RETRY and item.trigger in SCHEDULED_TRIGGERS and t is not None
        and t["state"] != "deactivated"
        and not (t["state"] == "invalid" and t["changed_at"] >= item.queued_at)
    )


def track_attempt(t: dict[str, Any], sub: SubscriptionInfo, item: OpenItem, r: AttemptOutcome,
                  outcome: Outcome, now: int, policy: RetryPolicy) -> None:
    """The subscription's side of one attempt. A transition caused by this very attempt
    (410, disable_after) must also stop this message's retries, so it comes first."""
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
            t.update(state="invalid", reason="test delivery failed: " + describe(r),
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
                        f"(last error: {describe(r)})")


def describe(r: AttemptOutcome) -> str:
    if r.error:
        return r.error
    return f"HTTP {r.status_code}"


def default_reason(state: str) -> str:
    return {"new": "waiting for its test message", "valid": "its test message succeeded"}.get(state, state)
