"""Reads of the webhook tables (reader threads), and the SQL the webhook modules share."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..base import EventRecord
from ..webhook_base import AttemptRow, JobRow

# The WHERE term of the partial index webhook_messages_open, repeated verbatim in every
# query on open rows: SQLite uses a partial index only when the query contains its term
# (it does not infer `status IN (...)` from `status = 'pending'`).
OPEN = "status IN ('pending', 'sending')"
EVENT_COLUMNS = (
    "seq, id, organization, action, actor_type, actor_id, actor_name, actor_email, "
    "targets, metadata, ip_address, user_agent, occurred_at, received_at, "
    "idempotency_key, prev_hash, hash, signature"
)
ATTEMPT_SELECT = (
    "SELECT a.id, a.message_id, e.id, a.subscription_id, a.attempt, a.status, a.trigger, a.url, "
    "a.response_status_code, a.response_body, a.error, a.duration_ms, a.created_at, "
    "a.next_attempt_at, a.warning FROM webhook_attempts a LEFT JOIN events e ON e.seq = a.event_seq"
)
OPEN_SELECT = (
    "SELECT coalesce(m.attempt_id, 'atm_' || substr(m.id, 5)), m.id, e.id, m.subscription_id, "
    "m.attempts + 1, m.status, m.trigger, s.url, NULL, NULL, NULL, NULL, m.queued_at, "
    "m.next_attempt_at, NULL FROM webhook_messages m LEFT JOIN events e ON e.seq = m.event_seq "
    "JOIN webhook_subscriptions s ON s.id = m.subscription_id"
)
JOB_COLUMNS = (
    "id, subscription_id, kind, status, begin_at, end_at, total, scanned, queued, skipped, "
    "error, created_at, updated_at, finished_at"
)


def select_job(conn: sqlite3.Connection, job_id: str, sub_id: str | None = None) -> JobRow | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM webhook_jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or (sub_id is not None and row[1] != sub_id):
        return None
    return row


def list_jobs(conn: sqlite3.Connection, sub_id: str, limit: int, before_id: str | None) -> list[JobRow]:
    if before_id is None:
        return conn.execute(f"SELECT {JOB_COLUMNS} FROM webhook_jobs WHERE subscription_id = ? "
                            "ORDER BY id DESC LIMIT ?", (sub_id, limit)).fetchall()
    return conn.execute(f"SELECT {JOB_COLUMNS} FROM webhook_jobs WHERE subscription_id = ? AND id < ? "
                        "ORDER BY id DESC LIMIT ?", (sub_id, before_id, limit)).fetchall()


def due_snapshot(conn: sqlite3.Connection) -> dict[str, int]:
    return {sid: at for sid, at in conn.execute(
        "SELECT subscription_id, min(next_attempt_at) FROM webhook_messages "
        f"WHERE status = 'pending' AND {OPEN} GROUP BY subscription_id")}


def load_for_send(conn: sqlite3.Connection, message_ids: list[str], seqs: list[int]
                  ) -> tuple[set[str], dict[int, EventRecord]]:
    conn.execute("BEGIN")  # one snapshot for both queries
    try:
        live: set[str] = set()
        for start in range(0, len(message_ids), 500):
            part = message_ids[start:start + 500]
            live.update(r[0] for r in conn.execute(
                f"SELECT id FROM webhook_messages WHERE status = 'sending' AND id IN ({','.join('?' * len(part))})",
                part))
        events: dict[int, EventRecord] = {}
        unique = sorted(set(seqs))
        for start in range(0, len(unique), 500):
            part = unique[start:start + 500]
            for row in conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE seq IN ({','.join('?' * len(part))})", part):
                events[row[0]] = EventRecord._make(row)
        return live, events
    finally:
        conn.execute("COMMIT")


def event_visible(conn: sqlite3.Connection, event_id: str, organization: str | None) -> bool:
    row = conn.execute("SELECT organization FROM events WHERE id = ?", (event_id,)).fetchone()
    return row is not None and (organization is None or row[0] == organization)


def open_attempt(conn: sqlite3.Connection, message_id: str) -> AttemptRow | None:
    return conn.execute(f"{OPEN_SELECT} WHERE m.id = ?", (message_id,)).fetchone()


def list_attempts(conn: sqlite3.Connection, sub_ids: list[str], event_id: str | None,
                  status: str | None, begin: int | None, end: int | None,
                  cursor: tuple[int, str] | None, limit: int) -> list[AttemptRow] | None:
    """Newest first (created_at, id). Finished attempts from webhook_attempts, plus the open
    attempt of every pending/sending message. ``limit + 1`` rows so the caller sees has_more."""
    if not sub_ids:
        return []
    conn.execute("BEGIN")
    try:
        event_seq = None
        if event_id is not None:
            row = conn.execute("SELECT seq FROM events WHERE id = ?", (event_id,)).fetchone()
            if row is None:
                return None
            event_seq = row[0]
        marks = ",".join("?" * len(sub_ids))
        rows: list[AttemptRow] = []
        if status in (None, "success", "failed"):
            where = [f"a.subscription_id IN ({marks})"]
            params: list[Any] = list(sub_ids)
            if event_seq is not None:
                where.append("a.event_seq = ?")
                params.append(event_seq)
            if status is not None:
                where.append("a.status = ?")
                params.append(status)
            time_filters(where, params, "a", begin, end, cursor)
            rows += conn.execute(
                f"{ATTEMPT_SELECT} WHERE {' AND '.join(where)} ORDER BY a.created_at DESC, a.id DESC LIMIT ?",
                [*params, limit + 1]).fetchall()
        if status in (None, "pending", "sending"):
            where = [f"m.subscription_id IN ({marks})", f"m.{OPEN}"]
            params = list(sub_ids)
            if status is not None:
                where.append("m.status = ?")
                params.append(status)
            if event_seq is not None:
                where.append("m.event_seq = ?")
                params.append(event_seq)
            time_filters(where, params, "m", begin, end, cursor, column="queued_at",
                         id_expr="coalesce(m.attempt_id, 'atm_' || substr(m.id, 5))")
            rows += conn.execute(
                f"{OPEN_SELECT} WHERE {' AND '.join(where)} ORDER BY m.queued_at DESC LIMIT ?",
                [*params, limit + 1]).fetchall()
        rows.sort(key=lambda r: (r[12], r[0]), reverse=True)
        return rows[: limit + 1]
    finally:
        conn.execute("COMMIT")


def time_filters(where: list[str], params: list[Any], alias: str, begin: int | None, end: int | None,
                 cursor: tuple[int, str] | None, column: str = "created_at",
                 id_expr: str | None = None) -> None:
    col = f"{alias}.{column}"
    if begin is not None:
        where.append(f"{col} >= ?")
        params.append(begin)
    if end is not None:
        where.append(f"{col} <= ?")
        params.append(end)
    if cursor is not None:
        ident = id_expr or f"{alias}.id"
        where.append(f"({col} < ? OR ({col} = ? AND {ident} < ?))")
        params.extend((cursor[0], cursor[0], cursor[1]))
