"""The full-text document of an event on PostgreSQL (the `events.search` tsvector).

A first version, to be replaced by one that gives the same matches as SQLite's FTS5
tokenizer for the same query language (search_query.py).
"""

from __future__ import annotations


def search_lexemes(fts: tuple[str, str, str, str, str]) -> list[str]:
    """The lexemes of (action, actor, organization, targets, metadata), for
    `array_to_tsvector(%s::text[])`."""
    out: list[str] = []
    for column in fts:
        out += column.lower().split()
    return list(dict.fromkeys(out))
