"""Retry policy (spec §5.1, §5.2): schedule, jitter, Retry-After, classification, disabling."""

from __future__ import annotations

import calendar
import random
from email.utils import formatdate

import pytest

from recalled_lite.delivery import retry
from recalled_lite.delivery.retry import Outcome

NOW = 1_700_000_000.0


def test_default_schedule_is_the_spec_schedule():
    assert retry.DEFAULT_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert len(retry.DEV_SCHEDULE) >= 1
    assert sum(retry.DEV_SCHEDULE) < 120  # --dev shows the whole life cycle quickly


def test_no_jitter_gives_exact_schedule_then_exhaustion():
    delays = [retry.next_delay(n, retry.DEFAULT_SCHEDULE, jitter=0) for n in range(1, 9)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000, None]
    assert retry.next_delay(100, retry.DEFAULT_SCHEDULE) is None
    assert retry.next_delay(1, ()) is None  # empty schedule: one try, then failed


def test_jitter_bounds_with_seeded_rng():
    rng = random.Random(1234)
    for attempts, base in enumerate(retry.DEFAULT_SCHEDULE, start=1):
        samples = [retry.next_delay(attempts, retry.DEFAULT_SCHEDULE, 0.2, rng) for _ in range(500)]
        assert all(base * 0.8 <= s <= base * 1.2 for s in samples)
        # Really jittered, and spread over most of the band (not stuck at one end).
        assert min(samples) < base * 0.85 and max(samples) > base * 1.15


def test_jitter_is_reproducible_with_same_seed():
    a = [retry.next_delay(3, retry.DEFAULT_SCHEDULE, rng=random.Random(7)) for _ in range(3)]
    b = [retry.next_delay(3, retry.DEFAULT_SCHEDULE, rng=random.Random(7)) for _ in range(3)]
    assert a == b


@pytest.mark.parametrize("attempts", [0, -1])
def test_attempts_made_starts_at_one(attempts):
    with pytest.raises(ValueError):
        retry.next_delay(attempts, retry.DEFAULT_SCHEDULE)


def test_bad_jitter_rejected():
    with pytest.raises(ValueError):
        retry.next_delay(1, retry.DEFAULT_SCHEDULE, jitter=1.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 30 ", 30.0),
        ("3600", 3600.0),
        ("3601", 3600.0),  # cap
        ("99999999999999999999999999", 3600.0),  # cap, no overflow
        (formatdate(NOW + 90, usegmt=True), 90.0),  # IMF-fixdate
        (formatdate(NOW + 7200, usegmt=True), 3600.0),  # date beyond the cap
        (formatdate(NOW - 90, usegmt=True), None),  # stale date
        (None, None),
        ("", None),
        ("   ", None),
        ("-5", None),
        ("1.5", None),
        ("+5", None),
        ("soon", None),
        ("Mon, 99 Foo 2020 00:00:00 GMT", None),
    ],
)
def test_parse_retry_after(value, expected):
    assert retry.parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "value", ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"]
)
def test_parse_retry_after_all_http_date_forms(value):
    # RFC 9110 §5.6.7: IMF-fixdate, obsolete RFC 850 and asctime forms.
    instant = calendar.timegm((1994, 11, 6, 8, 49, 37))
    assert retry.parse_retry_after(value, instant - 60) == 60.0


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (200, None, Outcome.SUCCESS),
        (201, None, Outcome.SUCCESS),
        (204, None, Outcome.SUCCESS),
        (299, None, Outcome.SUCCESS),
        (410, None, Outcome.GONE),
        (410, "read timeout", Outcome.GONE),
        (200, "read timeout", Outcome.RETRY),  # 2xx not completed within the timeout
        (100, None, Outcome.RETRY),
        (301, None, Outcome.RETRY),  # redirects are not followed
        (302, None, Outcome.RETRY),
        (307, None, Outcome.RETRY),
        (400, None, Outcome.RETRY),
        (404, None, Outcome.RETRY),
        (429, None, Outcome.RETRY),
        (500, None, Outcome.RETRY),
        (503, None, Outcome.RETRY),
        (None, "timeout", Outcome.RETRY),
        (None, "connection refused", Outcome.RETRY),
        (None, None, Outcome.RETRY),
    ],
)
def test_classify(status, error, expected):
    assert retry.classify(status, error) is expected


@pytest.mark.parametrize(("status", "honoured"), [(429, True), (503, True), (500, False), (301, False), (200, False), (None, False)])
def test_honours_retry_after(status, honoured):
    assert retry.honours_retry_after(status) is honoured


def test_retry_delay_combines_rules():
    s = retry.DEFAULT_SCHEDULE
    # 429/503 with Retry-After: exactly the hint (no jitter), capped.
    assert retry.retry_delay(1, 429, "42", NOW, s) == 42.0
    assert retry.retry_delay(1, 503, "86400", NOW, s) == 3600.0
    # Other statuses ignore the header: scheduled delay.
    assert retry.retry_delay(2, 500, "42", NOW, s, jitter=0) == 300
    # Garbage header on 429: scheduled delay.
    assert retry.retry_delay(2, 429, "later", NOW, s, jitter=0) == 300
    # Retry-After never adds attempts beyond the schedule.
    assert retry.retry_delay(len(s) + 1, 429, "10", NOW, s) is None


DAY = 86400.0


@pytest.mark.parametrize(
    ("first_failure", "last_success", "now", "expected"),
    [
        (None, None, NOW, False),  # nothing failing
        (None, NOW - 30 * DAY, NOW, False),
        (NOW - 5 * DAY, None, NOW, True),  # never succeeded, failing 5 days
        (NOW - 5 * DAY + 1, None, NOW, False),  # just under 5 days
        (NOW - 6 * DAY, NOW - 7 * DAY, NOW, True),  # old success, failing 6 days
        (NOW - 1 * DAY, NOW - 30 * DAY, NOW, False),  # idle a month, failing only 1 day
        (NOW - 6 * DAY, NOW - 1 * DAY, NOW, False),  # success after the streak began
    ],
)
def test_should_disable(first_failure, last_success, now, expected):
    assert retry.should_disable(first_failure, last_success, now, 5 * DAY) is expected


def test_should_disable_default_window_is_five_days():
    assert retry.should_disable(NOW - 5 * DAY, None, NOW) is True
    assert retry.should_disable(NOW - 4 * DAY, None, NOW) is False
