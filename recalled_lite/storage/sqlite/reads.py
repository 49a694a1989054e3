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
    _SELECT_COLUMNS,
    COLUMN_INDEX,
    EVENT_COLUMNS,
    SPARSE_MATCH_LIMIT,
    ListFilters,
    _action_predicate,
    _check_limit,
    _target_predicate,
    build_list_query,
    build_match_count_query,
    build_search_query,
    list_filter_keys,
    list_where,
    search_filter_keys,
    search_walk,
    split_page,
)
from ..keys import BLOCK_SHIFT

_make_record = EventRecord._make
_make_export = ExportRecord._make


def list_page(conn: sqlite3.Connection, filters: ListFilters,
              organization_wall: str | None) -> tuple[list[EventRecord], bool]:
    """One page of `GET /v1/events` and whether another follows."""
    keys = list_filter_keys(filters, organization_wall) if filters.after_seq is None else []
    if keys:
        _check_limit(filters.limit)
        clauses, params = list_where(filters, organization_wall)
        rows = keyed_page(conn, keys, clauses, params, filters.cursor, filters.limit,
                          filters.date_from_ms, filters.date_to_ms)
    else:
        sql, params = build_list_query(filters, organization_wall=organization_wall)
        rows = conn.execute(sql, params).fetchall()
    page, more = split_page(rows, filters.limit)
    return [_make_record(row) for row in page], more


def search_page(conn: sqlite3.Connection, query: SearchQuery, organization_wall: str | None,
                limit: int, cursor: Cursor | None, *,
                sparse_below: int = SPARSE_MATCH_LIMIT) -> tuple[list[EventRecord], bool]:
    """One page of `GET /v1/events/search`. An FTS5 complaint is a bad query (400), not a 500.

    Fewer than ``sparse_below`` full-text matches (a capped count) drive the query: each is
    looked up and they are sorted. Otherwise the page is a block walk (``walk_page``), newest
    seq first: through the qualifiers' keys when there are any, each range of seqs checked
    against the full-text matches in that range; else through the full-text matches
    themselves. A page then costs about the rows it reads, not every match of the log.
    """
    try:
        count_query = build_match_count_query(query)
        match_count = conn.execute(*count_query).fetchone()[0] if count_query else None
        sparse = match_count is not None and match_count < sparse_below
        keys = search_filter_keys(query, organization_wall)
        text, clauses, params = search_walk(query, organization_wall)
        if not sparse and keys:
            _check_limit(limit)
            rows = walk_page(conn, "events_keys", " AND ".join(keys), clauses, params, cursor,
                             limit, None, None, text=text)
        elif not sparse and text is not None:
            _check_limit(limit)
            rows = walk_page(conn, "events_fts", text, clauses, params, cursor, limit, None, None)
        else:
            sql, params = build_search_query(query, organization_wall=organization_wall, limit=limit,
                                             cursor=cursor, match_count=match_count)
            rows = conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        # The builder quotes every term, so this is not expected; if FTS5 still
        # refuses an expression, the query is at fault, not the server.
        if "fts5" in str(exc).lower():
            raise QueryError(f"the full-text index cannot run this query ({exc})") from None
        raise
    page, more = split_page(rows, limit)
    return [_make_record(row) for row in page], more


# --- filters answered through events_keys (migration 007) ----------------------------------

_SEQ = COLUMN_INDEX["seq"]
_OCC = COLUMN_INDEX["occurred_at"]
_FAR = 1 << 62
# Summary rows read per step, newest block first; a run of consecutive blocks is one query.
BLOCKS_PER_STEP = 256
# A run whose rows are also checked against full-text matches is at most this many blocks:
# the matches in its range are materialised (16,384 seqs: ~1,000 matches of a word in 6 % of
# the events), and the walk usually stops within the first run.
TEXT_BLOCKS_PER_RUN = 16
_BLOCKS = ("SELECT block, max_below FROM event_blocks WHERE min_occurred <= ? AND max_occurred >= ? "
           "ORDER BY block DESC")


def keyed_page(conn: sqlite3.Connection, keys: list[str], clauses: list[str],
               params: list[Any], cursor: Cursor | None, limit: int,
               date_from_ms: int | None, date_to_ms: int | None) -> list[tuple]:
    """Up to ``limit + 1`` rows in list order, read through the events carrying every key."""
    return walk_page(conn, "events_keys", " AND ".join(keys), clauses, params, cursor, limit,
                     date_from_ms, date_to_ms)


# A row of the walk that must also match a full-text expression: checked against the matches
# in the run's range of seqs only (TEXT_BLOCKS_PER_RUN blocks at most), never against every
# match of the log.
_TEXT_IN_RANGE = ("+events.seq IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ? "
                  "AND rowid BETWEEN ? AND ?)")
# The same check for one row (the few events dated ahead): FTS5 seeks to the rowid.
_TEXT_FOR_ROW = "EXISTS (SELECT 1 FROM events_fts WHERE events_fts MATCH ? AND rowid = events.seq)"


def walk_page(conn: sqlite3.Connection, index: str, match: str, clauses: list[str],
              params: list[Any], cursor: Cursor | None, limit: int,
              date_from_ms: int | None, date_to_ms: int | None, *,
              text: str | None = None) -> list[tuple]:
    """Up to ``limit + 1`` rows in list order (newest occurred_at first, then seq), read
    through the rows of the FTS5 table ``index`` (events_keys or events_fts, whose rowid is
    the event's seq) that match ``match``, newest seq first; with ``text``, each row must
    also match that expression in events_fts.

    Seq order is not list order (back-dated and future-dated events), so the walk cannot
    stop after ``limit + 1`` matches. It keeps the best ``limit + 1`` rows seen, and stops
    when the summary of the block it has reached (event_blocks.max_below: the latest
    occurred_at of any event at or below that block, leaving out those dated ahead of their
    arrival) is no later than the worst of them: every event not yet seen has a lower seq and
    an occurred_at no later, so it sorts after, except those dated ahead, which
    ``_merge_ahead`` adds afterwards (migration 009). Blocks that cannot hold a row the page
    wants (all too new for the cursor, or outside the dates) are skipped. ``clauses``
    (filters.py) re-check every filter on the rows themselves.
    """
    need = limit + 1
    hi = _FAR if cursor is None else cursor.occurred_at_ms
    if date_to_ms is not None:
        hi = min(hi, date_to_ms)
    lo = -_FAR if date_from_ms is None else date_from_ms
    where = [*clauses]
    args = [*params]
    if cursor is not None:
        where.append("(events.occurred_at, events.seq) < (?, ?)")
        args += [cursor.occurred_at_ms, cursor.seq]
    sql = (_SELECT_COLUMNS + f" FROM {index} CROSS JOIN events ON events.seq = {index}.rowid "
           f"WHERE {index} MATCH ? AND {index}.rowid BETWEEN ? AND ?"
           + (f" AND {_TEXT_IN_RANGE}" if text is not None else "")
           + "".join(f" AND ({c})" for c in where) + f" ORDER BY {index}.rowid DESC")
    # What the events dated ahead must match too: they are not read through ``index``.
    ahead_where, ahead_args = [*where], [*args]
    for expression in (match if index == "events_fts" else None, text):
        if expression is not None:
            ahead_where.append(_TEXT_FOR_ROW)
            ahead_args.append(expression)
    most = BLOCKS_PER_STEP if text is None else TEXT_BLOCKS_PER_RUN
    best: list[tuple[int, int, tuple]] = []  # a min-heap: best[0] is the worst row kept
    # One read transaction: the summary and the rows are the same snapshot.
    began = not conn.in_transaction
    if began:
        conn.execute("BEGIN")
    try:
        blocks = conn.execute(_BLOCKS, (hi, lo))
        pending = blocks.fetchmany(BLOCKS_PER_STEP)
        while pending:
            run = [pending[0]]
            i = 1
            while i < len(pending) and pending[i][0] == run[-1][0] - 1 and len(run) < most:
                run.append(pending[i])
                i += 1
            pending = pending[i:] or blocks.fetchmany(BLOCKS_PER_STEP)
            bound = min(run[0][1], hi)
            if bound < lo or (len(best) >= need and bound <= best[0][0]):
                break
            bounds = dict(run)
            first, last = run[-1][0] << BLOCK_SHIFT, ((run[0][0] + 1) << BLOCK_SHIFT) - 1
            in_range = [text, first, last] if text is not None else []
            rows = conn.execute(sql, [match, first, last, *in_range, *args])
            done = False
            for row in rows:
                occ, seq = row[_OCC], row[_SEQ]
                if len(best) < need:
                    heapq.heappush(best, (occ, seq, row))
                    continue
                if min(bounds[seq >> BLOCK_SHIFT], hi) <= best[0][0]:
                    done = True
                    break
                if (occ, seq) > best[0][:2]:
                    heapq.heapreplace(best, (occ, seq, row))
            rows.close()
            if done:
                break
        blocks.close()
        _merge_ahead(conn, best, need, ahead_where, ahead_args, hi, lo)
    finally:
        if began:
            conn.execute("COMMIT")
    best.sort(reverse=True)
    return [row for _, _, row in best]


# The events dated ahead of their arrival that the filter takes (migration 009), latest first.
_AHEAD = (_SELECT_COLUMNS + " FROM events_ahead CROSS JOIN events ON events.seq = events_ahead.seq "
          "WHERE events_ahead.occurred_at BETWEEN ? AND ?{where} "
          "ORDER BY events_ahead.occurred_at DESC, events_ahead.seq DESC")


def _merge_ahead(conn: sqlite3.Connection, best: list, need: int, where: list[str], args: list[Any],
                 hi: int, lo: int) -> None:
    """Merge into `best` the events dated ahead of their arrival: the blocks' bound leaves them
    out, so the walk may have stopped above them. Read latest first, and only until one sorts
    after the worst row kept (the rest sort after it too). One the walk already kept is not
    taken twice; one it dropped sorts after the worst row, so it stops this read."""
    sql = _AHEAD.format(where="".join(f" AND ({c})" for c in where))
    kept = {entry[1] for entry in best}
    rows = conn.execute(sql, [lo, hi, *args])
    try:
        for row in rows:
            occ, seq = row[_OCC], row[_SEQ]
            if seq in kept:
                continue
            if len(best) < need:
                heapq.heappush(best, (occ, seq, row))
            elif (occ, seq) > best[0][:2]:
                heapq.heapreplace(best, (occ, seq, row))
            else:
                break
    finally:
        rows.close()


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
