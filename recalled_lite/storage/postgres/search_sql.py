"""Parameterised SQL for listing (§4.5) and searching (§4.6) events on PostgreSQL.

The same rows, in the same order, as storage/sqlite/filters.py for the same filters: newest
`occurred_at` first, ties by `seq` descending, keyset pages `(occurred_at, seq) < cursor`,
`limit + 1` rows fetched (split_page cuts the extra row off). Every user value is a bound
parameter; full-text terms become a tsquery literal built from quoted lexemes only
(search_doc.py), so no user text is ever a tsquery operator.

Plans (EXPLAIN ANALYZE on 200k events, 20 organizations, 2k actors, 1% back-dated, migration
003's indexes; every page below 6 ms, most below 0.5 ms):

* no filter, dates, tailing: Index Scan (Backward) on events_by_time / the primary key,
  stopping after one page; an action alone filters the rows of that walk, as on SQLite;
* organization: events_by_org_time backwards (a prefix `invoice.*` filters its rows);
  organization + exact action: events_by_org_action_time backwards; actor:
  events_by_actor_time backwards (the cursor is part of the index condition);
* target: Bitmap Index Scan on events_keys_gin, then a top-N sort of the few matches;
* full text: common words walk events_by_time and check `search @@` per row until the page
  is full (a phrase of two common words read ~9k rows: 5 ms); rare words use a Bitmap Index
  Scan on events_search_gin and sort the matches; with an actor or organization the planner
  drives by that index instead. Every plan returns the same rows.

Text ordering never depends on the database collation: prefixes use starts_with(), equality
is byte equality, so a database created with any locale answers exactly like SQLite.
"""

from __future__ import annotations

from typing import Any, Sequence

from ...cursors import Cursor
from ...search_query import (
    ActionTerm,
    ActorTerm,
    OccurredTerm,
    OrgTerm,
    SearchQuery,
    TargetTerm,
    TextTerm,
)
from ..base import EventRecord
from ..filters import ListFilters
from ..fts import searchable
from ..keys import key
from .search_doc import quote, tokens

EVENT_COLUMNS: tuple[str, ...] = EventRecord._fields
SELECT = "SELECT " + ", ".join(f"events.{c}" for c in EVENT_COLUMNS) + " FROM events"
_NEWEST_FIRST = " ORDER BY events.occurred_at DESC, events.seq DESC LIMIT %s"
_OLDEST_SEQ_FIRST = " ORDER BY events.seq ASC LIMIT %s"


def split_page(rows: Sequence[Any], limit: int) -> tuple[Sequence[Any], bool]:
    return rows[:limit], len(rows) > limit


def check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError("limit must be a positive integer")


class Where:
    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def add(self, clause: str, *params: Any) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def sql(self) -> str:
        return (" WHERE " + " AND ".join(self.clauses)) if self.clauses else ""


def action_predicate(value: str, prefix: bool) -> tuple[str, list[Any]]:
    if not prefix:
        return "events.action = %s", [value]
    if not value:
        return "TRUE", []
    return "starts_with(events.action, %s)", [value]


def target_predicate(target_type: str | None, target_id: str | None) -> tuple[str, list[Any]]:
    """The event has a target of that type and/or id. The keys of storage/keys.py are exact
    (hex values, one per (type, id) pair of one target), and `keys` is NOT NULL, so NOT(...)
    is the exact complement, as SQLite's json_each check."""
    if target_type is not None and target_id is not None:
        k = key("ti", target_type, target_id)
    elif target_type is not None:
        k = key("t", target_type)
    else:
        assert target_id is not None
        k = key("i", target_id)
    return "events.keys @> ARRAY[%s]::text[]", [k]


def list_where(f: ListFilters, organization_wall: str | None = None) -> Where:
    """The predicates of a list or export filter (no cursor, no tailing)."""
    w = Where()
    if organization_wall is not None:
        w.add("events.organization = %s", organization_wall)
    if f.organization is not None:
        w.add("events.organization = %s", f.organization)
    if f.actor_id is not None:
        w.add("events.actor_id = %s", f.actor_id)
    if f.action is not None:
        prefix = f.action.endswith("*")
        clause, params = action_predicate(f.action[:-1] if prefix else f.action, prefix)
        w.add(clause, *params)
    if f.target_type is not None or f.target_id is not None:
        clause, params = target_predicate(f.target_type, f.target_id)
        w.add(clause, *params)
    if f.date_from_ms is not None:
        w.add("events.occurred_at >= %s", f.date_from_ms)
    if f.date_to_ms is not None:
        w.add("events.occurred_at <= %s", f.date_to_ms)
    return w


def _keyset(w: Where, cursor: Cursor | None) -> None:
    if cursor is not None:
        w.add("(events.occurred_at, events.seq) < (%s, %s)", cursor.occurred_at_ms, cursor.seq)


def build_list_query(f: ListFilters, organization_wall: str | None = None) -> tuple[str, list[Any]]:
    """One page of §4.5 (`limit + 1` rows in EventRecord order); tailing (`after_seq`)
    returns seq > after_seq in ascending seq."""
    check_limit(f.limit)
    if f.after_seq is not None and f.cursor is not None:
        raise ValueError("after_seq and cursor cannot be combined")
    w = list_where(f, organization_wall)
    if f.after_seq is not None:
        w.add("events.seq > %s", f.after_seq)
        return SELECT + w.sql() + _OLDEST_SEQ_FIRST, [*w.params, f.limit + 1]
    _keyset(w, f.cursor)
    return SELECT + w.sql() + _NEWEST_FIRST, [*w.params, f.limit + 1]


# --- search ------------------------------------------------------------------------


def _phrase(term: TextTerm) -> str | None:
    """The tsquery of one text term: its tokens as a phrase (`<->`), the last one a prefix
    for `word*`. None when the term has no token: FTS5 then has an empty phrase, which
    matches no row."""
    lexemes = [quote(t) for t in tokens(term.text)]
    if not lexemes:
        return None
    if term.prefix:
        lexemes[-1] += ":*"
    return "(" + " <-> ".join(lexemes) + ")"


def text_predicate(terms: Sequence[TextTerm]) -> tuple[str, list[Any]] | None:
    """The full-text condition of a query, FTS5's `(P1 AND P2) NOT (N1 OR N2)` (or, without a
    positive term, `NOT IN (N1 OR N2)`); None when no text term counts.

    A term FTS5 would not even see (storage.fts.searchable: punctuation only) is ignored, as
    on SQLite; a term it sees that still has no token is an empty phrase: as a positive term
    it matches nothing, as a negative one it excludes nothing."""
    positive, negative = [], []
    for term in terms:
        if not searchable(term.text):
            continue
        phrase = _phrase(term)
        if term.negated:
            if phrase is not None:
                negative.append(phrase)
        elif phrase is None:
            return "FALSE", []
        else:
            positive.append(phrase)
    neg = " | ".join(negative)
    if positive:
        q = " & ".join(positive)
        if negative:
            q += " & !(" + neg + ")"
        return "events.search @@ %s::tsquery", [q]
    if negative:
        return "NOT (events.search @@ %s::tsquery)", [neg]
    return None


def qualifier_predicate(term: Any) -> tuple[str, list[Any]]:
    """One qualifier, negation included; negations are exact complements (IS DISTINCT FROM
    for the columns that may be NULL: an event without an actor is "not by user_1")."""
    if isinstance(term, ActorTerm):
        op = "IS DISTINCT FROM" if term.negated else "="
        return f"events.actor_id {op} %s", [term.actor_id]
    if isinstance(term, OrgTerm):
        op = "IS DISTINCT FROM" if term.negated else "="
        return f"events.organization {op} %s", [term.organization]
    if isinstance(term, ActionTerm):
        clause, params = action_predicate(term.value, term.prefix)
    elif isinstance(term, TargetTerm):
        clause, params = target_predicate(term.target_type, term.target_id)
    elif isinstance(term, OccurredTerm):
        parts: list[str] = []
        params = []
        if term.start_ms is not None:
            parts.append("events.occurred_at >= %s")
            params.append(term.start_ms)
        if term.end_ms is not None:
            parts.append("events.occurred_at <= %s")
            params.append(term.end_ms)
        clause = " AND ".join(parts) or "TRUE"
    else:
        raise TypeError(f"unknown search term {term!r}")
    return (f"NOT ({clause})" if term.negated else clause), params


def build_search_query(query: SearchQuery, organization_wall: str | None, limit: int,
                       cursor: Cursor | None) -> tuple[str, list[Any]]:
    """One page of §4.6 search: every term ANDed, the list order and cursor."""
    check_limit(limit)
    w = Where()
    text = text_predicate([t for t in query.terms if isinstance(t, TextTerm)])
    if text is not None:
        w.add(text[0], *text[1])
    if organization_wall is not None:
        w.add("events.organization = %s", organization_wall)
    for term in query.terms:
        if not isinstance(term, TextTerm):
            clause, params = qualifier_predicate(term)
            w.add(clause, *params)
    _keyset(w, cursor)
    return SELECT + w.sql() + _NEWEST_FIRST, [*w.params, limit + 1]
