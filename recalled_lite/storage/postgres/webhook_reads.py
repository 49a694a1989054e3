"""Reads of the webhook tables on PostgreSQL (reader connections), the SQL the webhook
modules share, and the read-only figures of the console and /metrics.

Each read runs in the store's own short read transaction (store.read), so the queries of
one function see one snapshot; nothing here opens or ends a transaction.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..base import EventRecord
from ..webhook_base import AttemptRow, JobRow

# The WHERE term of the partial index webhook_messages_open, repeated so the planner
# matches the index whatever else the query says.
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
OPEN_ATTEMPT_ID = "coalesce(m.attempt_id, 'atm_' || substr(m.id, 5))"
OPEN_SELECT = (
    f"SELECT {OPEN_ATTEMPT_ID}, m.id, e.id, m.subscription_id, "
    "m.attempts + 1, m.status, m.trigger, s.url, NULL::integer, NULL::text, NULL::text, NULL::integer, "
    "m.queued_at, m.next_attempt_at, NULL::text FROM webhook_messages m "
    "LEFT JOIN events e ON e.seq = m.event_seq JOIN webhook_subscriptions s ON s.id = m.subscription_id"
)
JOB_COLUMNS = (
    "id, subscription_id, kind, status, begin_at, end_at, total, scanned, queued, skipped, "
    "error, created_at, updated_at, finished_at"
)


def select_job(conn: psycopg.Connection, job_id: str, sub_id: str | None = None) -> JobRow | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM webhook_jobs WHERE id = %s", (job_id,)).fetchone()
    if row is None or (sub_id is not None and row[1] != sub_id):
        return None
    return row


def list_jobs(conn: psycopg.Connection, sub_id: str, limit: int, before_id: str | None) -> list[JobRow]:
    if before_id is None:
        return conn.execute(f"SELECT {JOB_COLUMNS} FROM webhook_jobs WHERE subscription_id = %s "
                            "ORDER BY id DESC LIMIT %s", (sub_id, limit)).fetchall()
    return conn.execute(f"SELECT {JOB_COLUMNS} FROM webhook_jobs WHERE subscription_id = %s AND id < %s "
                        "ORDER BY id DESC LIMIT %s", (sub_id, before_id, limit)).fetchall()


def due_snapshot(conn: psycopg.Connection) -> dict[str, int]:
    return {sid: at for sid, at in conn.execute(
        "SELECT subscription_id, min(next_attempt_at) FROM webhook_messages "
        f"WHERE status = 'pending' AND {OPEN} GROUP BY subscription_id")}


def due_and_version(conn: psycopg.Connection) -> tuple[dict[str, int], int]:
    version = conn.execute("SELECT subs_version FROM webhook_state WHERE id = 1").fetchone()[0]
    return due_snapshot(conn), version


def load_for_send(conn: psycopg.Connection, message_ids: list[str], seqs: list[int], owner: str
                  ) -> tuple[set[str], dict[int, EventRecord]]:
    # Still ours: a row whose lease ran out may have been taken back and claimed by another
    # instance meanwhile, which sends it itself.
    live = {r[0] for r in conn.execute(
        "SELECT id FROM webhook_messages WHERE status = 'sending' AND lease_owner = %s AND id = ANY(%s)",
        (owner, message_ids))}
    events: dict[int, EventRecord] = {}
    if seqs:
        for row in conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = ANY(%s)",
                                (sorted(set(seqs)),)):
            events[row[0]] = EventRecord._make(row)
    return live, events


def event_visible(conn: psycopg.Connection, event_id: str, organization: str | None) -> bool:
    row = conn.execute("SELECT organization FROM events WHERE id = %s", (event_id,)).fetchone()
    return row is not None and (organization is None or row[0] == organization)


def open_attempt(conn: psycopg.Connection, message_id: str) -> AttemptRow | None:
    return conn.execute(f"{OPEN_SELECT} WHERE m.id = %s", (message_id,)).fetchone()


def list_attempts(conn: psycopg.Connection, sub_ids: list[str], event_id: str | None,
                  status: str | None, begin: int | None, end: int | None,
                  cursor: tuple[int, str] | None, limit: int) -> list[AttemptRow] | None:
    """Newest first (created_at, id). Finished attempts from webhook_attempts, plus the open
    attempt of every pending/sending message. ``limit + 1`` rows so the caller sees has_more."""
    if not sub_ids:
        return []
    event_seq = None
    if event_id is not None:
        row = conn.execute("SELECT seq FROM events WHERE id = %s", (event_id,)).fetchone()
        if row is None:
            return None
        event_seq = row[0]
    rows: list[AttemptRow] = []
    if status in (None, "success", "failed"):
        where = ["a.subscription_id = ANY(%s)"]
        params: list[Any] = [list(sub_ids)]
        if event_seq is not None:
            where.append("a.event_seq = %s")
            params.append(event_seq)
        if status is not None:
            where.append("a.status = %s")
            params.append(status)
        time_filters(where, params, "a", begin, end, cursor)
        rows += conn.execute(
            f"{ATTEMPT_SELECT} WHERE {' AND '.join(where)} ORDER BY a.created_at DESC, a.id DESC LIMIT %s",
            [*params, limit + 1]).fetchall()
    if status in (None, "pending", "sending"):
        where = ["m.subscription_id = ANY(%s)", f"m.{OPEN}"]
        params = [list(sub_ids)]
        if status is not None:
            where.append("m.status = %s")
            params.append(status)
        if event_seq is not None:
            where.append("m.event_seq = %s")
            params.append(event_seq)
        time_filters(where, params, "m", begin, end, cursor, column="queued_at", id_expr=OPEN_ATTEMPT_ID)
        rows += conn.execute(
            f"{OPEN_SELECT} WHERE {' AND '.join(where)} ORDER BY m.queued_at DESC LIMIT %s",
            [*params, limit + 1]).fetchall()
    rows.sort(key=lambda r: (r[12], r[0]), reverse=True)
    return rows[: limit + 1]


def time_filters(where: list[str], params: list[Any], alias: str, begin: int | None, end: int | None,
                 cursor: tuple[int, str] | None, column: str = "created_at",
                 id_expr: str | None = None) -> None:
    col = f"{alias}.{column}"
    if begin is not None:
        where.append(f"{col} >= %s")
        params.append(begin)
    if end is not None:
        where.append(f"{col} <= %s")
        params.append(end)
    if cursor is not None:
        # Attempt ids compare as bytes, as on SQLite (ULIDs: byte order = time order).
        ident = id_expr or f"{alias}.id"
        where.append(f'({col} < %s OR ({col} = %s AND ({ident}) COLLATE "C" < %s))')
        params.extend((cursor[0], cursor[0], cursor[1]))


# --------------------------------------------------------------------------------------------
# the console and /metrics
# --------------------------------------------------------------------------------------------


def backlog_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Open (pending or sending) deliveries per subscription, through the partial index."""
    return dict(conn.execute(
        f"SELECT subscription_id, count(*) FROM webhook_messages WHERE {OPEN} GROUP BY subscription_id"
    ).fetchall())


def webhook_counts(conn: psycopg.Connection) -> tuple[dict[str, int], dict[str, int]]:
    """(messages by status, subscriptions by state), as storage_gauges reports them."""
    deliveries = {"pending": 0, "sending": 0}
    deliveries.update(dict(conn.execute(
        f"SELECT status, count(*) FROM webhook_messages WHERE {OPEN} GROUP BY status").fetchall()))
    deliveries["failed"] = conn.execute(
        "SELECT count(*) FROM webhook_messages WHERE status = 'failed'").fetchone()[0]
    subscriptions = dict(conn.execute(
        "SELECT state, count(*) FROM webhook_subscriptions GROUP BY state").fetchall())
    return deliveries, subscriptions
