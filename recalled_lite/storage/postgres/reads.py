"""Read-side queries on PostgreSQL (§4.5-4.7), each `fn(conn, ...)` run by PostgresStore.read
(or .scan for exports) on a reader connection, in that read's own transaction.

Lists and search are one statement each (search_sql.py): a statement sees one snapshot, so a
page is consistent, and keyset pages over (occurred_at, seq) neither skip nor repeat a row
whatever is appended (or back-dated) between pages. Every instance assigns seq under the
chain-head row lock, so a committed seq is never overtaken by a smaller one committing later:
tailing (`after_seq`) misses nothing.
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import Any, Callable

from ...cursors import Cursor
from ...search_query import SearchQuery
from ..base import EventRecord, ExportRecord
from ..filters import ListFilters
from .retention import tombstones_between
from .search_sql import EVENT_COLUMNS, build_list_query, build_search_query, list_where, split_page

_make_record = EventRecord._make
_make_export = ExportRecord._make


def list_page(conn: Any, filters: ListFilters, organization_wall: str | None) -> tuple[list[EventRecord], bool]:
    """One page of `GET /v1/events` and whether another follows."""
    sql, params = build_list_query(filters, organization_wall)
    rows = conn.execute(sql, params).fetchall()
    page, more = split_page(rows, filters.limit)
    return [_make_record(row) for row in page], more


def search_page(conn: Any, query: SearchQuery, organization_wall: str | None, limit: int,
                cursor: Cursor | None) -> tuple[list[EventRecord], bool]:
    """One page of `GET /v1/events/search`."""
    sql, params = build_search_query(query, organization_wall, limit, cursor)
    rows = conn.execute(sql, params).fetchall()
    page, more = split_page(rows, limit)
    return [_make_record(row) for row in page], more


def chain_head(conn: Any) -> tuple[int, str | None]:
    """(seq, hash) of the newest committed event; (0, None) for an empty log."""
    row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, None)


def events_per_organization(conn: Any, since_ms: int, excluded_prefix: str) -> dict[str, int]:
    # left(), like SQLite's substr(action, 1, n): counts characters, and an empty prefix
    # excludes every action on both backends.
    rows = conn.execute(
        "SELECT coalesce(organization, ''), count(*) FROM events WHERE received_at >= %s "
        "AND left(action, %s) <> %s GROUP BY 1",
        (since_ms, len(excluded_prefix), excluded_prefix),
    ).fetchall()
    return {org: n for org, n in rows}


# --- exports -----------------------------------------------------------------------

EXPORT_WINDOW = 1000  # seqs per call: at most this many rows are held at once
_EXPORT_SELECT = (
    "SELECT " + ", ".join(f"events.{c}" for c in EVENT_COLUMNS)
    + ", events.personal_salt, events.personal_digest, events.erased_at FROM events"
)


def export_chunk(conn: Any, filters: ListFilters, organization_wall: str | None, after_seq: int,
                 upto_seq: int, render: Callable[[list[ExportRecord]], Any],
                 window: int = EXPORT_WINDOW) -> tuple[Any, int | None]:
    """Events with after_seq < seq <= min(after_seq + window, upto_seq), ascending, rendered
    here on the reader thread; returns (render(rows), the next after_seq or None at the end).

    The rows stream through a server-side (named) cursor: the window's rows are fetched in
    batches, never as one result set the server must buffer. The seq range drives the plan
    (primary key), so each call costs its window whatever the filters.
    """
    high = min(after_seq + window, upto_seq)
    w = list_where(replace(filters, cursor=None, after_seq=None), organization_wall)
    whole_log = not w.clauses
    w.clauses[:0] = ["events.seq > %s", "events.seq <= %s"]
    w.params[:0] = [after_seq, high]
    sql = f"{_EXPORT_SELECT}{w.sql()} ORDER BY events.seq"
    rows: list[Any] = []
    with conn.cursor(name="recalled_export") as cur:
        cur.itersize = 250
        cur.execute(sql, w.params)
        for row in cur:
            rows.append(_make_export(row))
    if whole_log:
        # A whole-log export carries a tombstone per purged seq, in its place, so an offline
        # verifier can follow the chain and rebuild the Merkle root across purges.
        stones = list(tombstones_between(conn, after_seq + 1, high))
        if stones:
            rows = list(heapq.merge(rows, stones, key=lambda r: r[0]))
    return render(rows), (high if high < upto_seq else None)
