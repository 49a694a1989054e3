"""recover / replay_missing as durable jobs on PostgreSQL, run by one instance at a time.

As on SQLite (storage/sqlite/webhook_jobs.py): a cursor and counters in ``webhook_jobs``,
advanced one chunk per write transaction together with the deliveries that chunk queued,
so a restart resumes where the last committed chunk ended. What several instances add: a
running job is leased (``lease_owner``, ``lease_until``) to the instance that steps it.
Every step takes the row ``FOR UPDATE SKIP LOCKED`` and renews the lease; an instance that
finds the job leased to another live one drops it, and the lease keeper's tick
(webhook_outbox.reclaim_expired) adopts running jobs whose lease ended, so the job of an
instance that died is finished by another.

``JobOps`` is a part of ``WebhookStorage`` (storage/postgres/webhooks.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from ...delivery.replay import first_event_id_bound, job_stop_reason, recover_bounds, replay_candidates
from ...delivery.subscriptions import SubscriptionInfo, TypeFilter
from ...ids import ulids
from ...timefmt import now_ms
from ..webhook_base import JobRow
from . import webhook_reads as reads
from .webhook_reads import OPEN

if TYPE_CHECKING:
    from .webhooks import WebhookStorage


def first_seq_for_replay(conn: psycopg.Connection, begin: int) -> int | None:
    """The smallest seq that may have ``received_at >= begin`` (delivery/replay.py). Through
    the index on events.id, in its collation: event ids are "evt_" and a fixed-length ULID of
    digits and capitals, which C, C.UTF-8 and the usual locale collations order as bytes do (a
    COLLATE "C" here would turn the index walk into a scan of the whole log; declaring the
    column COLLATE "C" in 001 would make it exact everywhere)."""
    row = conn.execute("SELECT seq FROM events WHERE id >= %s ORDER BY id LIMIT 1",
                       (first_event_id_bound(begin),)).fetchone()
    return row[0] if row is not None else None


def count_failed(conn: psycopg.Connection, sub_id: str, first_id: str, last_id: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM webhook_messages WHERE subscription_id = %s AND status = 'failed' "
        "AND id >= %s AND id <= %s", (sub_id, first_id, last_id)).fetchone()[0]


def never_sent(conn: psycopg.Connection, sub_id: str, seqs: list[int]) -> list[int]:
    """`seqs` (ascending) without those that already have a message for `sub_id`."""
    have = {r[0] for r in conn.execute(
        "SELECT event_seq FROM webhook_messages WHERE subscription_id = %s "
        "AND event_seq BETWEEN %s AND %s", (sub_id, seqs[0], seqs[-1]))}
    return [seq for seq in seqs if seq not in have]


def _event_chunk(conn: psycopg.Connection, cursor: int, stop: int, chunk: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT seq, organization, action, received_at FROM events WHERE seq > %s AND seq <= %s "
        "ORDER BY seq LIMIT %s", (cursor, stop, chunk)).fetchall()


def _head_seq(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0


def preview_job_count(conn: psycopg.Connection, kind: str, sub: SubscriptionInfo, begin: int,
                      end: int | None, now: int, chunk: int = 5000) -> int:
    """How many messages a recover / replay_missing job over [begin, end] would queue if it
    ran now: the job's own bounds and rules, counted instead of queued."""
    if kind == "recover":
        return count_failed(conn, sub.id, *recover_bounds(begin, end, now))
    stop = _head_seq(conn)
    first = first_seq_for_replay(conn, begin)
    if first is None:
        return 0
    types = TypeFilter(sub.event_types)
    cursor, count = first - 1, 0
    while cursor < stop:
        rows = _event_chunk(conn, cursor, stop, chunk)
        if not rows:
            break
        wanted = replay_candidates(rows, sub, begin, end, types)
        if wanted:
            count += len(never_sent(conn, sub.id, wanted))
        cursor = rows[-1][0]
    return count


class JobOps:
    async def create_job(self: "WebhookStorage", kind: str, sub_id: str, organization: str | None,
                         begin: int, end: int | None) -> JobRow:
        return await self.store.write(self._op(self._create_job), kind, sub_id, organization, begin, end)

    def _create_job(self: "WebhookStorage", conn: psycopg.Connection, kind: str, sub_id: str,
                    organization: str | None, begin: int, end: int | None) -> JobRow:
        self._fresh(conn)
        self._usable(sub_id, organization)
        job_id = self._insert_job(conn, kind, sub_id, begin, end, now_ms())
        return reads.select_job(conn, job_id)

    def _insert_job(self: "WebhookStorage", conn: psycopg.Connection, kind: str, sub_id: str,
                    begin: int, end: int | None, now: int) -> str:
        job_id = "job_" + ulids.new()
        cursor_seq = stop_seq = None
        cursor_id = stop_id = None
        if kind == "replay_missing":
            stop_seq = _head_seq(conn)
            first = first_seq_for_replay(conn, begin)
            cursor_seq = (first if first is not None else stop_seq + 1) - 1
            total = max(stop_seq - cursor_seq, 0)
        else:
            cursor_id, stop_id = recover_bounds(begin, end, now)
            total = count_failed(conn, sub_id, cursor_id, stop_id)
        # Leased to this instance from the start: it runs the job it created.
        conn.execute(
            "INSERT INTO webhook_jobs (id, subscription_id, kind, status, begin_at, end_at, cursor_seq, "
            "stop_seq, cursor_id, stop_id, total, created_at, updated_at, lease_owner, lease_until) "
            "VALUES (%s,%s,%s,'running',%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (job_id, sub_id, kind, begin, end, cursor_seq, stop_seq, cursor_id, stop_id, total, now, now,
             self.instance, now + self.policy.lease_ms))
        self._new_jobs.append(job_id)
        return job_id

    def _adopt_orphan_jobs(self: "WebhookStorage", conn: psycopg.Connection, now: int) -> None:
        """Running jobs nobody holds (their instance died, or stopped): run them here. The
        step takes the lease; several instances told at once settle it there."""
        self._new_jobs.extend(row[0] for row in conn.execute(
            "SELECT id FROM webhook_jobs WHERE status = 'running' AND coalesce(lease_until, 0) < %s "
            "ORDER BY id", (now,)))

    async def job_step(self: "WebhookStorage", job_id: str, chunk: int, max_backlog: int) -> str:
        """Process one chunk. Returns 'done' (finished, or run by another instance), 'more'
        or 'paused' (subscription backlog, or another instance is stepping it right now)."""
        return await self.store.write(self._op(self._job_step), job_id, chunk, max_backlog)

    def _job_step(self: "WebhookStorage", conn: psycopg.Connection, job_id: str, chunk: int,
                  max_backlog: int) -> str:
        now = now_ms()
        row = conn.execute(
            "SELECT subscription_id, kind, status, begin_at, end_at, cursor_seq, stop_seq, cursor_id, "
            "stop_id, created_at, lease_owner, lease_until FROM webhook_jobs WHERE id = %s "
            "FOR UPDATE SKIP LOCKED", (job_id,)).fetchone()
        if row is None:
            locked = conn.execute("SELECT 1 FROM webhook_jobs WHERE id = %s AND status = 'running'",
                                  (job_id,)).fetchone()
            return "paused" if locked else "done"
        sid, kind, status, begin, end, cursor_seq, stop_seq, cursor_id, stop_id, created_at, owner, until = row
        if status != "running":
            return "done"
        if owner is not None and owner != self.instance and (until or 0) >= now:
            return "done"  # another live instance runs it; the lease keeper adopts it if it dies
        conn.execute("UPDATE webhook_jobs SET lease_owner = %s, lease_until = %s WHERE id = %s",
                     (self.instance, now + self.policy.lease_ms, job_id))
        self._read_rows(conn, [sid], lock=False)
        self._fresh(conn)
        sub = self.subs.get(sid)
        stop_reason = job_stop_reason(sub, created_at)
        if stop_reason is not None:
            conn.execute(
                "UPDATE webhook_jobs SET status = 'cancelled', error = %s, updated_at = %s, finished_at = %s, "
                "lease_owner = NULL, lease_until = NULL WHERE id = %s", (stop_reason, now, now, job_id))
            return "done"
        assert sub is not None
        backlog = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM webhook_messages WHERE subscription_id = %s AND {OPEN} "
            "LIMIT %s) b", (sid, max_backlog)).fetchone()[0]
        if backlog >= max_backlog:
            return "paused"
        if kind == "replay_missing":
            done, scanned, queued, skipped, cursor = self._replay_chunk(
                conn, sub, begin, end, cursor_seq, stop_seq, chunk, now)
            conn.execute(
                "UPDATE webhook_jobs SET cursor_seq = %s, scanned = scanned + %s, queued = queued + %s, "
                "skipped = skipped + %s, updated_at = %s WHERE id = %s",
                (cursor, scanned, queued, skipped, now, job_id))
        else:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM webhook_messages WHERE subscription_id = %s AND status = 'failed' "
                "AND id > %s AND id <= %s ORDER BY id LIMIT %s", (sid, cursor_id, stop_id, chunk))]
            queued = self._requeue(conn, ids, "recover", now)
            done = len(ids) < chunk
            conn.execute(
                "UPDATE webhook_jobs SET cursor_id = %s, scanned = scanned + %s, queued = queued + %s, "
                "updated_at = %s WHERE id = %s",
                (ids[-1] if ids else cursor_id, len(ids), queued, now, job_id))
        if done:
            conn.execute(
                "UPDATE webhook_jobs SET status = 'completed', finished_at = %s, updated_at = %s, "
                "lease_owner = NULL, lease_until = NULL WHERE id = %s", (now, now, job_id))
            return "done"
        return "more"

    def _replay_chunk(self: "WebhookStorage", conn: psycopg.Connection, sub: SubscriptionInfo, begin: int,
                      end: int | None, cursor: int, stop: int, chunk: int,
                      now: int) -> tuple[bool, int, int, int, int]:
        rows = _event_chunk(conn, cursor, stop, chunk)
        if not rows:
            return True, 0, 0, 0, cursor
        wanted = replay_candidates(rows, sub, begin, end, TypeFilter(sub.event_types))
        skipped = 0
        queued = 0
        if wanted:
            fresh = never_sent(conn, sub.id, wanted)
            skipped = len(wanted) - len(fresh)
            if fresh:
                ids = ulids.batch(len(fresh))
                self._enqueue(conn, [("whd_" + mid, sub.id, seq, "event.created", None, "replay")
                                     for mid, seq in zip(ids, fresh)], now)
            queued = len(fresh)
        last = rows[-1][0]
        return last >= stop or len(rows) < chunk, len(rows), queued, skipped, last

    async def fail_job(self: "WebhookStorage", job_id: str, error: str) -> None:
        """Quarantine a job whose steps keep failing: ``failed`` with the error."""
        await self.store.write(self._op(_fail_job), job_id, error, now_ms())

    async def get_job(self: "WebhookStorage", sub_id: str, job_id: str) -> JobRow | None:
        return await self.store.read(reads.select_job, job_id, sub_id)

    async def list_jobs(self: "WebhookStorage", sub_id: str, limit: int, before_id: str | None) -> list[JobRow]:
        return await self.store.read(reads.list_jobs, sub_id, limit, before_id)


def _fail_job(conn: psycopg.Connection, job_id: str, error: str, now: int) -> Any:
    conn.execute(
        "UPDATE webhook_jobs SET status = 'failed', error = %s, updated_at = %s, finished_at = %s, "
        "lease_owner = NULL, lease_until = NULL WHERE id = %s AND status = 'running'", (error, now, now, job_id))
