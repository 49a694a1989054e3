"""The full-text document of an event on PostgreSQL (the `events.search` tsvector), built so
that the same query (search_query.py) matches the same events as SQLite's FTS5 index.

SQLite indexes five columns (storage/fts.py) with `unicode61 remove_diacritics 2 tokenchars
'_-@'`; the search quotes every term, so a term matches in any column, and a quoted string of
several tokens (a phrase, or a word such as `inv_42.paid`) must match consecutive tokens of
ONE column. Here:

* `tokens(text)` is that tokenizer, code point for code point (fts5_chars.py holds its
  table; tests/test_pg_search_parity.py checks it against SQLite);
* the document is a tsvector literal with positions: the columns' tokens are numbered in
  order, with a gap of one position between columns, so a phrase (`<->` in tsquery) cannot
  run from one column into the next, exactly like FTS5;
* lexemes are the tokens as they are; the tsvector/tsquery literals are cast, never parsed by
  a text search configuration, so PostgreSQL applies no stemming, stop words or folding of
  its own.

What PostgreSQL cannot hold is stated, not hidden: a tsvector keeps at most 256 positions
per lexeme and clamps positions above 16383, so a phrase is exact within the first 16383
tokens of an event and the first 256 occurrences of a word (the default 32 KiB metadata
limit, config.py, keeps nearly every event below both). A token longer than PostgreSQL's 2046-byte lexeme limit is
stored and searched as `#` + its SHA-256 (`#` is never part of a token): exact matches still
work; a prefix search cannot reach into such a token.
"""

from __future__ import annotations

import hashlib
import re

from .fts5_chars import FOLDS, SEPARATORS

MAX_POSITION = 16383
_MAX_LEXEME_BYTES = 2046


def _translation() -> dict[int, str]:
    table: dict[int, str] = {}
    for item in " ".join(SEPARATORS).split():
        first, _, last = item.partition("-")
        for cp in range(int(first, 16), int(last or first, 16) + 1):
            table[cp] = " "
    for item in " ".join(FOLDS).split():
        source, _, target = item.partition(":")
        table[int(source, 16)] = chr(int(target, 16)) if target else ""
    return table


_TABLE = _translation()


# ASCII text (most of it) takes a regular expression: there unicode61 keeps letters, digits and
# the tokenchars '_-@', and folds only the case.
_ASCII_TOKENS = re.compile(r"[a-z0-9_@-]+")


def tokens(text: str) -> list[str]:
    """The tokens FTS5's unicode61 (remove_diacritics 2, tokenchars '_-@') makes of `text`."""
    if text.isascii():
        found = _ASCII_TOKENS.findall(text.lower())
    else:
        found = [t for t in text.translate(_TABLE).split(" ") if t]
    if len(text) * 4 > _MAX_LEXEME_BYTES:
        return [_lexeme(t) for t in found]
    return found


def _lexeme(token: str) -> str:
    if len(token) * 4 <= _MAX_LEXEME_BYTES or len(token.encode("utf-8", "surrogatepass")) <= _MAX_LEXEME_BYTES:
        return token
    return "#" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def quote(lexeme: str) -> str:
    """A lexeme as a tsvector/tsquery literal: quoted, with ' doubled and \\ escaped."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def search_document(fts: tuple[str, str, str, str, str]) -> str:
    """The `events.search` value of (action, actor, organization, targets, metadata), as a
    tsvector literal for `%s::tsvector`. On the writer's path for every event: kept lean."""
    positions: dict[str, list[int]] = {}
    position = 0
    for column in fts:
        for lexeme in tokens(column):
            position += 1
            at = positions.get(lexeme)
            if at is None:
                positions[lexeme] = [position]
            elif len(at) < 256:
                at.append(position)
        position += 1  # the gap: no phrase spans two columns
    if position > MAX_POSITION:  # PostgreSQL clamps; equal positions are written once
        for lexeme, at in positions.items():
            positions[lexeme] = list(dict.fromkeys(min(p, MAX_POSITION) for p in at))
    # No token holds ' or \\ (both separate tokens), so lexemes need no escaping here.
    return " ".join([f"'{lexeme}':{at[0]}" if len(at) == 1 else f"'{lexeme}':{','.join(map(str, at))}"
                     for lexeme, at in positions.items()])
