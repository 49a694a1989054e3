"""Work that keeps failing does not loop forever (pure rules).

Recording a batch of attempt results, or a step of a recover / replay job, can fail. Most
failures are transient (the disk is full, the database is locked): those are retried with
a backoff and never counted, so a full disk never marks deliveries failed. Any other
failure is counted against the item: retried with a backoff (``failure_backoff_*``), and
after ``quarantine_after_failures`` it is quarantined - a delivery becomes ``failed`` with
the error on its attempt, a job becomes ``failed`` with ``error`` - so the work behind it
moves on. A failing batch of results is split in halves until the failing item is alone,
so one poison result never takes the rest of its batch with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

from ..errors import StorageUnavailable

__all__ = ["FailurePolicy", "is_transient", "backoff_seconds", "should_quarantine", "halves", "describe"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    initial_seconds: float = 1.0
    max_seconds: float = 60.0
    quarantine_after: int = 8


def is_transient(exc: BaseException) -> bool:
    """Failures of the database as a whole (full, locked, shutting down): retried, not counted."""
    return isinstance(exc, StorageUnavailable)


def backoff_seconds(failures: int, policy: FailurePolicy) -> float:
    """Wait before the next try after ``failures`` consecutive failures (>= 1)."""
    return min(policy.initial_seconds * 2 ** min(max(failures - 1, 0), 30), policy.max_seconds)


def should_quarantine(failures: int, policy: FailurePolicy) -> bool:
    return failures >= policy.quarantine_after


def halves(batch: Sequence[T]) -> tuple[list[T], list[T]]:
    middle = len(batch) // 2
    return list(batch[:middle]), list(batch[middle:])


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
