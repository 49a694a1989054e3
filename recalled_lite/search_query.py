"""The search query language (``GET /v1/events/search?q=``), parsed into a small AST.

Pure: no SQL, no sqlite. ``storage/sqlite/filters.py`` turns the AST into SQL.

Syntax
------
A query is a list of terms separated by whitespace. Every term must match (AND);
there is no OR and no grouping. Any term may be negated with a leading ``-``.

=============================  ==========================================================
``word``                       full-text word (case-insensitive, accents ignored)
``invo*``                      full-text prefix: a single trailing ``*`` on a bare word
``"exact phrase"``             full-text phrase; ``\\"`` and ``\\\\`` escape inside quotes
``action:invoice.paid``        action, exact (case-sensitive)
``action:invoice.*``           action, prefix (trailing ``*``)
``actor:user_123``             actor id, exact
``org:org_acme``               organization, exact (``organization:`` is an alias)
``target:invoice:inv_42``      a target with that type and id (id may contain ``:``)
``target:invoice``             a target of that type
``occurred:>=2026-01-01``      time; operators ``>= <= > < =`` (``=`` when omitted);
                               a bare date or an RFC 3339 timestamp with an offset
``-term``                      negation of any of the above
=============================  ==========================================================

Choices (tested in tests/test_search_query.py):

* Qualifier names are case-insensitive. A qualifier value may be quoted:
  ``actor:"user 1"``. A quoted value is literal: ``action:"invoice.*"`` is the
  exact action ``invoice.*``, not a prefix.
* An UNKNOWN ``name:value`` is plain text, not an error: ids, URLs and times
  (``urn:x:1``, ``https://…``, ``09:12``) are common search words. The word is
  data like any other (the full-text tokenizer splits it at ``:``).
* Bare-date semantics follow the list filters (§4.5): ``occurred:<=2026-01-31``
  and ``occurred:2026-01-31`` include that whole UTC day, ``occurred:>2026-01-31``
  starts the day after, ``occurred:<2026-01-31`` ends the day before. Timestamps
  without an offset are refused (ambiguous).
* Repeated qualifiers are ANDed like everything else (``org:a org:b`` matches nothing).
* A ``"`` may only open a phrase or a qualifier value and must be closed and
  followed by whitespace or the end of the query; a ``"`` inside a bare word, an
  unterminated quote, ``""``, a lone ``-`` or ``*``, ``"phrase"*``, an empty
  qualifier value, a bad date, control characters (other than whitespace), lone
  surrogates, more than ``MAX_QUERY_CHARS`` characters or more than ``MAX_TERMS``
  terms raise ``QueryError`` (→ 400 VALIDATION_ERROR, field ``q``).
* Everything else is data. Words such as ``AND``, ``OR``, ``NOT``, ``NEAR``,
  parentheses, ``^``, ``:`` or ``+`` have no meaning here and are never passed to
  FTS5 as operators (the SQL builder quotes every text term).
* An empty (or all-whitespace) query parses to a query with no terms.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Union

__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_TERMS",
    "ActionTerm",
    "ActorTerm",
    "OccurredTerm",
    "OrgTerm",
    "QueryError",
    "SearchQuery",
    "TargetTerm",
    "Term",
    "TextTerm",
    "parse_date_bound",
    "parse_search_query",
]

MAX_QUERY_CHARS = 1024
MAX_TERMS = 32


class QueryError(ValueError):
    """The query (or a date bound) is malformed; the message says why."""


# --- AST ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextTerm:
    """Full-text: a word, a ``word*`` prefix, or a ``"phrase"``."""

    text: str
    phrase: bool = False
    prefix: bool = False
    negated: bool = False


@dataclass(frozen=True, slots=True)
class ActionTerm:
    value: str
    prefix: bool = False
    negated: bool = False


@dataclass(frozen=True, slots=True)
class ActorTerm:
    actor_id: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class OrgTerm:
    organization: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class TargetTerm:
    target_type: str
    target_id: str | None = None
    negated: bool = False


@dataclass(frozen=True, slots=True)
class OccurredTerm:
    """``start_ms <= occurred_at <= end_ms`` (both inclusive; None = unbounded)."""

    start_ms: int | None = None
    end_ms: int | None = None
    negated: bool = False


Term = Union[TextTerm, ActionTerm, ActorTerm, OrgTerm, TargetTerm, OccurredTerm]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    terms: tuple[Term, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.terms


# --- time --------------------------------------------------------------------------

_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY_MS = 86_400_000
_NS_PER_MS = 1_000_000
_TIME_HINT = "use a date (2026-01-31) or an RFC 3339 timestamp with offset (2026-01-31T09:00:00Z)"


def _day_start_ms(y: str, m: str, d: str, text: str) -> int:
    try:
        ordinal = date(int(y), int(m), int(d)).toordinal()
    except ValueError:
        raise QueryError(f"invalid date {text!r}") from None
    return (ordinal - _EPOCH_ORDINAL) * _DAY_MS


def _parse_instant_ns(text: str) -> tuple[int, int]:
    """The span ``[first_ns, last_ns]`` (ns since epoch) that ``text`` names.

    A bare date names its whole UTC day (first to last millisecond); a
    timestamp names one instant.
    """
    m = _DATE.fullmatch(text)
    if m:
        start = _day_start_ms(*m.groups(), text)
        return start * _NS_PER_MS, (start + _DAY_MS - 1) * _NS_PER_MS
    m = _DATETIME.fullmatch(text)
    if not m:
        raise QueryError(f"invalid date or time {text!r}: {_TIME_HINT}")
    y, mo, d, hh, mi, ss, frac, _z, sign, oh, om = m.groups()
    if int(hh) > 23 or int(mi) > 59 or int(ss) > 59:
        raise QueryError(f"invalid time of day in {text!r}")
    offset_min = 0
    if sign:
        if int(oh) > 23 or int(om) > 59:
            raise QueryError(f"invalid UTC offset in {text!r}")
        offset_min = (int(oh) * 60 + int(om)) * (1 if sign == "+" else -1)
    ms = _day_start_ms(y, mo, d, text) + ((int(hh) * 60 + int(mi) - offset_min) * 60 + int(ss)) * 1000
    ns = ms * _NS_PER_MS + (int(frac.ljust(9, "0")) if frac else 0)
    return ns, ns


def _floor_ms(ns: int) -> int:
    return ns // _NS_PER_MS


def _ceil_ms(ns: int) -> int:
    return -((-ns) // _NS_PER_MS)


def parse_date_bound(value: str, *, upper: bool) -> int:
    """An inclusive millisecond bound for the list filters ``date_from``/``date_to``.

    ``upper=False`` (date_from): first millisecond at or after the value.
    ``upper=True`` (date_to): last millisecond at or before it; a bare date
    therefore includes that whole UTC day. Raises ``QueryError``.
    """
    if not isinstance(value, str) or len(value) > 64:
        raise QueryError(f"invalid date or time: {_TIME_HINT}")
    first, last = _parse_instant_ns(value.strip())
    return _floor_ms(last) if upper else _ceil_ms(first)


def _occurred_term(value: str, negated: bool) -> OccurredTerm:
    for op in (">=", "<=", ">", "<", "="):
        if value.startswith(op):
            rest = value[len(op) :].strip()
            break
    else:
        op, rest = "=", value.strip()
    if not rest:
        raise QueryError("occurred: needs a date or time after the operator")
    first, last = _parse_instant_ns(rest)
    if op == ">=":
        return OccurredTerm(_ceil_ms(first), None, negated)
    if op == ">":
        return OccurredTerm(_floor_ms(last) + 1, None, negated)
    if op == "<=":
        return OccurredTerm(None, _floor_ms(last), negated)
    if op == "<":
        return OccurredTerm(None, _ceil_ms(first) - 1, negated)
    return OccurredTerm(_ceil_ms(first), _floor_ms(last), negated)


# --- parser ------------------------------------------------------------------------

_QUALIFIERS = {"action", "actor", "org", "organization", "target", "occurred"}
_QUALIFIER_NAME = re.compile(r"([A-Za-z_]+):", re.ASCII)


def _check_chars(q: str) -> None:
    for i, ch in enumerate(q):
        if ch.isspace():
            continue
        cat = unicodedata.category(ch)
        if cat == "Cc":
            raise QueryError(f"control character U+{ord(ch):04X} at position {i} is not allowed")
        if cat == "Cs":
            raise QueryError(f"invalid character (lone surrogate) at position {i}")


class _Parser:
    def __init__(self, q: str) -> None:
        self.q = q
        self.i = 0
        self.n = len(q)

    def at_boundary(self) -> bool:
        return self.i >= self.n or self.q[self.i].isspace()

    def quoted(self) -> str:
        """Read a quoted string starting at the opening quote."""
        q, start = self.q, self.i
        self.i += 1
        out: list[str] = []
        while self.i < self.n:
            ch = q[self.i]
            if ch == "\\" and self.i + 1 < self.n and q[self.i + 1] in '"\\':
                out.append(q[self.i + 1])
                self.i += 2
                continue
            if ch == '"':
                self.i += 1
                if self.i < self.n and q[self.i] == "*":
                    raise QueryError(
                        f"'*' after a quoted string (position {self.i}) is not supported; "
                        "use a bare word such as invoi*"
                    )
                if not self.at_boundary():
                    raise QueryError(f"expected a space after the closing quote at position {self.i - 1}")
                return "".join(out)
            out.append(ch)
            self.i += 1
        raise QueryError(f"unterminated quote starting at position {start}")

    def bare(self) -> str:
        start = self.i
        while not self.at_boundary():
            if self.q[self.i] == '"':
                raise QueryError(
                    f"unexpected '\"' at position {self.i}: quotes must enclose a whole phrase or value"
                )
            self.i += 1
        return self.q[start : self.i]

    def value(self, name: str) -> tuple[str, bool]:
        """A qualifier value: (text, was_quoted)."""
        if self.at_boundary():
            raise QueryError(f"{name}: needs a value")
        if self.q[self.i] == '"':
            text = self.quoted()
            quoted = True
        else:
            text = self.bare()
            quoted = False
        if not text:
            raise QueryError(f"{name}: needs a value")
        return text, quoted

    def term(self) -> Term:
        negated = False
        if self.q[self.i] == "-":
            negated = True
            self.i += 1
            if self.at_boundary():
                raise QueryError(f"'-' at position {self.i - 1} must be followed by a term")
        if self.q[self.i] == '"':
            text = self.quoted()
            if not text:
                raise QueryError("empty phrase \"\"")
            return TextTerm(text, phrase=True, negated=negated)
        m = _QUALIFIER_NAME.match(self.q, self.i)
        if m and m.group(1).lower() in _QUALIFIERS:
            name = m.group(1).lower()
            self.i = m.end()
            return self.qualifier(name, negated)
        word = self.bare()
        if word.endswith("*"):
            stem = word[:-1]
            if not stem or stem.endswith("*"):
                raise QueryError(f"{word!r}: '*' must follow a word (one trailing '*' for a prefix)")
            return TextTerm(stem, prefix=True, negated=negated)
        return TextTerm(word, negated=negated)

    def qualifier(self, name: str, negated: bool) -> Term:
        value, quoted = self.value(name)
        if name == "action":
            if not quoted and value.endswith("*"):
                stem = value[:-1]
                if not stem:
                    raise QueryError("action:* needs a prefix before '*' (e.g. action:invoice.*)")
                return ActionTerm(stem, prefix=True, negated=negated)
            return ActionTerm(value, negated=negated)
        if name == "actor":
            return ActorTerm(value, negated=negated)
        if name in ("org", "organization"):
            return OrgTerm(value, negated=negated)
        if name == "target":
            target_type, sep, target_id = value.partition(":")
            if not target_type:
                raise QueryError("target: needs a type (target:invoice or target:invoice:inv_42)")
            if sep and not target_id:
                raise QueryError(f"target:{target_type}: needs an id after ':'")
            return TargetTerm(target_type, target_id if sep else None, negated=negated)
        assert name == "occurred"
        return _occurred_term(value, negated)


def parse_search_query(q: str) -> SearchQuery:
    """Parse ``q``; raises ``QueryError`` (a ``ValueError``) for malformed input."""
    if not isinstance(q, str):
        raise QueryError("q must be a string")
    if len(q) > MAX_QUERY_CHARS:
        raise QueryError(f"query is longer than {MAX_QUERY_CHARS} characters")
    _check_chars(q)
    p = _Parser(q)
    terms: list[Term] = []
    while True:
        while p.i < p.n and q[p.i].isspace():
            p.i += 1
        if p.i >= p.n:
            break
        if len(terms) == MAX_TERMS:
            raise QueryError(f"query has more than {MAX_TERMS} terms")
        terms.append(p.term())
    return SearchQuery(tuple(terms))
