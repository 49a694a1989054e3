"""Retry policy for webhook deliveries (spec §5.1, §5.2) - pure functions.

Nothing here reads the clock, sleeps or touches the network: the caller passes ``now`` and, for
jitter, a random source. That keeps the sender deterministic under test and lets the scheduler
compute ``next_attempt_at`` inside the same transaction that records an attempt.

Rules (spec §5.2):

* 2xx = success, as soon as the status line has arrived: a framing problem after it (a body
  on a 204, a truncated body, data after ``Connection: close``, a slow body) is a warning on
  the attempt, never a reason to send again (``after_status_line``).
  Redirects are *not* followed and count as failures.
* 410 Gone = the receiver asked us to stop: the subscription becomes ``invalid``, no more retries.
* Every other outcome (other non-2xx, timeouts, connection errors, refused destinations) is
  retried on a schedule counted *after* the first try: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h,
  each ±20 % jitter; after the last one the message is ``failed``.
* ``Retry-After`` is honoured only on 429 and 503, capped at one hour.
* A subscription whose attempts have kept failing with no success for ``disable_after``
  (default 5 days) becomes ``invalid`` (spec §5.1).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from datetime import timezone
from email.utils import parsedate_to_datetime

__all__ = [
    "DEFAULT_SCHEDULE",
    "DEV_SCHEDULE",
    "DEFAULT_JITTER",
    "RETRY_AFTER_CAP",
    "DEFAULT_DISABLE_AFTER",
    "Outcome",
    "next_delay",
    "parse_retry_after",
    "classify",
    "after_status_line",
    "honours_retry_after",
    "retry_delay",
    "should_disable",
]

#: Delays in seconds *between* attempts, starting after the first try (spec §5.2):
#: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h -> 8 attempts in all, spread over ~27 h.
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
#: Short schedule for ``--dev`` so a developer sees retries and the final ``failed`` state in
#: about half a minute instead of a day.
DEV_SCHEDULE: tuple[float, ...] = (1, 2, 4, 8, 16)
#: ±20 % (spec §5.2). Jitter spreads retries so that a receiver coming back after an outage is
#: not hit by every queued message in the same second.
DEFAULT_JITTER = 0.2
#: Upper bound on an honoured ``Retry-After`` (spec §5.2: capped at 1 h), so a receiver cannot
#: park a message for days with one header.
RETRY_AFTER_CAP = 3600.0
#: No success for this long while attempts kept failing -> subscription ``invalid`` (spec §5.1).
DEFAULT_DISABLE_AFTER = 5 * 24 * 3600.0

# Statuses whose Retry-After means "come back later" (RFC 9110 §10.2.3, RFC 6585 §4). On other
# statuses (e.g. a 3xx, where Retry-After has a different meaning) the header is ignored.
_RETRY_AFTER_STATUSES = frozenset({429, 503})


class Outcome(enum.Enum):
    """What one attempt means for the message and the subscription."""

    SUCCESS = "success"  # 2xx: message delivered.
    GONE = "gone"  # 410: stop; subscription becomes ``invalid``.
    RETRY = "retry"  # anything else: schedule another attempt (or fail when exhausted).


def next_delay(
    attempts_made: int,
    schedule: Sequence[float] = DEFAULT_SCHEDULE,
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before the next attempt, or ``None`` if the schedule is exhausted.

    ``attempts_made`` counts attempts already made, so ``1`` means "the first try just failed"
    and yields ``schedule[0]``. With ``len(schedule)`` retries allowed, ``None`` is returned once
    ``attempts_made > len(schedule)``: the message then becomes ``failed``.

    The base delay is scaled by a factor drawn uniformly from ``[1 - jitter, 1 + jitter]`` using
    ``rng.uniform`` (pass a seeded :class:`random.Random` for reproducible results; defaults to
    the ``random`` module). The result is never negative.
    """
    if attempts_made < 1:
        raise ValueError("attempts_made must be >= 1 (the first try comes before any delay)")
    if not 0 <= jitter < 1:
        # jitter >= 1 could produce zero/negative delays, i.e. retry storms.
        raise ValueError("jitter must be in [0, 1)")
    index = attempts_made - 1
    if index >= len(schedule):
        return None
    base = float(schedule[index])
    if jitter == 0:
        return base
    source = rng if rng is not None else random
    return max(0.0, base * (1.0 + source.uniform(-jitter, jitter)))


def parse_retry_after(value: str | None, now: float, cap: float = RETRY_AFTER_CAP) -> float | None:
    """Parse a ``Retry-After`` header into seconds from ``now`` (RFC 9110 §10.2.3).

    Accepts both forms: delta-seconds (``"120"``, digits only) and an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``), judged against ``now`` (unix seconds). The result is
    capped at ``cap`` (1 h by default).

    Returns ``None`` - meaning "ignore it, use the normal schedule" - when the header is absent,
    empty, not one of the two forms (``"1.5"``, ``"-5"``, ``"soon"``), or a date already in the
    past (a stale hint; retrying at once would let a skewed clock cause a retry storm).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        # delta-seconds is 1*DIGIT: no sign, no fraction. Compare as int first so that a huge
        # value cannot overflow float conversion.
        seconds = int(text)
        return float(seconds) if seconds <= cap else float(cap)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None instead of raising
        return None
    if when.tzinfo is None:
        # "-0000" / no zone: HTTP-dates are always GMT (RFC 9110 §5.6.7).
        when = when.replace(tzinfo=timezone.utc)
    delay = when.timestamp() - now
    if delay < 0:
        return None
    return min(delay, float(cap))


def classify(status_code: int | None, error: str | None = None) -> Outcome:
    """Classify one attempt.

    * ``410`` -> :attr:`Outcome.GONE` (even if reading the body then failed: the status is the
      receiver's explicit answer).
    * ``2xx`` with no ``error`` -> :attr:`Outcome.SUCCESS`.
    * everything else -> :attr:`Outcome.RETRY`: other statuses including 1xx/3xx (redirects are
      not followed, so a 3xx is a failure), no status at all (timeout, connection error, refused
      destination), or a 2xx that was not delivered after all (``error`` set; the sender sets
      none once a 2xx status line has arrived, see ``after_status_line``).
    """
    if status_code == 410:
        return Outcome.GONE
    if status_code is not None and 200 <= status_code < 300 and error is None:
        return Outcome.SUCCESS
    return Outcome.RETRY


def after_status_line(status_code: int | None, problem: str | None) -> tuple[str | None, str | None]:
    """Split what went wrong in an exchange into ``(error, warning)``.

    Before a status line arrived (no connection, no answer, a malformed head, a timeout while
    waiting) the problem is the attempt's ``error``. Once one has arrived the receiver has
    answered and its status decides the outcome: whatever went wrong after it is a
    ``warning``, kept on the attempt for the receiver's owner.
    """
    if status_code is None:
        return problem, None
    return None, problem


def honours_retry_after(status_code: int | None) -> bool:
    """Whether a ``Retry-After`` header on this status is honoured (only 429 and 503)."""
    return status_code in _RETRY_AFTER_STATUSES


def retry_delay(
    attempts_made: int,
    status_code: int | None,
    retry_after: str | None,
    now: float,
    schedule: Sequence[float] = DEFAULT_SCHEDULE,
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> float | None:
    """Delay before the next attempt after a :attr:`Outcome.RETRY` attempt, or ``None``.

    Combines the rules: ``None`` when the schedule is exhausted (the message becomes ``failed``)
    - a ``Retry-After`` never buys extra attempts, it only moves the next one. Otherwise, on 429
    or 503 with a usable ``Retry-After``, that delay (capped at 1 h, no jitter: the receiver
    chose the moment); else the scheduled delay with jitter.
    """
    scheduled = next_delay(attempts_made, schedule, jitter, rng)
    if scheduled is None:
        return None
    if honours_retry_after(status_code):
        hinted = parse_retry_after(retry_after, now)
        if hinted is not None:
            return hinted
    return scheduled


def should_disable(
    first_failure_at: float | None,
    last_success_at: float | None,
    now: float,
    disable_after: float = DEFAULT_DISABLE_AFTER,
) -> bool:
    """Whether a subscription should become ``invalid`` for failing too long (spec §5.1).

    ``first_failure_at`` is when the current streak of failed attempts began (``None`` if the
    last attempt succeeded or there was none); ``last_success_at`` is the last successful
    attempt (``None`` if never). All times are unix seconds.

    True when attempts have kept failing for at least ``disable_after`` with no success since
    the streak began. The clock starts at the first failure, not at the last success: a
    receiver that was idle for a month (no events, so no attempts) and then fails once must not
    be disabled immediately - it has to keep failing for the whole window.
    """
    if first_failure_at is None:
        return False
    if last_success_at is not None and last_success_at >= first_failure_at:
        # A success ended the streak (the caller has not reset first_failure_at yet).
        return False
    return now - first_failure_at >= disable_after
