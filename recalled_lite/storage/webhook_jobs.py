"""How a recover / replay_missing job walks the log, written once for both backends.

The rules themselves are pure (delivery/replay.py); this is the walk around them - where a
job starts and stops, how a replay chunk becomes "queue these seqs", and the preview that
counts what a job would queue - which needs a few queries. Each backend gives those
queries in its dialect (``JobQueries``, built in storage/<backend>/webhook_jobs.py), so a
change to the walk cannot make the backends queue different messages.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from ..delivery.replay import recover_bounds, replay_candidates
from ..delivery.subscriptions import SubscriptionInfo, TypeFilter
from ..ids import ulids

Conn = Any


class JobQueries(NamedTuple):
    head_seq: Callable[[Conn], int]
    first_seq_for_replay: Callable[[Conn, int], "int | None"]
    count_failed: Callable[[Conn, str, str, str], int]
    never_sent: Callable[[Conn, str, list[int]], list[int]]
    # (seq, organization, action, received_at) of seq in (cursor, stop], by seq, at most chunk
    event_chunk: Callable[[Conn, int, int, int], list[tuple[Any, ...]]]


class JobStart(NamedTuple):
    cursor_seq: int | None
    stop_seq: int | None
    cursor_id: str | None
    stop_id: str | None
    total: int


class ReplayChunk(NamedTuple):
    done: bool
    scanned: int
    fresh: list[int]  # the seqs to queue now
    skipped: int      # candidates that already had a message
    cursor: int


def job_start(q: JobQueries, conn: Conn, kind: str, sub_id: str, begin: int, end: int | None,
              now: int) -> JobStart:
    """Where a new job starts, where it stops, and the total it shows. A replay stops at the
    head as of its creation: what comes later is delivered by intake already."""
    if kind == "replay_missing":
        stop_seq = q.head_seq(conn)
        first = q.first_seq_for_replay(conn, begin)
        cursor_seq = (first if first is not None else stop_seq + 1) - 1
        return JobStart(cursor_seq, stop_seq, None, None, max(stop_seq - cursor_seq, 0))
    # Message ids come from the id clock, which continue_after() keeps ahead of every stored id
    # (another instance's clock, or ours set back): "up to now" must reach the ids issued so far.
    cursor_id, stop_id = recover_bounds(begin, end, max(now, ulids.last_ms()))
    return JobStart(None, None, cursor_id, stop_id, q.count_failed(conn, sub_id, cursor_id, stop_id))


def replay_chunk(q: JobQueries, conn: Conn, sub: SubscriptionInfo, begin: int, end: int | None,
                 cursor: int, stop: int, chunk: int) -> ReplayChunk:
    rows = q.event_chunk(conn, cursor, stop, chunk)
    if not rows:
        return ReplayChunk(True, 0, [], 0, cursor)
    wanted = replay_candidates(rows, sub, begin, end, TypeFilter(sub.event_types))
    fresh = q.never_sent(conn, sub.id, wanted) if wanted else []
    last = rows[-1][0]
    return ReplayChunk(last >= stop or len(rows) < chunk, len(rows), fresh, len(wanted) - len(fresh), last)


def preview_job_count(q: JobQueries, conn: Conn, kind: str, sub: SubscriptionInfo, begin: int,
                      end: int | None, now: int, chunk: int = 5000) -> int:
    """How many messages a job over [begin, end] would queue if it ran now: the job's own
    start and chunks, counted instead of queued."""
    start = job_start(q, conn, kind, sub.id, begin, end, now)
    if kind == "recover":
        return start.total
    assert start.cursor_seq is not None and start.stop_seq is not None
    cursor, count = start.cursor_seq, 0
    while cursor < start.stop_seq:
        step = replay_chunk(q, conn, sub, begin, end, cursor, start.stop_seq, chunk)
        count += len(step.fresh)
        if step.scanned == 0:
            break
        cursor = step.cursor
    return count
