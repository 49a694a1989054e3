"""List (§4.5) and search (§4.6) SQL against a real SQLite database with the
migrations applied, plus the opaque cursors (recalled_lite/cursors.py)."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import re
import sqlite3
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recalled_lite.cursors import (
    Cursor,
    CursorError,
    decode_cursor,
    decode_tail_cursor,
    encode_cursor,
    encode_tail_cursor,
)
from recalled_lite.search_query import (
    ActionTerm,
    ActorTerm,
    OccurredTerm,
    OrgTerm,
    QueryError,
    SearchQuery,
    TargetTerm,
    TextTerm,
    parse_search_query,
)
from recalled_lite.storage.fts import fts_columns
from recalled_lite.storage.keys import AHEAD_MS, BLOCK_SHIFT, event_keys, key
from recalled_lite.storage.sqlite.reads import list_page, search_page
from recalled_lite.storage.sqlite.store import _INSERT_KEYS, _UPSERT_BLOCK
_INSERT_AHEAD = "INSERT INTO events_ahead (seq, occurred_at) VALUES (?, ?)"
from recalled_lite.storage.sqlite.filters import (
    COLUMN_INDEX,
    EVENT_COLUMNS,
    SPARSE_MATCH_LIMIT,
    ListFilters,
    action_prefix_upper_bound,
    build_list_query,
    build_match_count_query,
    build_search_query,
    fts_match_expressions,
    plan_search_query,
    split_page,
)

MIGRATIONS = Path(__file__).resolve().parents[1] / "recalled_lite" / "storage" / "sqlite" / "migrations"
SEQ = COLUMN_INDEX["seq"]
OCC = COLUMN_INDEX["occurred_at"]
HOUR = 3_600_000
BASE = 1_767_225_600_000  # 2026-01-01T00:00:00Z


# --- database helpers -----------------------------------------------------------------


def open_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    # The schema these queries read (007 fills events_keys from events: there are none yet).
    for name in ("001_core.sql", "002_read_indexes.sql", "007_layout.sql", "009_events_ahead.sql"):
        conn.executescript((MIGRATIONS / name).read_text())
    return conn


@dataclasses.dataclass
class Ev:
    seq: int
    organization: str | None
    action: str
    actor_id: str | None
    actor_name: str | None
    actor_email: str | None
    targets: list[dict[str, str]] | None
    metadata: dict[str, Any] | None
    occurred_at: int
    received_at: int | None = None  # None: long after every occurred_at


def insert(conn: sqlite3.Connection, events: list[Ev]) -> None:
    for e in events:
        received_at = e.received_at if e.received_at is not None else BASE + 1000 * HOUR + e.seq
        targets_json = json.dumps(e.targets) if e.targets else None
        metadata_json = json.dumps(e.metadata) if e.metadata is not None else None
        conn.execute(
            "INSERT INTO events (seq, id, organization, action, actor_type, actor_id, actor_name,"
            " actor_email, targets, metadata, occurred_at, received_at, personal_digest, hash,"
            " signature) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                e.seq, f"evt_{e.seq:026d}", e.organization, e.action, "user" if e.actor_id else None,
                e.actor_id, e.actor_name, e.actor_email, targets_json, metadata_json, e.occurred_at,
                received_at, "sha256:d", "sha256:h", "hmac-sha256:s",
            ),
        )
        conn.execute(_INSERT_KEYS, (e.seq, event_keys(e.organization, e.action, e.actor_id, e.targets)))
        ahead = e.occurred_at > received_at + AHEAD_MS
        conn.execute(_UPSERT_BLOCK, (e.seq >> BLOCK_SHIFT, e.occurred_at, e.occurred_at,
                                     None if ahead else e.occurred_at))
        if ahead:
            conn.execute(_INSERT_AHEAD, (e.seq, e.occurred_at))
        conn.execute(
            "INSERT INTO events_fts (rowid, action, actor, organization, targets, metadata)"
            " VALUES (?,?,?,?,?,?)",
            (e.seq, *fts_columns(e.action, e.actor_id, e.actor_name, e.actor_email, e.organization,
                                 targets_json, metadata_json)),
        )
    conn.commit()


# --- generated data set ---------------------------------------------------------------

ORGS = ["org_a", "org_b", "org_c", None]
ACTIONS = [
    "invoice.created", "invoice.paid", "invoice.paid.late", "invoices.sync", "user.login",
    "user.logout", "user", "a%b.c", "a_b.c", "aXb.c", "café.opened", "caf\U0010ffff",
]
ACTOR_IDS = ["user_1", "user_2", "user 3", "bot", None]
TARGETS = [("invoice", "inv_1"), ("invoice", "inv_2"), ("invoice", "inv:3"), ("user", "user_1"),
           ("doc", "inv_1"), ("doc", "d%1")]
WORDS = ["alpha", "bravo", "charlie", "delta", "paid", "late", "invoice", "user-x", "a@b.c",
         "o'brien", "near", "not"]
TIMES = sorted({BASE + HOUR * k for k in range(12)} | {BASE - 40 * 24 * HOUR, BASE - 1, BASE + 1})


def generate(n: int = 300, seed: int = 7) -> list[Ev]:
    rnd = random.Random(seed)
    events = []
    for seq in range(1, n + 1):
        actor = rnd.choice(ACTOR_IDS)
        targets = None
        if rnd.random() < 0.7:
            chosen = rnd.sample(TARGETS, rnd.randint(1, 3))
            targets = [{"type": t, "id": i, **({"name": "Target " + i} if rnd.random() < 0.3 else {})}
                       for t, i in chosen]
        metadata = rnd.choice([
            None,
            {"note": " ".join(rnd.choices(WORDS, k=rnd.randint(1, 4))), "amount": rnd.randrange(100)},
            {"nested": {"list": rnd.choices(WORDS, k=2), "flag": True}},
        ])
        events.append(Ev(
            seq=seq,
            organization=rnd.choice(ORGS),
            action=rnd.choice(ACTIONS),
            actor_id=actor,
            actor_name=rnd.choice(["Ada Lovelace", "Bob Stone", None]) if actor else None,
            actor_email=rnd.choice(["ada@example.com", None]) if actor else None,
            targets=targets,
            metadata=metadata,
            # Few distinct times: many ties; random order: many back-dated events.
            occurred_at=rnd.choice(TIMES),
        ))
    return events


EVENTS = generate()
BY_SEQ = {e.seq: e for e in EVENTS}


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    conn = open_db()
    insert(conn, EVENTS)
    yield conn
    conn.close()


def newest_first(events: list[Ev]) -> list[int]:
    return [e.seq for e in sorted(events, key=lambda e: (e.occurred_at, e.seq), reverse=True)]


# --- list model + walking ---------------------------------------------------------------


def list_model(f: ListFilters, wall: str | None, events: list[Ev] | None = None) -> list[Ev]:
    out = []
    for e in EVENTS if events is None else events:
        if wall is not None and e.organization != wall:
            continue
        if f.organization is not None and e.organization != f.organization:
            continue
        if f.actor_id is not None and e.actor_id != f.actor_id:
            continue
        if f.action is not None:
            if f.action.endswith("*"):
                if not e.action.startswith(f.action[:-1]):
                    continue
            elif e.action != f.action:
                continue
        if f.target_type is not None or f.target_id is not None:
            if not any((f.target_type is None or t["type"] == f.target_type)
                       and (f.target_id is None or t["id"] == f.target_id) for t in e.targets or []):
                continue
        if f.date_from_ms is not None and e.occurred_at < f.date_from_ms:
            continue
        if f.date_to_ms is not None and e.occurred_at > f.date_to_ms:
            continue
        out.append(e)
    return out


def walk(conn: sqlite3.Connection, build: Any, limit: int, kind: str = "list") -> list[int]:
    """Every page, following cursors through their string form."""
    seen: list[int] = []
    token: str | None = None
    for _ in range(1000):
        cursor = decode_cursor(token, kind=kind) if token else None  # type: ignore[arg-type]
        sql, params = build(cursor)
        rows = conn.execute(sql, params).fetchall()
        assert len(rows) <= limit + 1
        page, more = split_page(rows, limit)
        seen.extend(r[SEQ] for r in page)
        if not more:
            return seen
        assert len(page) == limit
        token = encode_cursor(page[-1][OCC], page[-1][SEQ], kind=kind)  # type: ignore[arg-type]
    raise AssertionError("pagination did not end")


def walk_list(conn: sqlite3.Connection, f: ListFilters, wall: str | None = None) -> list[int]:
    return walk(conn, lambda c: build_list_query(dataclasses.replace(f, cursor=c), organization_wall=wall),
                f.limit)


# --- schema / columns -------------------------------------------------------------------


def test_event_columns(db: sqlite3.Connection) -> None:
    table = [r[1] for r in db.execute("PRAGMA table_info(events)")]
    assert set(EVENT_COLUMNS) <= set(table)
    assert [c for c in table if c in EVENT_COLUMNS] == list(EVENT_COLUMNS)  # table order
    sql, params = build_list_query(ListFilters(limit=1))
    row = db.execute(sql, params).fetchone()
    expected = db.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE seq = ?", (row[SEQ],)).fetchone()
    assert row == expected


def test_event_columns_match_event_record() -> None:
    from recalled_lite.storage.base import EventRecord

    assert EVENT_COLUMNS == EventRecord._fields


def test_data_set_has_ties_and_back_dated_events() -> None:
    assert len({e.occurred_at for e in EVENTS}) < len(EVENTS) / 10
    assert newest_first(EVENTS) != sorted(BY_SEQ, reverse=True)


# --- list: examples ---------------------------------------------------------------------


def test_list_all_newest_first(db: sqlite3.Connection) -> None:
    assert walk_list(db, ListFilters(limit=7)) == newest_first(EVENTS)
    assert walk_list(db, ListFilters(limit=500)) == newest_first(EVENTS)


@pytest.mark.parametrize(
    "action,expected",
    [
        ("invoice.*", {"invoice.created", "invoice.paid", "invoice.paid.late"}),
        ("invoice*", {"invoice.created", "invoice.paid", "invoice.paid.late", "invoices.sync"}),
        ("invoice.paid*", {"invoice.paid", "invoice.paid.late"}),
        ("invoice.paid", {"invoice.paid"}),
        ("user*", {"user.login", "user.logout", "user"}),
        ("user", {"user"}),
        ("a%*", {"a%b.c"}),  # LIKE metacharacters are plain characters
        ("a_*", {"a_b.c"}),
        ("a%b.c", {"a%b.c"}),
        ("caf*", {"café.opened", "caf\U0010ffff"}),
        ("caf\U0010ffff*", {"caf\U0010ffff"}),
        ("café*", {"café.opened"}),
        ("*", set(ACTIONS)),
        ("nothing*", set()),
        ("%", set()),
    ],
)
def test_list_action_filter(db: sqlite3.Connection, action: str, expected: set[str]) -> None:
    seqs = walk_list(db, ListFilters(action=action, limit=11))
    assert {BY_SEQ[s].action for s in seqs} == expected
    assert seqs == newest_first([e for e in EVENTS if e.action in expected])


def test_action_prefix_upper_bound() -> None:
    assert action_prefix_upper_bound("invoice.") == "invoice/"
    assert action_prefix_upper_bound("a\ud7ff") == "a\ue000"
    assert action_prefix_upper_bound("a\U0010ffff") == "b"
    assert action_prefix_upper_bound("\U0010ffff\U0010ffff") is None
    assert action_prefix_upper_bound("") is None


def test_list_targets(db: sqlite3.Connection) -> None:
    for target_type, target_id in [("invoice", None), (None, "inv_1"), ("doc", "inv_1"), ("invoice", "inv:3"),
                                   ("doc", "d%1"), ("doc", "d_1"), ("nope", None), (None, "nope")]:
        f = ListFilters(target_type=target_type, target_id=target_id, limit=9)
        assert walk_list(db, f) == newest_first(list_model(f, None)), (target_type, target_id)


def test_list_dates_are_inclusive(db: sqlite3.Connection) -> None:
    f = ListFilters(date_from_ms=BASE + HOUR, date_to_ms=BASE + 3 * HOUR, limit=13)
    got = walk_list(db, f)
    assert {BY_SEQ[s].occurred_at for s in got} == {BASE + HOUR, BASE + 2 * HOUR, BASE + 3 * HOUR}
    assert got == newest_first(list_model(f, None))


def test_list_organization_wall(db: sqlite3.Connection) -> None:
    got = walk_list(db, ListFilters(limit=20), wall="org_b")
    assert got and all(BY_SEQ[s].organization == "org_b" for s in got)
    assert got == newest_first([e for e in EVENTS if e.organization == "org_b"])
    # A filter for another organization cannot see past the wall.
    assert walk_list(db, ListFilters(organization="org_a", limit=20), wall="org_b") == []


def test_list_cursor_resumes_strictly_after_ties(db: sqlite3.Connection) -> None:
    order = newest_first(EVENTS)
    for i in (0, 1, 50, 149, 298):
        e = BY_SEQ[order[i]]
        sql, params = build_list_query(ListFilters(limit=5, cursor=Cursor(e.occurred_at, e.seq)))
        rows = db.execute(sql, params).fetchall()
        assert [r[SEQ] for r in rows] == order[i + 1 : i + 7]


def test_list_after_seq_tails_in_seq_order(db: sqlite3.Connection) -> None:
    sql, params = build_list_query(ListFilters(after_seq=290, limit=3))
    assert [r[SEQ] for r in db.execute(sql, params)] == [291, 292, 293, 294]
    f = ListFilters(organization="org_a", action="invoice.*", limit=4)
    got: list[int] = []
    after = 0
    while True:
        sql, params = build_list_query(dataclasses.replace(f, after_seq=after))
        page, more = split_page(db.execute(sql, params).fetchall(), f.limit)
        got.extend(r[SEQ] for r in page)
        if not more:
            break
        after = decode_tail_cursor(encode_tail_cursor(page[-1][SEQ]))
    assert got == sorted(e.seq for e in list_model(f, None))


def test_list_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_list_query(ListFilters(limit=0))
    with pytest.raises(ValueError):
        build_list_query(ListFilters(after_seq=1, cursor=Cursor(1, 1)))


def test_user_values_are_parameters_not_sql() -> None:
    evil = "x' OR '1'='1"
    sql, params = build_list_query(ListFilters(organization=evil, actor_id=evil, action=evil + "*",
                                               target_type=evil, target_id=evil))
    assert evil not in sql and "'" not in sql
    assert evil in params
    sql, params = build_search_query(parse_search_query(f'"{evil}" actor:"{evil}"'))
    assert evil not in sql and "'" not in sql


# --- list: property -----------------------------------------------------------------------

_maybe = lambda values: st.none() | st.sampled_from(values)  # noqa: E731

list_filters = st.builds(
    ListFilters,
    organization=_maybe(["org_a", "org_b", "org_c", "nope"]),
    actor_id=_maybe(["user_1", "user_2", "user 3", "bot", "nobody"]),
    action=_maybe(ACTIONS + ["invoice.*", "invoice.paid*", "inv*", "user*", "a%*", "a_*", "aX*", "*", "caf*",
                             "zzz*", "invoice.paid.late*", "a"]),
    target_type=_maybe(["invoice", "user", "doc", "nope"]),
    target_id=_maybe(["inv_1", "inv_2", "inv:3", "user_1", "d%1", "nope"]),
    date_from_ms=_maybe(TIMES + [t + 1 for t in TIMES]),
    date_to_ms=_maybe(TIMES + [t - 1 for t in TIMES]),
    limit=st.integers(1, 20),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=list_filters, wall=_maybe(["org_a", "org_b"]))
def test_list_pages_return_exactly_the_matching_events(db: sqlite3.Connection, f: ListFilters,
                                                         wall: str | None) -> None:
    got = walk_list(db, f, wall)
    assert len(got) == len(set(got))
    assert got == newest_first(list_model(f, wall))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=list_filters, start=st.integers(0, 310))
def test_tail_pages_return_exactly_the_matching_events(db: sqlite3.Connection, f: ListFilters,
                                                        start: int) -> None:
    got: list[int] = []
    after = start
    for _ in range(400):
        sql, params = build_list_query(dataclasses.replace(f, after_seq=after))
        page, more = split_page(db.execute(sql, params).fetchall(), f.limit)
        got.extend(r[SEQ] for r in page)
        if not more:
            break
        after = page[-1][SEQ]
    assert got == sorted(e.seq for e in list_model(f, None) if e.seq > start)


# --- list through events_keys (reads.list_page, what the server runs) ------------------------


def walk_pages(fetch: Any, limit: int, kind: str = "list") -> list[int]:
    """Every page of a reads.*_page function, following cursors through their string form."""
    seen: list[int] = []
    token: str | None = None
    for _ in range(6000):
        cursor = decode_cursor(token, kind=kind) if token else None  # type: ignore[arg-type]
        page, more = fetch(cursor)
        assert len(page) <= limit
        seen.extend(r.seq for r in page)
        if not more:
            return seen
        assert len(page) == limit
        token = encode_cursor(page[-1].occurred_at, page[-1].seq, kind=kind)  # type: ignore[arg-type]
    raise AssertionError("pagination did not end")


def walk_list_pages(conn: sqlite3.Connection, f: ListFilters, wall: str | None = None) -> list[int]:
    return walk_pages(lambda c: list_page(conn, dataclasses.replace(f, cursor=c), wall), f.limit)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=list_filters, wall=_maybe(["org_a", "org_b"]))
def test_keyed_list_pages_return_exactly_the_matching_events(db: sqlite3.Connection, f: ListFilters,
                                                               wall: str | None) -> None:
    got = walk_list_pages(db, f, wall)
    assert len(got) == len(set(got))
    assert got == newest_first(list_model(f, wall))


# Several blocks of seqs (keys.BLOCK_SHIFT): mostly in seq order, so the walk stops early and
# skips blocks, with back-dated events (up to 40 days) and future-dated ones (up to 10 minutes,
# more than a block; limits.max_future_seconds allows an hour) scattered through, which the
# bound must still place right.
def generate_layered(n: int, seed: int) -> list[Ev]:
    rnd = random.Random(seed)
    out = []
    for e in generate(n, seed):
        base = BASE + e.seq * 500 + rnd.randrange(200)  # ~ received order
        r = rnd.random()
        if r < 0.05:
            occurred = base - rnd.randrange(1, 40 * 24 * HOUR)
        elif r < 0.08:
            occurred = base + rnd.randrange(1, 600_000)
        elif r < 0.15:
            occurred = BASE + (e.seq // 37) * 37 * 500  # ties
        else:
            occurred = base
        out.append(dataclasses.replace(e, occurred_at=occurred, received_at=base))
    return out


LAYERED = generate_layered(5000, 11)


@pytest.fixture(scope="module")
def layered_db() -> Iterator[sqlite3.Connection]:
    conn = open_db()
    insert(conn, LAYERED)
    yield conn
    conn.close()


def test_layered_data_spans_blocks_and_is_out_of_order(layered_db: sqlite3.Connection) -> None:
    blocks = layered_db.execute("SELECT count(*), max(max_below) FROM event_blocks").fetchone()
    assert blocks[0] == 5000 // (1 << BLOCK_SHIFT) + 1
    assert newest_first(LAYERED) != sorted((e.seq for e in LAYERED), reverse=True)
    assert any(e.occurred_at > BASE + e.seq * 500 + 1000 for e in LAYERED)  # future-dated
    # Those more than a minute ahead of their arrival are listed apart (migration 009).
    ahead = {e.seq for e in LAYERED if e.occurred_at > e.received_at + AHEAD_MS}
    assert len(ahead) > 50
    assert {seq for (seq,) in layered_db.execute("SELECT seq FROM events_ahead")} == ahead


layered_times = [BASE + k * 250_000 for k in range(11)] + [BASE - 10 * 24 * HOUR]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          database=None)
@given(f=st.builds(
    ListFilters,
    organization=_maybe(["org_a", "org_b", "nope"]),
    actor_id=_maybe(["user_1", "user 3", "bot"]),
    action=_maybe(["invoice.paid", "user.login", "invoice.*", "inv*", "user*", "*"]),
    target_type=_maybe(["invoice", "doc", "nope"]),
    target_id=_maybe(["inv_1", "inv:3", "d%1"]),
    date_from_ms=_maybe(layered_times),
    date_to_ms=_maybe(layered_times),
    limit=st.sampled_from([7, 50, 200]),
), wall=_maybe(["org_a", "org_c"]))
def test_keyed_pages_over_blocks_with_back_and_future_dated_events(
        layered_db: sqlite3.Connection, f: ListFilters, wall: str | None) -> None:
    assert walk_list_pages(layered_db, f, wall) == newest_first(list_model(f, wall, LAYERED))


def test_keyed_page_stops_early_when_events_are_in_order(layered_db: sqlite3.Connection) -> None:
    """The first page of a broad filter must not read every match."""
    reads_seen: list[int] = []
    layered_db.set_trace_callback(lambda sql: reads_seen.append(1) if "events_keys MATCH" in sql else None)
    try:
        page, more = list_page(layered_db, ListFilters(organization="org_a", limit=5), None)
    finally:
        layered_db.set_trace_callback(None)
    assert more and [r.seq for r in page] == newest_first(
        [e for e in LAYERED if e.organization == "org_a"])[:5]
    rows = layered_db.execute(
        "SELECT count(*) FROM events_keys WHERE events_keys MATCH ?", (key("o", "org_a"),)).fetchone()[0]
    assert rows > 1000 and len(reads_seen) == 1


# --- query plans --------------------------------------------------------------------------


def plan(conn: sqlite3.Connection, sql: str, params: list[Any]) -> str:
    return " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


@pytest.mark.parametrize(
    "f,wanted",
    [
        (ListFilters(), "SCAN events USING INDEX events_by_time"),
        (ListFilters(cursor=Cursor(BASE, 5)), "SEARCH events USING INDEX events_by_time (occurred_at<?)"),
        (ListFilters(date_from_ms=1, date_to_ms=2), "events_by_time (occurred_at>? AND occurred_at<?)"),
        # The one-statement form of a keyed filter walks the time index and checks each row;
        # list_page answers these through events_keys (test_keyed_plan, test_keyed_pages_*).
        (ListFilters(organization="o"), "SCAN events USING INDEX events_by_time"),
        (ListFilters(organization="o", cursor=Cursor(BASE, 5)), "events_by_time (occurred_at<?)"),
        (ListFilters(organization="o", action="a.b"), "SCAN events USING INDEX events_by_time"),
        (ListFilters(actor_id="u"), "SCAN events USING INDEX events_by_time"),
        (ListFilters(target_type="invoice"), "SCAN events USING INDEX events_by_time"),
        (ListFilters(target_id="i"), "SCAN events USING INDEX events_by_time"),
        (ListFilters(after_seq=5), "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)"),
    ],
)
def test_list_query_plans_use_indexes(db: sqlite3.Connection, f: ListFilters, wanted: str) -> None:
    text = plan(db, *build_list_query(f))
    assert wanted in text, text
    assert "TEMP B-TREE" not in text, text
    assert not re.search(r"SCAN events(?! USING)", text), text


def test_search_plans(db: sqlite3.Connection) -> None:
    q = parse_search_query("alpha")
    sparse = plan(db, *build_search_query(q, match_count=3))
    assert sparse.startswith("SCAN events_fts VIRTUAL TABLE"), sparse
    dense = plan(db, *build_search_query(q, match_count=SPARSE_MATCH_LIMIT))
    assert dense.startswith("SCAN events USING INDEX events_by_time"), dense
    walled = plan(db, *build_search_query(q, organization_wall="o", match_count=SPARSE_MATCH_LIMIT))
    assert walled.startswith("SCAN events USING INDEX events_by_time"), walled


# --- search: hand-made data set with literal expectations -----------------------------------

SMALL = [
    Ev(1, "org_a", "invoice.paid", "user_1", "Ada Lovelace", None, [{"type": "invoice", "id": "inv_1"}],
       {"note": "paid in full"}, 1000),
    Ev(2, "org_a", "invoice.created", "user_2", None, None, None, {"note": "full refund pending"}, 2000),
    Ev(3, "org_b", "user.login", "user_1", None, None, None, None, 2000),
    Ev(4, None, "user.logout", None, None, None, None, {"note": "NEAR AND OR"}, 500),
    Ev(5, "org_b", "invoice.paid.late", "bot", None, None,
       [{"type": "invoice", "id": "inv_2"}, {"type": "user", "id": "user_1"}], {"note": "café crème"}, 3000),
    Ev(6, "org_a", "a%b.c", "user 3", None, None, None, {"k": ["drop table", 7]}, 3000),
]
ALL_SMALL = [6, 5, 3, 2, 1, 4]

SEARCH_CASES = [
    ("", None, ALL_SMALL),
    ("paid", None, [5, 1]),
    ("PAID", None, [5, 1]),
    ('"paid in"', None, [1]),
    ('"in paid"', None, []),
    ('"invoice paid"', None, [5, 1]),
    ("full", None, [2, 1]),
    ("full -refund", None, [1]),
    ("-full", None, [6, 5, 3, 4]),
    ("-paid -full", None, [6, 3, 4]),
    ('-"paid in"', None, [6, 5, 3, 2, 4]),
    ("ful*", None, [2, 1]),
    ("-ful*", None, [6, 5, 3, 4]),
    ("inv*", None, [5, 2, 1]),
    ("action:invoice.*", None, [5, 2, 1]),
    ("action:invoice.paid", None, [1]),
    ("action:invoice.paid*", None, [5, 1]),
    ('action:"invoice.*"', None, []),
    ("-action:invoice.*", None, [6, 3, 4]),
    ("action:a%*", None, [6]),
    ("action:a_*", None, []),
    ("actor:user_1", None, [3, 1]),
    ("-actor:user_1", None, [6, 5, 2, 4]),  # events without an actor are "not by user_1"
    ('actor:"user 3"', None, [6]),
    ("org:org_a", None, [6, 2, 1]),
    ("-org:org_a", None, [5, 3, 4]),
    ("org:org_a org:org_b", None, []),
    ("target:invoice", None, [5, 1]),
    ("target:invoice:inv_2", None, [5]),
    ("target:user:user_1", None, [5]),
    ("-target:invoice", None, [6, 3, 2, 4]),
    ("-target:invoice:inv_1", None, [6, 5, 3, 2, 4]),
    ("occurred:>=1970-01-01T00:00:02Z", None, [6, 5, 3, 2]),
    ("occurred:>1970-01-01T00:00:02Z", None, [6, 5]),
    ("occurred:<1970-01-01T00:00:01Z", None, [4]),
    ("occurred:1970-01-01T00:00:02Z", None, [3, 2]),
    ("-occurred:1970-01-01T00:00:02Z", None, [6, 5, 1, 4]),
    ("occurred:1970-01-01", None, ALL_SMALL),
    ("occurred:<=1969-12-31", None, []),
    ("user_1", None, [5, 3, 1]),
    ("ada", None, [1]),
    ("lovelace -paid", None, []),
    ("NEAR", None, [4]),
    ("AND OR", None, [4]),
    ("NEAR(and", None, [4]),  # "NEAR(and" is the phrase "near and"
    ("cafe", None, [5]),  # remove_diacritics
    ("CRÈME", None, [5]),
    ('"drop table"', None, [6]),
    ("7", None, [6]),
    ("'; DROP TABLE events; --", None, []),
    ("'; DROP TABLE", None, [6]),
    ("a%b*", None, [6]),
    (";", None, ALL_SMALL),  # punctuation-only words are not indexed: ignored
    ("-;", None, ALL_SMALL),
    ("paid org:org_b", None, [5]),
    ("paid action:invoice.* -target:user", None, [1]),
    ("paid", "org_a", [1]),
    ("-paid", "org_a", [6, 2]),
    ("", "org_b", [5, 3]),
    ("org:org_b", "org_a", []),
    ("-org:org_a", "org_a", []),
    ("nothing-here", None, []),
]


@pytest.fixture(scope="module")
def small_db() -> Iterator[sqlite3.Connection]:
    conn = open_db()
    insert(conn, SMALL)
    yield conn
    conn.close()


def search_all(conn: sqlite3.Connection, query: SearchQuery, wall: str | None, limit: int,
               mode: str) -> list[int]:
    if mode == "page":  # what the server runs: keyed qualifiers through events_keys
        return walk_pages(lambda c: search_page(conn, query, wall, limit, c), limit, kind="search")
    if mode == "walk":  # what the server runs on many matches: the block walk, never the sort
        return walk_pages(lambda c: search_page(conn, query, wall, limit, c, sparse_below=0), limit,
                          kind="search")

    def build(cursor: Cursor | None) -> tuple[str, list[Any]]:
        if mode == "planned":
            return plan_search_query(conn, query, organization_wall=wall, limit=limit, cursor=cursor)
        count = {"sparse": 0, "dense": SPARSE_MATCH_LIMIT, "unknown": None}[mode]
        return build_search_query(query, organization_wall=wall, limit=limit, cursor=cursor, match_count=count)

    return walk(conn, build, limit, kind="search")


MODES = ["planned", "sparse", "dense", "unknown", "page", "walk"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("q,wall,expected", SEARCH_CASES, ids=[f"{c[0]!r}@{c[1]}" for c in SEARCH_CASES])
def test_search(small_db: sqlite3.Connection, q: str, wall: str | None, expected: list[int], mode: str) -> None:
    query = parse_search_query(q)
    assert search_all(small_db, query, wall, 100, mode) == expected
    assert search_all(small_db, query, wall, 1, mode) == expected


def test_fts_expression_shapes() -> None:
    def expr(q: str) -> tuple[str | None, str | None]:
        return fts_match_expressions([t for t in parse_search_query(q).terms if isinstance(t, TextTerm)])

    assert expr("alpha") == ('"alpha"', None)
    assert expr("NOT OR") == ('"NOT" AND "OR"', None)
    assert expr('"say \\"hi\\""') == ('"say ""hi"""', None)
    assert expr("al* -b -c") == ('("al"*) NOT ("b" OR "c")', None)
    assert expr("-b -c*") == (None, '"b" OR "c"*')
    assert expr("; ( -)") == (None, None)
    assert expr("action:x") == (None, None)
    assert build_match_count_query(parse_search_query("-x")) is None


# --- search: generated data set against a model ---------------------------------------------


def _tokens(text: str) -> list[str]:
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return re.findall(r"[a-z0-9_\-@]+", folded.lower())


def fts_text(events: list[Ev]) -> dict[int, list[list[str]]]:
    return {e.seq: [_tokens(col) for col in fts_columns(
        e.action, e.actor_id, e.actor_name, e.actor_email, e.organization,
        json.dumps(e.targets) if e.targets else None,
        json.dumps(e.metadata) if e.metadata is not None else None)] for e in events}


FTS_TEXT = fts_text(EVENTS)


def text_matches(seq: int, term: TextTerm, texts: dict[int, list[list[str]]] = FTS_TEXT) -> bool:
    want = _tokens(term.text)
    for col in texts[seq]:
        for i in range(len(col) - len(want) + 1):
            window = col[i : i + len(want)]
            if window[:-1] == want[:-1] and (
                window[-1].startswith(want[-1]) if term.prefix else window[-1] == want[-1]
            ):
                return True
    return False


def search_model(query: SearchQuery, wall: str | None, events: list[Ev] = EVENTS,
                 texts: dict[int, list[list[str]]] = FTS_TEXT) -> list[int]:
    out = []
    for e in events:
        if wall is not None and e.organization != wall:
            continue
        ok = True
        for t in query.terms:
            if isinstance(t, TextTerm):
                if not _tokens(t.text):
                    continue  # ignored
                hit = text_matches(e.seq, t, texts)
            elif isinstance(t, ActionTerm):
                hit = e.action.startswith(t.value) if t.prefix else e.action == t.value
            elif isinstance(t, ActorTerm):
                hit = e.actor_id == t.actor_id
            elif isinstance(t, OrgTerm):
                hit = e.organization == t.organization
            elif isinstance(t, TargetTerm):
                hit = any(x["type"] == t.target_type and (t.target_id is None or x["id"] == t.target_id)
                          for x in e.targets or [])
            else:
                assert isinstance(t, OccurredTerm)
                hit = (t.start_ms is None or e.occurred_at >= t.start_ms) and (
                    t.end_ms is None or e.occurred_at <= t.end_ms)
            if hit == t.negated:
                ok = False
                break
        if ok:
            out.append(e)
    return newest_first(out)


def _iso(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


_term = st.one_of(
    st.sampled_from(WORDS + ["user_1", "ada", "lovelace", "org_a", "inv_1", "invoice", "late", "opened",
                             "cafe", "target", "a@b", "nothing", "o", "brien", "x"]),
    st.sampled_from(["al", "inv", "user", "us", "ch", "o", "lov", "a@", "in"]).map(lambda s: s + "*"),
    st.sampled_from(['"invoice paid"', '"paid late"', '"ada lovelace"', '"alpha bravo"', '"user x"',
                     '"o brien"', '"inv 3"', '"org a"', '"user_1 ada"', "invoice.paid", "a@b.c"]),
    st.sampled_from(["action:invoice.*", "action:invoice.paid", "action:user", "action:user*",
                     "action:a%*", "action:café.*", "actor:user_1", 'actor:"user 3"', "actor:bot",
                     "org:org_a", "org:org_c", "target:invoice", "target:doc:inv_1", "target:invoice:inv:3",
                     "target:user"]),
    st.tuples(st.sampled_from([">=", "<=", ">", "<", "="]), st.sampled_from(TIMES)).map(
        lambda p: f"occurred:{p[0]}{_iso(p[1])}"),
    st.just("occurred:<=2025-12-31"),
)
_query = st.lists(st.tuples(st.booleans(), _term).map(lambda p: ("-" if p[0] else "") + p[1]),
                  min_size=0, max_size=4).map(" ".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=_query, wall=_maybe(["org_a", "org_b"]), limit=st.integers(1, 20), mode=st.sampled_from(MODES))
def test_search_pages_return_exactly_the_matching_events(db: sqlite3.Connection, q: str, wall: str | None,
                                                           limit: int, mode: str) -> None:
    query = parse_search_query(q)
    got = search_all(db, query, wall, limit, mode)
    assert len(got) == len(set(got))
    assert got == search_model(query, wall), q


LAYERED_TEXT: dict[int, list[list[str]]] = {}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          database=None)
@given(q=_query, wall=_maybe(["org_a", "org_b"]), limit=st.sampled_from([7, 50]),
       mode=st.sampled_from(["page", "walk"]))
def test_search_walks_over_blocks_with_back_and_future_dated_events(
        layered_db: sqlite3.Connection, q: str, wall: str | None, limit: int, mode: str) -> None:
    # The block walk through the full-text matches (no keyed qualifier) or through the keys
    # with the text checked run by run, over blocks with back-dated and ahead events.
    LAYERED_TEXT or LAYERED_TEXT.update(fts_text(LAYERED))
    query = parse_search_query(q)
    assert search_all(layered_db, query, wall, limit, mode) == search_model(
        query, wall, LAYERED, LAYERED_TEXT), q


def test_a_dense_search_page_costs_the_same_at_four_times_the_matches() -> None:
    # "login" matches every event. Materialising the matches (the one-statement plan) costs
    # every match, so 4x the events cost ~4x; the walk through events_fts reads about a
    # block of rows whatever the size of the log. One event dated ahead still comes first.
    query = parse_search_query("login")
    walked, materialised = {}, {}
    for n in (4100, 16400):
        conn = open_db()
        events = _in_arrival_order(n, n // 2)
        insert(conn, events)
        (page, more), walked[n] = _vm_steps(conn, lambda: search_page(conn, query, None, 50, None))
        rows, materialised[n] = _vm_steps(conn, lambda: conn.execute(*build_search_query(
            query, limit=50, match_count=SPARSE_MATCH_LIMIT)).fetchall())
        assert [e.seq for e in page] == newest_first(events)[:50] == [r[SEQ] for r in rows[:50]]
        assert page[0].seq == n // 2 and more
        conn.close()
    assert materialised[16400] > 3 * materialised[4100], materialised
    assert walked[16400] < 1.3 * walked[4100], walked


def test_search_model_is_not_vacuous(db: sqlite3.Connection) -> None:
    for q in ["alpha", '"paid late"', "-alpha", "inv*", "action:invoice.* -bravo", "target:doc:inv_1 lov*"]:
        expected = search_model(parse_search_query(q), None)
        assert 0 < len(expected) < len(EVENTS), q
        assert search_all(db, parse_search_query(q), None, 17, "planned") == expected


# --- hostile queries end to end ---------------------------------------------------------------


def _hostile() -> list[str]:
    from test_search_query import ERROR_CASES, HOSTILE  # same directory

    return HOSTILE + [c[0] for c in ERROR_CASES]


def run_query(conn: sqlite3.Connection, q: str) -> None:
    """Parse + execute in every plan; the only acceptable failure is QueryError."""
    try:
        query = parse_search_query(q)
    except QueryError:
        return
    for mode in MODES:
        for wall in (None, "org_a"):
            if mode in ("page", "walk"):
                try:
                    search_page(conn, query, wall, 5, None, sparse_below=0 if mode == "walk" else SPARSE_MATCH_LIMIT)
                except QueryError:
                    pass
                continue
            if mode == "planned":
                sql, params = plan_search_query(conn, query, organization_wall=wall, limit=5)
            else:
                count = {"sparse": 0, "dense": SPARSE_MATCH_LIMIT, "unknown": None}[mode]
                sql, params = build_search_query(query, organization_wall=wall, limit=5, match_count=count)
            conn.execute(sql, params).fetchall()


@pytest.mark.parametrize("q", _hostile(), ids=lambda q: repr(q[:30]))
def test_hostile_queries_execute_or_raise_query_error(db: sqlite3.Connection, q: str) -> None:
    run_query(db, q)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=st.text(max_size=60))
def test_any_text_executes_or_raises_query_error(db: sqlite3.Connection, q: str) -> None:
    run_query(db, q)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(word=st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                                  blacklist_characters='"*-'), min_size=1, max_size=8))
def test_any_word_as_word_prefix_and_phrase(db: sqlite3.Connection, word: str) -> None:
    for q in (word, word + "*", f'"{word}"', "-" + word, f"alpha -{word}*"):
        run_query(db, q)


# --- cursors --------------------------------------------------------------------------------


@given(occurred=st.integers(-(1 << 63), (1 << 63) - 1), seq=st.integers(1, (1 << 63) - 1),
       kind=st.sampled_from(["list", "search"]))
def test_cursor_roundtrip(occurred: int, seq: int, kind: str) -> None:
    token = encode_cursor(occurred, seq, kind=kind)  # type: ignore[arg-type]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert decode_cursor(token, kind=kind) == Cursor(occurred, seq)  # type: ignore[arg-type]


@given(seq=st.integers(0, (1 << 63) - 1))
def test_tail_cursor_roundtrip(seq: int) -> None:
    assert decode_tail_cursor(encode_tail_cursor(seq)) == seq


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


GOOD = encode_cursor(BASE, 42)
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
BAD_CURSORS = [
    "",
    " ",
    "null",
    "0",
    "a",
    "abc",
    GOOD + "=",
    GOOD + "A",
    GOOD[:-1],
    GOOD.replace("-", "+").replace("_", "/") + "+/",
    "!" * 23,
    GOOD + "\x00",
    "é" * 23,
    "A" * 10_000,
    _b64(b"\x02L" + bytes(16)),  # unknown version
    _b64(b"\x01X" + bytes(16)),  # unknown kind
    _b64(b"\x01L" + bytes(16)),  # seq 0
    _b64(b"\x01L" + b"\x00" * 8 + b"\xff" * 8),  # seq > int64
    _b64(b"\x01L" + bytes(15)),
    _b64(b"\x01L" + bytes(17)),
    _b64(b"\x01T" + bytes(8)),  # a tail cursor
    encode_cursor(BASE, 42, kind="search"),  # a search cursor given to the list
]


@pytest.mark.parametrize("token", BAD_CURSORS, ids=lambda t: repr(t[:30]))
def test_bad_cursor_is_cursor_error(token: str) -> None:
    with pytest.raises(CursorError) as info:
        decode_cursor(token)
    assert isinstance(info.value, ValueError)


TAIL = encode_tail_cursor(42)


@pytest.mark.parametrize("token", [
    None, 42, b"abc", GOOD, _b64(b"\x01T" + b"\xff" * 8), "!!", TAIL + "=", TAIL[:-1],
    TAIL[:-1] + _B64_ALPHABET[_B64_ALPHABET.index(TAIL[-1]) ^ 1],  # non-zero padding bits
])
def test_bad_tail_cursor_is_cursor_error(token: Any) -> None:
    with pytest.raises(CursorError):
        decode_tail_cursor(token)


@given(st.text(max_size=40) | st.binary(max_size=30).map(_b64))
def test_any_string_decodes_or_raises_cursor_error(token: str) -> None:
    for decode in (decode_cursor, lambda t: decode_cursor(t, kind="search"), decode_tail_cursor):
        try:
            decode(token)
        except CursorError:
            pass


def test_cursor_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        encode_cursor(0, 0)
    with pytest.raises(ValueError):
        encode_cursor(1 << 63, 1)
    with pytest.raises(ValueError):
        encode_tail_cursor(-1)


def _in_arrival_order(n: int, ahead_at: int | None) -> list[Ev]:
    """`n` events of one organization, each dated when it arrived; the one at seq `ahead_at`
    dated half an hour ahead of its arrival (a client whose clock runs fast)."""
    out = []
    for seq in range(1, n + 1):
        received = BASE + seq * 100  # ten a second: 8,100 take 13.5 minutes
        occurred = received + 30 * 60_000 if seq == ahead_at else received
        out.append(Ev(seq, "org_a", "user.login", f"user_{seq % 7}", None, None, None, None,
                      occurred, received))
    return out


def _vm_steps(conn: sqlite3.Connection, fn: Callable[[], Any]) -> tuple[Any, int]:
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 100)
    try:
        return fn(), steps[0] * 100
    finally:
        conn.set_progress_handler(None, 0)


def test_an_event_dated_ahead_does_not_make_pages_read_every_later_match() -> None:
    # Before migration 009 it raised the stop bound of every later block: the first page of
    # the filter read all 8,000 matches after it instead of about one page.
    f = ListFilters(organization="org_a", limit=50)
    costs = {}
    for ahead_at in (None, 100):
        conn = open_db()
        events = _in_arrival_order(8100, ahead_at)
        insert(conn, events)
        (page, more), costs[ahead_at] = _vm_steps(conn, lambda: list_page(conn, f, None))
        assert [e.seq for e in page] == newest_first(events)[:50] and more
        if ahead_at is not None:
            assert page[0].seq == ahead_at  # it sorts first: it is dated latest
            # ...and every later page still has it exactly once.
            assert walk_list_pages(conn, f) == newest_first(events)
        conn.close()
    assert costs[100] < 3 * costs[None], costs
