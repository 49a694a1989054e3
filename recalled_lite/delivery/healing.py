"""When an `invalid` subscription is re-tested, and what is replayed when it heals (pure).

A subscription becomes `invalid` when its test fails, when it has failed for
``disable_after`` with no success, or when the receiver answers 410 Gone. The first two
usually mean "the receiver is down": it is re-tested on its own, 1 min after it became
invalid and then at doubling intervals up to 1 h (``[webhooks] retest_*``). A 410 is the
receiver asking us to stop, so it is never re-tested on its own: the owner re-activates it
with ``PATCH {"state": "new"}``.

When a re-test passes - or a test the owner asked for (``POST …/test``, ``PATCH {"state":
"new"}``) - the events the subscription missed since ``invalid_since`` are queued by a
``replay_missing`` job (``replay_after_retest``); not after a 410, where resuming is the
owner's call (they can run replay_missing themselves). Nothing here reads the clock.
"""

from __future__ import annotations

import enum

__all__ = ["InvalidCause", "first_retest_at", "next_retest_at", "replays_when_healed", "replay_begin",
           "REPLAY_MARGIN_MS"]

# Events are stamped `receivedAt` a moment before the writer numbers them and checks the
# subscription's state: start the replay a little before `invalid_since` so an event
# stamped just before the change and committed just after it is not missed. Events that
# already have a delivery are skipped, so the margin costs nothing but a scan.
REPLAY_MARGIN_MS = 60_000
# 2**30 minutes is longer than anyone waits; it keeps the doubling from overflowing.
_MAX_DOUBLINGS = 30


class InvalidCause(enum.Enum):
    TEST_FAILED = "test_failed"  # the test (or a re-test) message failed
    NO_SUCCESS = "no_success"    # every attempt failed for disable_after
    GONE = "gone"                # the receiver answered 410 Gone: it asked us to stop


def retest_delay_ms(retests_done: int, initial_ms: int, max_ms: int) -> int:
    """Delay before re-test number ``retests_done + 1``: initial, doubling, capped."""
    return min(initial_ms << min(max(retests_done, 0), _MAX_DOUBLINGS), max_ms)


def first_retest_at(cause: InvalidCause, now_ms: int, *, enabled: bool, initial_ms: int,
                    max_ms: int) -> int | None:
    """When to re-test a subscription that just became invalid; None = never on its own."""
    if not enabled or cause is InvalidCause.GONE:
        return None
    return now_ms + retest_delay_ms(0, initial_ms, max_ms)


def next_retest_at(retests_done: int, now_ms: int, *, initial_ms: int, max_ms: int) -> int:
    """After ``retests_done`` re-tests (the one just sent included), when the next is due."""
    return now_ms + retest_delay_ms(retests_done, initial_ms, max_ms)


def replays_when_healed(cause: str | None) -> bool:
    """Whether passing a test queues what was missed while invalid (``cause`` is the stored
    ``InvalidCause`` value)."""
    return cause != InvalidCause.GONE.value


def replay_begin(invalid_since: int, created_at: int) -> int:
    """Start of the replay window after a re-test passed: just before the subscription
    became invalid, never before it existed."""
    return max(invalid_since - REPLAY_MARGIN_MS, created_at)
