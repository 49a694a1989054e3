"""The subscription state machine as pure rules (delivery/transitions.py), without a store:
what every storage backend must apply the same way. The end-to-end behaviour is covered by
the webhook tests against a real server (test_webhook_delivery, test_webhook_healing, ...)."""

from __future__ import annotations

import dataclasses

import pytest

from recalled_lite.delivery import transitions
from recalled_lite.delivery.healing import InvalidCause
from recalled_lite.delivery.retry import Outcome, classify
from recalled_lite.delivery.subscriptions import SubscriptionInfo
from recalled_lite.storage.webhook_base import (
    AttemptOutcome, InvalidWebhookOperation, OpenItem, RetryPolicy, SubscriptionPatch,
)

NOW = 1_800_000_000_000
POLICY = RetryPolicy(schedule=(5.0,), jitter=0.0, disable_after_ms=3_600_000, lease_ms=60_000,
                     retest_initial_ms=60_000, retest_max_ms=3_600_000)


def sub(**changes) -> SubscriptionInfo:
    base = SubscriptionInfo(
        id="sub_1", url="https://example.com/hook", description="", event_types=("*",), organization=None,
        disabled=False, state="valid", state_reason=None, state_changed_at=NOW - 10_000, secret="s",
        previous_secret=None, previous_secret_expires_at=None, test_message_id="whd_test",
        first_failure_at=None, last_success_at=None, created_at=NOW - 100_000, updated_at=NOW - 100_000)
    return dataclasses.replace(base, **changes)


def item(*, type: str = "event.created", message_id: str = "whd_1", trigger: str = "scheduled",
         queued_at: int = NOW - 5_000) -> OpenItem:
    return OpenItem(message_id, "sub_1", 7, type, None, trigger, "atm_1", 1, queued_at, queued_at, False)


def result(status: int | None, error: str | None = None, started_at: int = NOW) -> AttemptOutcome:
    return AttemptOutcome(item(), True, "https://example.com/hook", status, None, error, 12, started_at, None)


def attempt(s: SubscriptionInfo, it: OpenItem, r: AttemptOutcome, now: int = NOW) -> dict:
    t = transitions.new_track(s)
    transitions.track_attempt(t, s, it, r, classify(r.status_code, r.error), now, POLICY)
    return t


def test_a_new_subscription_waits_for_its_test_unless_disabled() -> None:
    assert transitions.initial_state(False) == ("new", None)
    assert transitions.initial_state(True) == ("deactivated", "disabled by the owner")


@pytest.mark.parametrize(("current", "patch", "wanted"), [
    (sub(), SubscriptionPatch(disabled=True), (True, "deactivated", "disabled by the owner", False)),
    (sub(state="deactivated", disabled=True), SubscriptionPatch(state="new"), (False, "new", None, True)),
    (sub(), SubscriptionPatch(url="https://example.com/other"), (False, "new", None, True)),
    (sub(), SubscriptionPatch(description="only words"), (False, "valid", None, False)),
    (sub(state="deactivated", disabled=True), SubscriptionPatch(url="https://example.com/other"),
     (True, "deactivated", None, False)),
])
def test_a_patch_changes_the_state_as_documented(current, patch, wanted) -> None:
    url, *rest = transitions.patched_state(current, patch)
    assert tuple(rest) == wanted
    assert url == (patch.url or current.url)


def test_a_deactivated_subscription_refuses_tests_resends_and_examples() -> None:
    with pytest.raises(InvalidWebhookOperation) as caught:
        transitions.require_active(sub(state="deactivated", disabled=True))
    assert caught.value.field == "state"
    assert transitions.require_active(sub(state="invalid")).state == "invalid"


def test_a_resend_stays_inside_the_subscriptions_organization() -> None:
    transitions.require_same_organization(sub(organization=None), "org_a")
    transitions.require_same_organization(sub(organization="org_a"), "org_a")
    with pytest.raises(InvalidWebhookOperation) as caught:
        transitions.require_same_organization(sub(organization="org_a"), "org_b")
    assert caught.value.field == "event_id"


def test_a_passing_test_heals_and_replays_what_was_missed() -> None:
    s = sub(state="new", invalid_since=NOW - 50_000, invalid_cause=InvalidCause.TEST_FAILED.value)
    t = attempt(s, item(type="webhook.test", message_id="whd_test", trigger="test"), result(200))
    assert (t["state"], t["transition"], t["healed_from"]) == ("valid", True, NOW - 50_000)
    assert t["last_success"] == NOW and t["first_failure"] is None


def test_after_a_410_a_passing_test_does_not_replay() -> None:
    s = sub(state="new", invalid_since=NOW - 50_000, invalid_cause=InvalidCause.GONE.value)
    t = attempt(s, item(type="webhook.test", message_id="whd_test", trigger="test"), result(204))
    assert t["state"] == "valid" and t["healed_from"] is None


def test_a_failing_test_makes_a_new_subscription_invalid_with_the_reason() -> None:
    t = attempt(sub(state="new"), item(type="webhook.test", message_id="whd_test", trigger="test"), result(500))
    assert (t["state"], t["cause"]) == ("invalid", InvalidCause.TEST_FAILED)
    assert t["reason"] == "test delivery failed: HTTP 500"


def test_a_failed_retest_leaves_it_invalid_without_a_transition() -> None:
    s = sub(state="invalid", state_changed_at=NOW - 60_000)
    t = attempt(s, item(type="webhook.test", message_id="whd_test", trigger="retest"), result(None, "timed out"))
    assert t["state"] == "invalid" and not t["transition"] and t["first_failure"] == NOW


def test_410_gone_makes_it_invalid_and_is_never_retested_on_its_own() -> None:
    t = attempt(sub(), item(), result(410))
    assert (t["state"], t["cause"], t["reason"]) == ("invalid", InvalidCause.GONE, "the receiver answered 410 Gone")
    invalid_since, cause, retest_at, retests = transitions.state_change(sub(), "invalid", NOW, InvalidCause.GONE, POLICY)
    assert (invalid_since, cause, retest_at, retests) == (NOW, "gone", None, 0)


def test_failing_for_disable_after_with_no_success_makes_it_invalid() -> None:
    started = NOW - POLICY.disable_after_ms
    early = attempt(sub(first_failure_at=started), item(), result(503), now=NOW - 1)
    assert early["state"] == "valid" and not early["transition"]
    late = attempt(sub(first_failure_at=started), item(), result(None, "connection refused"))
    assert (late["state"], late["cause"]) == ("invalid", InvalidCause.NO_SUCCESS)
    assert late["reason"] == "no successful delivery for 3600 seconds (last error: connection refused)"


def test_a_success_ends_the_failure_streak() -> None:
    t = attempt(sub(first_failure_at=NOW - POLICY.disable_after_ms * 2), item(), result(200))
    assert t["first_failure"] is None and t["state"] == "valid" and not t["transition"]


@pytest.mark.parametrize(("state", "changed_at", "trigger", "outcome", "wanted"), [
    ("valid", NOW - 60_000, "scheduled", Outcome.RETRY, True),
    ("valid", NOW - 60_000, "replay", Outcome.RETRY, True),
    ("valid", NOW - 60_000, "manual", Outcome.RETRY, False),   # a resend is tried once
    ("valid", NOW - 60_000, "scheduled", Outcome.GONE, False),
    ("deactivated", NOW - 60_000, "scheduled", Outcome.RETRY, False),
    ("invalid", NOW, "scheduled", Outcome.RETRY, False),        # made invalid after it was queued
    ("invalid", NOW - 60_000, "scheduled", Outcome.RETRY, True),  # queued after it became invalid
])
def test_which_failed_deliveries_are_retried(state, changed_at, trigger, outcome, wanted) -> None:
    t = transitions.new_track(sub(state=state, state_changed_at=changed_at))
    assert transitions.may_retry(outcome, item(trigger=trigger, queued_at=NOW - 5_000), t) is wanted
    assert transitions.may_retry(outcome, item(trigger=trigger), None) is False


def test_a_state_change_sets_invalid_since_and_the_next_retest() -> None:
    since, cause, retest_at, _ = transitions.state_change(sub(), "invalid", NOW, InvalidCause.NO_SUCCESS, POLICY)
    assert (since, cause, retest_at) == (NOW, "no_success", NOW + POLICY.retest_initial_ms)
    # Back to `new` (a test the owner asked for) keeps when it started missing events ...
    invalid = sub(state="invalid", invalid_since=NOW - 9_000, invalid_cause="no_success")
    assert transitions.state_change(invalid, "new", NOW, InvalidCause.TEST_FAILED, POLICY)[:2] == (NOW - 9_000, "no_success")
    # ... and failing that test does not move it; `valid` and `deactivated` clear it.
    renewed = sub(state="new", invalid_since=NOW - 9_000, invalid_cause="no_success")
    assert transitions.state_change(renewed, "invalid", NOW, InvalidCause.TEST_FAILED, POLICY)[0] == NOW - 9_000
    for state in ("valid", "deactivated"):
        assert transitions.state_change(invalid, state, NOW, InvalidCause.TEST_FAILED, POLICY)[:3] == (None, None, None)
    assert set(transitions.STOPS_PENDING) == {"invalid", "deactivated"}


def test_a_retest_is_due_only_for_an_invalid_subscription_past_its_time() -> None:
    due = sub(state="invalid", retest_at=NOW)
    assert transitions.retest_due(due, NOW, POLICY)
    assert not transitions.retest_due(due, NOW - 1, POLICY)
    assert not transitions.retest_due(sub(state="valid", retest_at=NOW), NOW, POLICY)
    assert not transitions.retest_due(sub(state="invalid", retest_at=None), NOW, POLICY)
    assert not transitions.retest_due(None, NOW, POLICY)
    assert not transitions.retest_due(due, NOW, dataclasses.replace(POLICY, retest_enabled=False))
