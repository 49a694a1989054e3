"""What recover / replay_missing jobs select (pure; both storage backends call it).

A job scans in chunks and queues what these rules pick; the SQL that reads the chunks is
the backend's. Nothing here reads the clock.
"""

from __future__ import annotations

from ..ids import ulid_ceiling, ulid_floor
from .subscriptions import SubscriptionInfo, TypeFilter

# Replays find their first event through the ULID of its id (indexed, and monotonic in
# seq by construction: ids/UlidGenerator never goes back, even when the clock does). An
# id's time is never before the moment the writer numbered the event, and `receivedAt` is
# stamped a moment before that; this much slack covers a clock stepped back in between.
RECEIVED_SLACK_MS = 10 * 60_000


def first_event_id_bound(begin: int) -> str:
    """The smallest event id whose event may have ``received_at >= begin``."""
    return "evt_" + ulid_floor(begin - RECEIVED_SLACK_MS)


def recover_bounds(begin: int, end: int | None, now: int) -> tuple[str, str]:
    """The message-id range a recover job scans: ids are ULIDs, so time bounds are id bounds."""
    return "whd_" + ulid_floor(begin), "whd_" + ulid_ceiling(min(end, now) if end is not None else now)


def replay_candidates(rows: list[tuple[int, str | None, str, int]], sub: SubscriptionInfo, begin: int,
                      end: int | None, types: TypeFilter) -> list[int]:
    """The seqs of (seq, organization, action, received_at) rows that replay_missing sends to `sub`."""
    return [
        seq for seq, org, action, received in rows
        if received >= begin and (end is None or received <= end)
        and (sub.organization is None or org == sub.organization) and types.matches(action)
    ]


def job_stop_reason(sub: SubscriptionInfo | None, job_created_at: int) -> str | None:
    """Why a running job must be cancelled before its next chunk (None: it goes on)."""
    if sub is None:
        return "the subscription was deleted"
    if sub.state == "deactivated":
        return "the subscription was deactivated"
    if sub.state == "invalid" and sub.state_changed_at > job_created_at:
        return f"the subscription became invalid: {sub.state_reason}"
    return None
