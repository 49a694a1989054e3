"""Read-side queries (§4.5-4.7), each run on a read-only connection by `SqliteStore.read`.

List and search pages use the SQL of filters.py. Exports walk the log in
ascending seq, one window of seqs per call, so each call is a short read and
the whole export costs one pass over the table whatever the filters (an
index-driven plan would re-sort every match of, say, a large organization for
every chunk).
"""

from __future__ import annotations

import heapq

import sqlite3
from dataclasses import replace
from typing import Any, Callable

from ...cursors import Cursor
from ...search_query import QueryError, SearchQuery
from ..base import EventRecord, ExportRecord
from .retention import tombstones_between
from .filters import (
    EVENT_COLUMNS,
    ListFilters,
    _action_predicate,
    _target_predicate,
    build_list_query,
    plan_search_query,
    split_page,
)

_make_record = EventRecord._make
_make_export = ExportRecord._make


def list_page(conn: sqlite3.Connection, filters: ListFilters,
              organization_wall: str | None) -> tuple[list[EventRecord], bool]:
    """One page of `GET /v1/events` and whether another follows."""
    sql, params = build_list_query(filters, organization_wall=organization_wall)
    rows = conn.execute(sql, params).fetchall()
    page, more = split_page(rows, filters.limit)
    return [_make_record(row) for row in page], more


def search_page(conn: sqlite3.Connection, query: SearchQuery, organization_wall: str | None,
                limit: int, cursor: Cursor | None) -> tuple[list[EventRecord], bool]:
    """One page of `GET /v1/events/search`. An FTS5 complaint is a bad query (400), not a 500."""
    try:
        sql, params = plan_search_query(conn, query, organization_wall=organization_wall,
                                        limit=limit, cursor=cursor)
        rows = conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        # The builder quotes every term, so this is not expected; if FTS5 still
        # refuses an expression, the query is at fault, not the server.
        if "fts5" in str(exc).lower():
            raise QueryError(f"the full-text index cannot run this query ({exc})") from None
        raise
    page, more = split_page(rows, limit)
    return [_make_record(row) for row in page], more


def chain_head(conn: sqlite3.Connection) -> tuple[int, str | None]:
    """(seq, hash) of the newest committed event; (0, None) for an empty log."""
    row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, None)


def events_per_organization(conn: sqlite3.Connection, since_ms: int, excluded_prefix: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT coalesce(organization, ''), count(*) FROM events WHERE received_at >= ? "
        "AND substr(action, 1, ?) != ? GROUP BY 1",
        (since_ms, len(excluded_prefix), excluded_prefix),
    ).fetchall()
    return {org: n for org, n in rows}


# --- exports -----------------------------------------------------------------------

EXPORT_WINDOW = 1000  # seqs per call: at most this many rows are held at once
_EXPORT_SELECT = (
    "SELECT " + ", ".join(f"events.{c}" for c in EVENT_COLUMNS)
    + ", events.personal_salt, events.personal_digest, events.erased_at FROM events"
)


def _export_where(filters: ListFilters, organization_wall: str | None) -> tuple[list[str], list[Any]]:
    """The filter predicates, written so that only the seq range can drive the plan.

    The unary `+` keeps the planner off the organization/actor/time indexes:
    each call then reads exactly its window of seqs in order, with no sort.
    """
    clauses: list[str] = []
    params: list[Any] = []
    if organization_wall is not None:
        clauses.append("+events.organization = ?")
        params.append(organization_wall)
    if filters.organization is not None:
        clauses.append("+events.organization = ?")
        params.append(filters.organization)
    if filters.actor_id is not None:
        clauses.append("+events.actor_id = ?")
        params.append(filters.actor_id)
    if filters.action is not None:
        prefix = filters.action.endswith("*")
        clause, extra = _action_predicate(filters.action[:-1] if prefix else filters.action, prefix)
        clauses.append(clause.replace("events.action", "+events.action").replace("++", "+"))
        params.extend(extra)
    if filters.target_type is not None or filters.target_id is not None:
        clause, extra = _target_predicate(filters.target_type, filters.target_id)
        clauses.append(clause)
        params.extend(extra)
    if filters.date_from_ms is not None:
        clauses.append("+events.occurred_at >= ?")
        params.append(filters.date_from_ms)
    if filters.date_to_ms is not None:
        clauses.append("+events.occurred_at <= ?")
        params.append(filters.date_to_ms)
    return clauses, params


def export_chunk(conn: sqlite3.Connection, filters: ListFilters, organization_wall: str | None,
                 after_seq: int, upto_seq: int, render: Callable[[list[ExportRecord]], Any],
                 window: int = EXPORT_WINDOW) -> tuple[Any, int | None]:
    """Events with after_seq < seq <= min(after_seq + window, upto_seq), ascending, rendered.

    Returns (render(rows), the after_seq of the next call, or None when upto_seq is reached).
    `render` runs here, on the reader thread, so the event loop only moves bytes.
    """
    high = min(after_seq + window, upto_seq)
    clauses, params = _export_where(replace(filters, cursor=None, after_seq=None), organization_wall)
    whole_log = not clauses
    clauses[:0] = ["events.seq > ?", "events.seq <= ?"]
    params[:0] = [after_seq, high]
    sql = f"{_EXPORT_SELECT} WHERE {' AND '.join(clauses)} ORDER BY events.seq"
    rows: list[Any] = [_make_export(row) for row in conn.execute(sql, params)]
    if whole_log:
        # An export of the whole log carries a tombstone per purged seq, in its place, so an
        # offline verifier can follow the chain and rebuild the Merkle root across purges.
        stones = list(tombstones_between(conn, after_seq + 1, high))
        if stones:
            rows = list(heapq.merge(rows, stones, key=lambda r: r[0]))
    return render(rows), (high if high < upto_seq else None)
