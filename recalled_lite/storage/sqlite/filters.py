"""Parameterised SQL for listing (§4.5) and searching (§4.6) events.

Every user value is a bound parameter; the SQL text depends only on which
filters are present. The FTS5 MATCH expression is built only from quoted
strings (user text can never be an FTS5 operator) and is itself bound.

Order everywhere (except tailing): newest ``occurred_at`` first, ties by
``seq`` descending. Pages are keyset pages: ``(occurred_at, seq) < cursor``.
Each query fetches ``limit + 1`` rows; use ``split_page`` to cut the extra row
off and learn whether there is a next page.

Filters on organization, actor, action (with an organization) and targets are
answered through events_keys (keys.py, migration 007): ``list_filter_keys`` and
``search_filter_keys`` give the keys, and ``reads.keyed_page`` walks them newest
seq first with the predicates of ``list_where``/``search_where`` re-checking each
row. ``build_list_query`` is the one-statement form of any filter (the time index
walked newest first, each row checked); the server uses it for filters without
keys (none, dates, an action alone) and for tailing.

Search picks its plan with a capped count of full-text matches. Few matches drive the query
(look each one up, sort them). With many, ``reads.search_page`` walks either the keys of the
qualifiers or the full-text matches themselves newest seq first, the same block walk as a
keyed list (``search_walk`` gives the expression and the predicates), so that a page costs
about the rows it reads, not every match. ``build_search_query`` is the one-statement form
(``plan_search_query`` picks between its two plans): many matches are then materialised
once and the time index is walked until the page is full.
"""

from __future__ import annotations

from typing import Any, Sequence

from recalled_lite.cursors import Cursor
from recalled_lite.storage.fts import searchable as _searchable
from recalled_lite.storage.keys import filter_keys
from recalled_lite.storage.base import EventRecord
from recalled_lite.storage.filters import ListFilters
from recalled_lite.search_query import (
    ActionTerm,
    ActorTerm,
    OccurredTerm,
    OrgTerm,
    SearchQuery,
    TargetTerm,
    TextTerm,
)

__all__ = [
    "COLUMN_INDEX",
    "EVENT_COLUMNS",
    "ListFilters",
    "action_prefix_upper_bound",
    "build_list_query",
    "list_filter_keys",
    "list_where",
    "search_filter_keys",
    "search_where",
    "search_walk",
    "build_match_count_query",
    "build_search_query",
    "plan_search_query",
    "fts_match_expressions",
    "split_page",
]

# The columns every list/search query returns, in this order. It is the field
# order of storage.base.EventRecord (and store.EVENT_COLUMNS), so
# `EventRecord._make(row)` works on every row.
# The columns of an EventRecord, in its field order, so `EventRecord._make(row)` works.
EVENT_COLUMNS: tuple[str, ...] = EventRecord._fields
COLUMN_INDEX: dict[str, int] = {name: i for i, name in enumerate(EVENT_COLUMNS)}
_SELECT_COLUMNS = "SELECT " + ", ".join(f"events.{c}" for c in EVENT_COLUMNS)
_SELECT = _SELECT_COLUMNS + " FROM events"
# CROSS JOIN fixes the loop order: full-text matches outside, events looked up by seq.
_SELECT_FTS_DRIVEN = _SELECT_COLUMNS + " FROM events_fts CROSS JOIN events ON events.seq = events_fts.rowid"
_NEWEST_FIRST = " ORDER BY events.occurred_at DESC, events.seq DESC LIMIT ?"
_OLDEST_SEQ_FIRST = " ORDER BY events.seq ASC LIMIT ?"


def split_page(rows: Sequence[Any], limit: int) -> tuple[Sequence[Any], bool]:
    """(the page, whether there is a next page) from the ``limit + 1`` rows fetched."""
    return rows[:limit], len(rows) > limit


def action_prefix_upper_bound(prefix: str) -> str | None:
    """Smallest string greater than every string that starts with ``prefix``.

    SQLite compares TEXT with memcmp on UTF-8, which orders like code points,
    so ``prefix <= action < bound`` is exactly "action starts with prefix".
    None when there is no such bound (prefix of only U+10FFFF).
    """
    chars = list(prefix)
    while chars:
        cp = ord(chars.pop()) + 1
        if cp == 0xD800:  # surrogates are not valid UTF-8 text
            cp = 0xE000
        if cp <= 0x10FFFF:
            return "".join(chars) + chr(cp)
    return None


class _Where:
    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def add(self, clause: str, *params: Any) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def sql(self) -> str:
        return (" WHERE " + " AND ".join(self.clauses)) if self.clauses else ""


def _action_predicate(value: str, prefix: bool) -> tuple[str, list[Any]]:
    if not prefix:
        return "events.action = ?", [value]
    if not value:
        return "1", []
    upper = action_prefix_upper_bound(value)
    # The unary + keeps the planner from answering a prefix with a range scan
    # of an action index followed by a sort of every match: walking the time
    # index newest-first and stopping after one page is the better plan for
    # the common broad prefixes (`invoice.*`).
    if upper is None:
        return "+events.action >= ?", [value]
    return "+events.action >= ? AND +events.action < ?", [value, upper]


def _target_predicate(target_type: str | None, target_id: str | None) -> tuple[str, list[Any]]:
    """A check of the event's own targets. Never NULL, so NOT(...) is its exact complement.

    It only checks: a target filter narrows through its key in events_keys (keys.py,
    `keyed_page` in reads.py), and this re-checks what the key found.
    """
    conds, params = [], []
    if target_type is not None:
        conds.append("t.value ->> ? = ?")
        params += ["$.type", target_type]
    if target_id is not None:
        conds.append("t.value ->> ? = ?")
        params += ["$.id", target_id]
    return ("EXISTS (SELECT 1 FROM json_each(events.targets) AS t WHERE " + " AND ".join(conds) + ")",
            params)


def _keyset(where: _Where, cursor: Cursor | None) -> None:
    if cursor is not None:
        where.add("(events.occurred_at, events.seq) < (?, ?)", cursor.occurred_at_ms, cursor.seq)


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError("limit must be a positive integer")


def list_where(f: ListFilters, organization_wall: str | None = None) -> tuple[list[str], list[Any]]:
    """The predicates of a list filter (no cursor, no tailing), ANDed by the caller."""
    w = _Where()
    if organization_wall is not None:
        w.add("events.organization = ?", organization_wall)
    if f.organization is not None:
        w.add("events.organization = ?", f.organization)
    if f.actor_id is not None:
        w.add("events.actor_id = ?", f.actor_id)
    if f.action is not None:
        if f.action.endswith("*"):
            clause, params = _action_predicate(f.action[:-1], True)
        else:
            clause, params = _action_predicate(f.action, False)
        w.add(clause, *params)
    if f.target_type is not None or f.target_id is not None:
        clause, params = _target_predicate(f.target_type, f.target_id)
        w.add(clause, *params)
    if f.date_from_ms is not None:
        w.add("events.occurred_at >= ?", f.date_from_ms)
    if f.date_to_ms is not None:
        w.add("events.occurred_at <= ?", f.date_to_ms)
    return w.clauses, w.params


def list_filter_keys(f: ListFilters, organization_wall: str | None = None) -> list[str]:
    """The events_keys keys that narrow this list filter (empty: walk the time index)."""
    action = prefix = None
    if f.action is not None:
        if f.action.endswith("*"):
            prefix = f.action[:-1]
        else:
            action = f.action
    return filter_keys(organization=f.organization if f.organization is not None else organization_wall,
                       actor_id=f.actor_id, action=action, action_prefix=prefix,
                       target_type=f.target_type, target_id=f.target_id)


def build_list_query(f: ListFilters, *, organization_wall: str | None = None) -> tuple[str, list[Any]]:
    """SQL + params for one page of §4.5 (``limit + 1`` rows, EVENT_COLUMNS order), as one
    statement that walks the time index (or, tailing, the seq order).

    Filters with keys (``list_filter_keys``) are answered faster by ``reads.keyed_page``;
    this statement gives the same rows for any filter.

    ``organization_wall``: the organization the API key is bound to, if any;
    every row returned belongs to it, whatever the filters say.
    """
    _check_limit(f.limit)
    if f.after_seq is not None and f.cursor is not None:
        raise ValueError("after_seq and cursor cannot be combined")
    w = _Where()
    w.clauses, w.params = list_where(f, organization_wall)
    if f.after_seq is not None:
        w.add("events.seq > ?", f.after_seq)
        return _SELECT + w.sql() + _OLDEST_SEQ_FIRST, [*w.params, f.limit + 1]
    _keyset(w, f.cursor)
    return _SELECT + w.sql() + _NEWEST_FIRST, [*w.params, f.limit + 1]


# --- search ------------------------------------------------------------------------

def _fts_string(term: TextTerm) -> str:
    quoted = '"' + term.text.replace('"', '""') + '"'
    return quoted + "*" if term.prefix else quoted


def fts_match_expressions(terms: Sequence[TextTerm]) -> tuple[str | None, str | None]:
    """(expression rows must match, expression rows must NOT match).

    The first is ``P1 AND P2 ...`` with negated terms folded in as
    ``(P...) NOT (N1 OR N2 ...)``; the second is only set when there is no
    positive text term (FTS5 NOT is binary and cannot stand alone).
    """
    positive = [_fts_string(t) for t in terms if not t.negated and _searchable(t.text)]
    negative = [_fts_string(t) for t in terms if t.negated and _searchable(t.text)]
    neg = " OR ".join(negative) if negative else None
    if positive:
        pos = " AND ".join(positive)
        if neg is not None:
            return f"({pos}) NOT ({neg})", None
        return pos, None
    return None, neg


def _qualifier_clause(term: Any) -> tuple[str, list[Any]]:
    """The SQL for one qualifier term, negation included.

    Negations are exact complements: the positive predicates are never NULL
    (``action``, ``occurred_at`` and ``seq`` are NOT NULL), and actor and
    organization, which may be NULL, are negated with ``IS NOT`` so an event
    without an actor is "not by user_1".
    """
    if isinstance(term, ActorTerm):
        return ("events.actor_id IS NOT ?" if term.negated else "events.actor_id = ?"), [term.actor_id]
    if isinstance(term, OrgTerm):
        op = "IS NOT" if term.negated else "="
        return f"events.organization {op} ?", [term.organization]
    if isinstance(term, ActionTerm):
        clause, params = _action_predicate(term.value, term.prefix)
    elif isinstance(term, TargetTerm):
        clause, params = _target_predicate(term.target_type, term.target_id)
    elif isinstance(term, OccurredTerm):
        parts: list[str] = []
        params = []
        if term.start_ms is not None:
            parts.append("events.occurred_at >= ?")
            params.append(term.start_ms)
        if term.end_ms is not None:
            parts.append("events.occurred_at <= ?")
            params.append(term.end_ms)
        clause = " AND ".join(parts) or "1"
    else:
        raise TypeError(f"unknown search term {term!r}")
    return (f"NOT ({clause})" if term.negated else clause), params


# Below this many full-text matches the matches drive the query (look each up,
# sort them); from it on, the query walks the newest-first index and checks
# each row against the materialised matches, stopping after one page.
SPARSE_MATCH_LIMIT = 1000
_FTS_ROWIDS = "SELECT rowid FROM events_fts WHERE events_fts MATCH ?"


def build_match_count_query(query: SearchQuery) -> tuple[str, list[Any]] | None:
    """A cheap count of full-text matches, capped at ``SPARSE_MATCH_LIMIT``.

    None when the query has no positive text term (nothing to count). Run it
    and pass the number to ``build_search_query(match_count=...)``, or use
    ``plan_search_query`` which does both.
    """
    match, _ = fts_match_expressions([t for t in query.terms if isinstance(t, TextTerm)])
    if match is None:
        return None
    return (
        "SELECT count(*) FROM (SELECT 1 FROM events_fts WHERE events_fts MATCH ? LIMIT ?)",
        [match, SPARSE_MATCH_LIMIT],
    )


def search_filter_keys(query: SearchQuery, organization_wall: str | None = None) -> list[str]:
    """The events_keys keys that narrow a search: from its positive qualifiers."""
    org, actor, action, prefix, target = organization_wall, None, None, None, None
    for term in query.terms:
        if getattr(term, "negated", False):
            continue
        if isinstance(term, OrgTerm) and org is None:
            org = term.organization
        elif isinstance(term, ActorTerm) and actor is None:
            actor = term.actor_id
        elif isinstance(term, ActionTerm) and action is None and prefix is None:
            if term.prefix:
                prefix = term.value
            else:
                action = term.value
        elif isinstance(term, TargetTerm) and target is None:
            target = term
    return filter_keys(organization=org, actor_id=actor, action=action, action_prefix=prefix,
                       target_type=target.target_type if target else None,
                       target_id=target.target_id if target else None)


def search_walk(query: SearchQuery, organization_wall: str | None = None
                ) -> tuple[str | None, list[str], list[Any]]:
    """(full-text expression, predicates, params) of a search as the block walk takes it.

    The expression (``fts_match_expressions``: the positive text terms with the negated ones
    folded in) is what a row must match in events_fts; the walk drives with it or checks it
    per range of seqs, so it is not a predicate here. Without a positive text term it is None,
    and negated text stays a predicate (NOT IN), as in ``search_where``.
    """
    texts = [term for term in query.terms if isinstance(term, TextTerm)]
    match, no_match = fts_match_expressions(texts)
    w = _Where()
    if no_match is not None:
        w.add(f"events.seq NOT IN ({_FTS_ROWIDS})", no_match)
    if organization_wall is not None:
        w.add("events.organization = ?", organization_wall)
    for term in query.terms:
        if not isinstance(term, TextTerm):
            clause, params = _qualifier_clause(term)
            w.add(clause, *params)
    return match, w.clauses, w.params


def search_where(query: SearchQuery, *, organization_wall: str | None = None,
                 sparse: bool = False) -> tuple[str, list[str], list[Any]]:
    """(FROM clause, predicates, params) of a search; ``sparse``: the full-text matches drive."""
    match, clauses, params = search_walk(query, organization_wall)
    if match is None:
        return _SELECT, clauses, params
    if sparse:
        return _SELECT_FTS_DRIVEN, ["events_fts MATCH ?", *clauses], [match, *params]
    # The unary + stops the planner from driving with the matches (and then sorting all of
    # them).
    return _SELECT, [f"+events.seq IN ({_FTS_ROWIDS})", *clauses], [match, *params]


def build_search_query(
    query: SearchQuery,
    *,
    organization_wall: str | None = None,
    limit: int = 50,
    cursor: Cursor | None = None,
    match_count: int | None = None,
) -> tuple[str, list[Any]]:
    """SQL + params for one page of §4.6 search (``limit + 1`` rows, EVENT_COLUMNS order).

    All terms are ANDed. A query without terms (or whose only text terms are
    punctuation) lists every event the wall allows. Same order and cursor as
    ``build_list_query``.

    ``match_count`` (from ``build_match_count_query``) only picks the plan:
    below ``SPARSE_MATCH_LIMIT`` the full-text matches drive the query; when
    unknown or larger, the newest-first index does. Results are identical.
    """
    _check_limit(limit)
    texts = [t for t in query.terms if isinstance(t, TextTerm)]
    match, _ = fts_match_expressions(texts)
    sparse = match is not None and match_count is not None and match_count < SPARSE_MATCH_LIMIT
    source, clauses, params = search_where(query, organization_wall=organization_wall, sparse=sparse)
    w = _Where()
    w.clauses, w.params = clauses, params
    _keyset(w, cursor)
    return source + w.sql() + _NEWEST_FIRST, [*w.params, limit + 1]


def plan_search_query(
    conn: Any,
    query: SearchQuery,
    *,
    organization_wall: str | None = None,
    limit: int = 50,
    cursor: Cursor | None = None,
) -> tuple[str, list[Any]]:
    """``build_search_query`` with the plan picked by a capped match count on ``conn``."""
    count_query = build_match_count_query(query)
    match_count = conn.execute(*count_query).fetchone()[0] if count_query else None
    return build_search_query(
        query, organization_wall=organization_wall, limit=limit, cursor=cursor, match_count=match_count
    )
