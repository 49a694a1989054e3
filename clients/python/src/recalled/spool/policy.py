"""What the sender does with the server's answer to a batch, and how long it waits.

Pure rules (no I/O), shared by every sender and unit-tested on their own.

| answer                                        | decision                                   |
|-----------------------------------------------|--------------------------------------------|
| network error, timeout, 408, 502, 503, 504,   | RETRY the batch after a backoff (or the     |
| 429 RATE_LIMITED                              | server's Retry-After)                      |
| 400 with ``details.errors[].index``           | DEAD_INDEXES: dead-letter those, resend    |
|                                               | the rest at once                           |
| 409 with ``details.index``                    | DEAD_INDEXES (that one)                    |
| 400/409 without indexes, 413                  | SPLIT in halves (a lone event: DEAD)       |
| 403 ``details.field == "organization"``       | SPLIT_BY_ORGANIZATION: a key bound to one  |
|                                               | organization refuses the others' events    |
| 401, 403, 404, 429 PLAN_LIMIT_REACHED         | DEAD: every event of the batch             |
| anything else (500, 405, 415, ...)            | UNEXPECTED: retried, dead-lettered after   |
|                                               | ``max_unexpected_attempts``                |
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from ..errors import RecalledError


class Decision(enum.Enum):
    RETRY = "retry"
    DEAD = "dead"
    DEAD_INDEXES = "dead_indexes"
    SPLIT = "split"
    SPLIT_BY_ORGANIZATION = "split_by_organization"
    UNEXPECTED = "unexpected"


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    indexes: list[int] = field(default_factory=list)


RETRYABLE_STATUSES = frozenset({408, 502, 503, 504})


def _indexes(details: object, size: int) -> list[int]:
    """Valid, distinct indexes from ``details.errors[].index`` (or ``details.index``)."""
    found: list[int] = []
    if isinstance(details, dict):
        errors = details.get("errors")
        if isinstance(errors, list):
            found += [e["index"] for e in errors if isinstance(e, dict) and isinstance(e.get("index"), int)]
        elif isinstance(details.get("index"), int):
            found.append(details["index"])
    return sorted({i for i in found if 0 <= i < size})


def judge(error: RecalledError, size: int) -> Verdict:
    """The decision for a batch of ``size`` events that got ``error``."""
    status = error.status
    if status == 0 or status in RETRYABLE_STATUSES or (status == 429 and error.code != "PLAN_LIMIT_REACHED"):
        return Verdict(Decision.RETRY)
    if status in (400, 409):
        indexes = _indexes(error.details, size)
        if indexes:
            return Verdict(Decision.DEAD_INDEXES, indexes)
        return Verdict(Decision.SPLIT if size > 1 else Decision.DEAD)
    if status == 413:
        return Verdict(Decision.SPLIT if size > 1 else Decision.DEAD)
    if (status == 403 and size > 1 and isinstance(error.details, dict)
            and error.details.get("field") == "organization"):
        return Verdict(Decision.SPLIT_BY_ORGANIZATION)
    if status in (401, 403, 404, 429):
        return Verdict(Decision.DEAD)
    return Verdict(Decision.UNEXPECTED)


def backoff(consecutive_failures: int, minimum: float = 1.0, maximum: float = 600.0,
            rng: random.Random | None = None) -> float:
    """Exponential from ``minimum`` to ``maximum`` seconds, ±25 % jitter so that many
    clients coming back from one outage do not all retry in the same second."""
    n = max(1, consecutive_failures)
    base = min(maximum, minimum * 2.0 ** min(n - 1, 60))
    jitter = rng.uniform(0.75, 1.25) if rng is not None else random.uniform(0.75, 1.25)
    return min(maximum, max(minimum, base * jitter))


def retry_after_delay(retry_after: float | None, maximum: float = 600.0) -> float | None:
    """The server's Retry-After, bounded: a wait longer than the backoff cap is cut to it."""
    if retry_after is None:
        return None
    return min(maximum, max(0.0, retry_after))
