"""recover / replay_missing as durable jobs on SQLite: a cursor and counters in
``webhook_jobs``, advanced one chunk per write transaction together with the deliveries
that chunk queued, so a restart resumes where the last committed chunk ended.

``JobOps`` is a part of ``WebhookStorage`` (storage/sqlite/webhooks.py), kept apart for
size: it uses that class's subscription cache and queueing (``subs``, ``_usable``,
``_enqueue``, ``_requeue``).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from ...delivery.replay import first_event_id_bound, job_stop_reason
from ...delivery.subscriptions import SubscriptionInfo
from ...ids import ulids
from ...timefmt import now_ms
from .. import webhook_jobs as jobs
from ..webhook_base import JobRow
from . import webhook_reads as reads
from .webhook_reads import OPEN

if TYPE_CHECKING:
    from .webhooks import WebhookStorage


def first_seq_for_replay(conn: sqlite3.Connection, begin: int) -> int | None:
    """The smallest seq that may have ``received_at >= begin``: every later event is
    checked against ``begin`` one by one as the job scans by seq, so nothing is skipped
    even when ``received_at`` went backwards (a clock step). None when there is none."""
    row = conn.execute("SELECT seq FROM events WHERE id >= ? ORDER BY id LIMIT 1",
                       (first_event_id_bound(begin),)).fetchone()
    return row[0] if row is not None else None


def count_failed(conn: sqlite3.Connection, sub_id: str, first_id: str, last_id: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM webhook_messages WHERE subscription_id = ? AND status = 'failed' "
        "AND id >= ? AND id <= ?", (sub_id, first_id, last_id)).fetchone()[0]


def never_sent(conn: sqlite3.Connection, sub_id: str, seqs: list[int]) -> list[int]:
    """`seqs` (ascending) without those that already have a message for `sub_id` (delivered,
    failed or on their way): structural "never twice", UNIQUE(subscription_id, event_seq)."""
    have = {r[0] for r in conn.execute(
        "SELECT event_seq FROM webhook_messages WHERE subscription_id = ? "
        "AND event_seq BETWEEN ? AND ?", (sub_id, seqs[0], seqs[-1]))}
    return [seq for seq in seqs if seq not in have]


def _event_chunk(conn: sqlite3.Connection, cursor: int, stop: int, chunk: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT seq, organization, action, received_at FROM events WHERE seq > ? AND seq <= ? "
        "ORDER BY seq LIMIT ?", (cursor, stop, chunk)).fetchall()


def _head_seq(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0


QUERIES = jobs.JobQueries(head_seq=_head_seq, first_seq_for_replay=first_seq_for_replay,
                          count_failed=count_failed, never_sent=never_sent, event_chunk=_event_chunk)


def preview_job_count(conn: sqlite3.Connection, kind: str, sub: SubscriptionInfo, begin: int,
                      end: int | None, now: int, chunk: int = 5000) -> int:
    return jobs.preview_job_count(QUERIES, conn, kind, sub, begin, end, now, chunk)


class JobOps:
    async def create_job(self: "WebhookStorage", kind: str, sub_id: str, organization: str | None,
                         begin: int, end: int | None) -> JobRow:
        return await self.store.write(self._create_job, kind, sub_id, organization, begin, end)

    def _create_job(self: "WebhookStorage", conn: sqlite3.Connection, kind: str, sub_id: str,
                    organization: str | None, begin: int, end: int | None) -> JobRow:
        self._usable(sub_id, organization)
        job_id = self._insert_job(conn, kind, sub_id, begin, end, now_ms())
        return reads.select_job(conn, job_id)

    def _insert_job(self: "WebhookStorage", conn: sqlite3.Connection, kind: str, sub_id: str,
                    begin: int, end: int | None, now: int) -> str:
        job_id = "job_" + ulids.new()
        cursor_seq, stop_seq, cursor_id, stop_id, total = jobs.job_start(
            QUERIES, conn, kind, sub_id, begin, end, now)
        conn.execute(
            "INSERT INTO webhook_jobs (id, subscription_id, kind, status, begin_at, end_at, cursor_seq, "
            "stop_seq, cursor_id, stop_id, total, created_at, updated_at) "
            "VALUES (?,?,?,'running',?,?,?,?,?,?,?,?,?)",
            (job_id, sub_id, kind, begin, end, cursor_seq, stop_seq, cursor_id, stop_id, total, now, now))
        self._new_jobs.append(job_id)
        return job_id

    async def job_step(self: "WebhookStorage", job_id: str, chunk: int, max_backlog: int) -> str:
        """Process one chunk. Returns 'done', 'more' or 'paused' (subscription backlog)."""
        return await self.store.write(self._undoable(self._job_step), job_id, chunk, max_backlog)

    def _job_step(self: "WebhookStorage", conn: sqlite3.Connection, job_id: str, chunk: int,
                  max_backlog: int) -> str:
        row = conn.execute(
            "SELECT subscription_id, kind, status, begin_at, end_at, cursor_seq, stop_seq, cursor_id, "
            "stop_id, created_at FROM webhook_jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row[2] != "running":
            return "done"
        sid, kind, _, begin, end, cursor_seq, stop_seq, cursor_id, stop_id, created_at = row
        now = now_ms()
        sub = self.subs.get(sid)
        stop_reason = job_stop_reason(sub, created_at)
        if stop_reason is not None:
            conn.execute(
                "UPDATE webhook_jobs SET status = 'cancelled', error = ?, updated_at = ?, finished_at = ? "
                "WHERE id = ?", (stop_reason, now, now, job_id))
            return "done"
        assert sub is not None
        backlog = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM webhook_messages WHERE subscription_id = ? AND {OPEN} "
            "LIMIT ?)", (sid, max_backlog)).fetchone()[0]
        if backlog >= max_backlog:
            return "paused"
        if kind == "replay_missing":
            done, scanned, queued, skipped, cursor = self._replay_chunk(
                conn, sub, begin, end, cursor_seq, stop_seq, chunk, now)
            conn.execute(
                "UPDATE webhook_jobs SET cursor_seq = ?, scanned = scanned + ?, queued = queued + ?, "
                "skipped = skipped + ?, updated_at = ? WHERE id = ?",
                (cursor, scanned, queued, skipped, now, job_id))
        else:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM webhook_messages WHERE subscription_id = ? AND status = 'failed' "
                "AND id > ? AND id <= ? ORDER BY id LIMIT ?", (sid, cursor_id, stop_id, chunk))]
            queued = self._requeue(conn, ids, "recover", now)
            done = len(ids) < chunk
            conn.execute(
                "UPDATE webhook_jobs SET cursor_id = ?, scanned = scanned + ?, queued = queued + ?, "
                "updated_at = ? WHERE id = ?",
                (ids[-1] if ids else cursor_id, len(ids), queued, now, job_id))
        if done:
            conn.execute(
                "UPDATE webhook_jobs SET status = 'completed', finished_at = ?, updated_at = ? WHERE id = ?",
                (now, now, job_id))
            return "done"
        return "more"

    def _replay_chunk(self: "WebhookStorage", conn: sqlite3.Connection, sub: SubscriptionInfo, begin: int,
                      end: int | None, cursor: int, stop: int, chunk: int,
                      now: int) -> tuple[bool, int, int, int, int]:
        step = jobs.replay_chunk(QUERIES, conn, sub, begin, end, cursor, stop, chunk)
        if step.fresh:
            self._enqueue(conn, self._event_messages([(sub.id, seq) for seq in step.fresh], "replay"), now)
        return step.done, step.scanned, len(step.fresh), step.skipped, step.cursor

    async def fail_job(self: "WebhookStorage", job_id: str, error: str) -> None:
        """Quarantine a job whose steps keep failing: ``failed`` with the error, so the
        other jobs move on. What it already queued stays queued."""
        await self.store.write(_fail_job, job_id, error, now_ms())

    async def get_job(self: "WebhookStorage", sub_id: str, job_id: str) -> JobRow | None:
        return await self.store.read(reads.select_job, job_id, sub_id)

    async def list_jobs(self: "WebhookStorage", sub_id: str, limit: int, before_id: str | None) -> list[JobRow]:
        return await self.store.read(reads.list_jobs, sub_id, limit, before_id)


def _fail_job(conn: sqlite3.Connection, job_id: str, error: str, now: int) -> Any:
    conn.execute(
        "UPDATE webhook_jobs SET status = 'failed', error = ?, updated_at = ?, finished_at = ? "
        "WHERE id = ? AND status = 'running'", (error, now, now, job_id))
