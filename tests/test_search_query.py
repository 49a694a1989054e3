"""The §4.6 query parser (recalled_lite/search_query.py): pure, no database."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recalled_lite.search_query import (
    MAX_QUERY_CHARS,
    MAX_TERMS,
    ActionTerm,
    ActorTerm,
    OccurredTerm,
    OrgTerm,
    QueryError,
    SearchQuery,
    TargetTerm,
    TextTerm,
    parse_date_bound,
    parse_search_query,
)

DAY = 86_400_000
JAN1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
JAN31 = JAN1 + 30 * DAY


def T(text: str, **kw: bool) -> TextTerm:
    return TextTerm(text, **kw)


PARSE_CASES = [
    ("", ()),
    ("   \t\n ", ()),
    ("invoice", (T("invoice"),)),
    ("invoice  paid", (T("invoice"), T("paid"))),
    ("invo*", (T("invo", prefix=True),)),
    ("-invo*", (T("invo", prefix=True, negated=True),)),
    ('"exact phrase"', (T("exact phrase", phrase=True),)),
    ('-"exact phrase" word', (T("exact phrase", phrase=True, negated=True), T("word"))),
    ('"say \\"hi\\" \\\\ ok"', (T('say "hi" \\ ok', phrase=True),)),
    ('"C:\\temp"', (T("C:\\temp", phrase=True),)),
    ("-foo", (T("foo", negated=True),)),
    ("--foo", (T("-foo", negated=True),)),
    ("a-b", (T("a-b"),)),
    ("fo*o", (T("fo*o"),)),
    ("action:invoice.paid", (ActionTerm("invoice.paid"),)),
    ("action:invoice.*", (ActionTerm("invoice.", prefix=True),)),
    ("-action:invoice.*", (ActionTerm("invoice.", prefix=True, negated=True),)),
    ('action:"invoice.*"', (ActionTerm("invoice.*"),)),
    ("ACTION:x", (ActionTerm("x"),)),
    ("actor:user_123", (ActorTerm("user_123"),)),
    ('actor:"user 1"', (ActorTerm("user 1"),)),
    ("actor:a:b", (ActorTerm("a:b"),)),
    ("-actor:user_1", (ActorTerm("user_1", negated=True),)),
    ("org:org_acme", (OrgTerm("org_acme"),)),
    ("organization:org_acme", (OrgTerm("org_acme"),)),
    ("target:invoice:inv_42", (TargetTerm("invoice", "inv_42"),)),
    ("target:invoice", (TargetTerm("invoice"),)),
    ("target:urn:x:1", (TargetTerm("urn", "x:1"),)),
    ('target:"my type:id 1"', (TargetTerm("my type", "id 1"),)),
    ("-target:invoice", (TargetTerm("invoice", negated=True),)),
    # Unknown qualifiers are text (documented choice).
    ("foo:bar", (T("foo:bar"),)),
    ("https://example.com/x", (T("https://example.com/x"),)),
    ("09:12", (T("09:12"),)),
    # Dates: bare-date bounds cover whole UTC days.
    ("occurred:>=2026-01-01", (OccurredTerm(JAN1, None),)),
    ("occurred:>2026-01-01", (OccurredTerm(JAN1 + DAY, None),)),
    ("occurred:<=2026-01-31", (OccurredTerm(None, JAN31 + DAY - 1),)),
    ("occurred:<2026-01-31", (OccurredTerm(None, JAN31 - 1),)),
    ("occurred:2026-01-31", (OccurredTerm(JAN31, JAN31 + DAY - 1),)),
    ("occurred:=2026-01-31", (OccurredTerm(JAN31, JAN31 + DAY - 1),)),
    ("-occurred:2026-01-31", (OccurredTerm(JAN31, JAN31 + DAY - 1, negated=True),)),
    ("occurred:>=2026-01-01T00:00:00Z", (OccurredTerm(JAN1, None),)),
    ("occurred:>2026-01-01T00:00:00Z", (OccurredTerm(JAN1 + 1, None),)),
    ("occurred:<2026-01-01T00:00:00Z", (OccurredTerm(None, JAN1 - 1),)),
    ("occurred:<=2026-01-01T00:00:00.123Z", (OccurredTerm(None, JAN1 + 123),)),
    ("occurred:2026-01-01T00:00:00.123Z", (OccurredTerm(JAN1 + 123, JAN1 + 123),)),
    ("occurred:>=2026-01-01t02:00:00+02:00", (OccurredTerm(JAN1, None),)),
    ("occurred:>=2025-12-31T19:00:00-05:00", (OccurredTerm(JAN1, None),)),
    # Sub-millisecond bounds round inwards (events are stored in ms).
    ("occurred:>=2026-01-01T00:00:00.0005Z", (OccurredTerm(JAN1 + 1, None),)),
    ("occurred:>2026-01-01T00:00:00.0005Z", (OccurredTerm(JAN1 + 1, None),)),
    ("occurred:<=2026-01-01T00:00:00.0005Z", (OccurredTerm(None, JAN1),)),
    ("occurred:<2026-01-01T00:00:00.0005Z", (OccurredTerm(None, JAN1),)),
    ('occurred:">= 2026-01-01"', (OccurredTerm(JAN1, None),)),
    # Operator words and SQL are data.
    ("a AND b OR NOT c", (T("a"), T("AND"), T("b"), T("OR"), T("NOT"), T("c"))),
    ("NEAR(a b)", (T("NEAR(a"), T("b)"))),
    (
        "'; DROP TABLE events; --",
        (T("';"), T("DROP"), T("TABLE"), T("events;"), T("-", negated=True)),
    ),
    ("café 東京", (T("café"), T("東京"))),
    (
        'invoice action:invoice.* -actor:bot org:acme "was paid"',
        (
            T("invoice"),
            ActionTerm("invoice.", prefix=True),
            ActorTerm("bot", negated=True),
            OrgTerm("acme"),
            T("was paid", phrase=True),
        ),
    ),
]


@pytest.mark.parametrize("q,terms", PARSE_CASES, ids=[c[0] or "<empty>" for c in PARSE_CASES])
def test_parse(q: str, terms: tuple) -> None:
    assert parse_search_query(q) == SearchQuery(terms)


ERROR_CASES = [
    ('"abc', "unterminated quote"),
    ('foo "abc', "unterminated quote"),
    ('actor:"abc', "unterminated quote"),
    ('"a\\"', "unterminated quote"),
    ("action:", "needs a value"),
    ("action: x", "needs a value"),
    ('actor:""', "needs a value"),
    ("org:", "needs a value"),
    ("-target:", "needs a value"),
    ("target::x", "needs a type"),
    ("target:invoice:", "needs an id"),
    ("action:*", "needs a prefix"),
    ("*", "must follow a word"),
    ("-*", "must follow a word"),
    ("foo**", "must follow a word"),
    ("-", "must be followed by a term"),
    ("a - b", "must be followed by a term"),
    ('""', "empty phrase"),
    ('"a"b', "space after the closing quote"),
    ('"a""b"', "space after the closing quote"),
    ('"a"*', "not supported"),
    ('a"b', "unexpected '\"'"),
    ('abc"', "unexpected '\"'"),
    ('foo:"bar baz"', "unexpected '\"'"),
    ("occurred:>=", "needs a date"),
    ("occurred:>=2026-13-01", "invalid date"),
    ("occurred:2026-02-30", "invalid date"),
    ("occurred:2026-1-1", "invalid date or time"),
    ("occurred:yesterday", "invalid date or time"),
    ("occurred:2026-01-01T10:00:00", "invalid date or time"),  # no offset
    ("occurred:2026-01-01T10:00Z", "invalid date or time"),
    ("occurred:2026-01-01T24:00:00Z", "invalid time of day"),
    ("occurred:2026-01-01T23:59:60Z", "invalid time of day"),
    ("occurred:2026-01-01T10:00:00+24:00", "invalid UTC offset"),
    ("occurred:२०२६-01-01", "invalid date or time"),  # non-ASCII digits
    ("occurred:>>2026-01-01", "invalid date or time"),
    ("x\x00y", "control character"),
    ("x\x07", "control character"),
    ("\x7f", "control character"),
    ('"a\x00b"', "control character"),
    ("x\ud800", "surrogate"),
    ("x" * (MAX_QUERY_CHARS + 1), "longer than"),
    (" ".join(["w"] * (MAX_TERMS + 1)), "more than"),
]


@pytest.mark.parametrize("q,message", ERROR_CASES, ids=[repr(c[0][:40]) for c in ERROR_CASES])
def test_parse_errors(q: str, message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(").replace("*", r"\*")) as info:
        parse_search_query(q)
    assert isinstance(info.value, ValueError)


def test_limits_are_inclusive() -> None:
    assert len(parse_search_query(" ".join(["w"] * MAX_TERMS)).terms) == MAX_TERMS
    assert parse_search_query("x" * MAX_QUERY_CHARS).terms == (T("x" * MAX_QUERY_CHARS),)


# Hostile input: each either parses into terms or raises QueryError, nothing else.
HOSTILE = [
    '"',
    '""',
    '"""',
    '" "',
    "*",
    "**",
    "-",
    "--",
    "- -",
    "(",
    ")",
    "()",
    "(a OR b) AND NOT c",
    "NEAR(a b, 3)",
    "NEAR",
    "AND",
    "OR",
    "NOT",
    "a NOT",
    "NOT a",
    "^a",
    "a + b",
    "{a b}:c",
    "action:x OR 1=1",
    "col:val",
    "events_fts:foo",
    "rank:1",
    "'; DROP TABLE events; --",
    "\"'; DROP TABLE events; --\"",
    "1' OR '1'='1",
    "%",
    "_",
    "%_%",
    "action:%",
    "action:_*",
    "actor:'",
    "org:\\",
    "\\",
    '\\"',
    'a\\"b',
    "x\x00",
    "\x00",
    "\x1b[31mred",
    "\u202eevil",
    "\u200b",
    "\ufeff",
    "\uffff",
    "😀",
    "😀*",
    "ﷺ",
    "東京*",
    "ǅ",
    "\U0010ffff",
    "a\tb\nc\rd",
    "occurred:",
    "occurred:>=9999-12-31",
    "occurred:>9999-12-31",
    "occurred:<0001-01-01",
    "occurred:0000-01-01",
    "occurred:2026-01-01T00:00:00.1234567891Z",
    "target:::",
    "target:a:b:c",
    "-action:*",
    "a" * 2000,
    "\"a" * 600,
    " -" * 40,
    "x:" * 500,
]


@pytest.mark.parametrize("q", HOSTILE, ids=[repr(q[:30]) for q in HOSTILE])
def test_hostile_input_parses_or_raises_query_error(q: str) -> None:
    try:
        result = parse_search_query(q)
    except QueryError:
        return
    _check_invariants(result)


def _check_invariants(result: SearchQuery) -> None:
    assert isinstance(result, SearchQuery)
    assert len(result.terms) <= MAX_TERMS
    for term in result.terms:
        for value in (getattr(term, a, None) for a in ("text", "value", "actor_id", "organization", "target_type")):
            if value is not None:
                assert isinstance(value, str) and value
                assert "\x00" not in value


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_raises_query_error(q: str) -> None:
    try:
        result = parse_search_query(q)
    except QueryError:
        return
    _check_invariants(result)


_PIECES = st.sampled_from(
    ['"', "-", "*", ":", " ", "action", "actor", "org", "target", "occurred", ">=", "<", "=", "2026-01-01",
     "T10:00:00Z", "\\", "x", "é", "(", ")", "AND", "NEAR", "\x00", "\t", "'"]
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_PIECES, max_size=20).map("".join))
def test_syntax_soup_parses_or_raises_query_error(q: str) -> None:
    try:
        result = parse_search_query(q)
    except QueryError:
        return
    _check_invariants(result)


def test_non_string_is_query_error() -> None:
    with pytest.raises(QueryError):
        parse_search_query(None)  # type: ignore[arg-type]


# --- list date bounds (§4.5) --------------------------------------------------------


@pytest.mark.parametrize(
    "value,upper,expected",
    [
        ("2026-01-01", False, JAN1),
        ("2026-01-01", True, JAN1 + DAY - 1),  # date_to as a bare date includes that day
        ("2026-01-01T00:00:00Z", True, JAN1),
        ("2026-01-01T00:00:00Z", False, JAN1),
        ("2026-01-01T01:00:00+01:00", False, JAN1),
        ("2026-01-01T00:00:00.9999Z", False, JAN1 + 1000),
        ("2026-01-01T00:00:00.9999Z", True, JAN1 + 999),
        ("1969-12-31", False, -DAY),
        (" 2026-01-01 ", False, JAN1),
    ],
)
def test_parse_date_bound(value: str, upper: bool, expected: int) -> None:
    assert parse_date_bound(value, upper=upper) == expected


@pytest.mark.parametrize("value", ["", "2026", "2026-02-29", "tomorrow", "2026-01-01T00:00:00", "1" * 100])
def test_parse_date_bound_errors(value: str) -> None:
    with pytest.raises(QueryError):
        parse_date_bound(value, upper=False)
