"""One op's failure fails only that op (writer.py): constraint failures in a plain op, in the
batched intake executemany and in an intake hook roll back that op's savepoint; only a failure of
the database itself abandons the group. Groups are built deterministically with the writer's
own `_run_group`, on a real SQLite file; the constraint failures are SQLite's own."""

from __future__ import annotations

import sqlite3

import msgspec
import pytest

from recalled_lite.auth import new_key_record
from recalled_lite.config import EventsConfig
from recalled_lite.errors import ConfigError, StorageError, StorageUnavailable
from recalled_lite.intake import prepare_event
from recalled_lite.schemas import EventIn
from recalled_lite.storage.sqlite.store import AppendEvents, CallOp, SqliteStore

_, KEY = new_key_record("k", frozenset({"admin"}), None)
POISON = "poison.pill"


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "w.db", secret=b"s" * 64)
    # A real constraint inside the intake batch's INSERT: SQLite raises IntegrityError
    # (SQLITE_CONSTRAINT_TRIGGER) for this one action, from inside executemany.
    s._conn.execute(f"CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.action = '{POISON}' "
                    "BEGIN SELECT RAISE(ABORT, 'poisoned event'); END")
    yield s
    s.close()


def op(action: str, key: str | None = None, **fields) -> AppendEvents:
    event = msgspec.convert({"action": action, "idempotency_key": key, **fields}, EventIn)
    return AppendEvents([prepare_event(event, KEY, EventsConfig(), 1_800_000_000_000)])


def run_group(store, ops):
    return [(result, error) for _, result, error in store.writer._run_group([(o, None) for o in ops])]


def stored_actions(store) -> list[str]:
    return [a for (a,) in store._conn.execute("SELECT action FROM events ORDER BY seq")]


def test_a_constraint_failure_in_the_intake_batch_fails_only_its_op(store):
    outcomes = run_group(store, [
        op("before", "k1"), op(POISON), op("after"),
        op("before", "k1"),      # a repeat of the first op's key, resolved after the fallback
        op(POISON, "k2"), op("last"),
    ])
    ok = [i for i, (_, error) in enumerate(outcomes) if error is None]
    assert ok == [0, 2, 3, 5]
    for i in (1, 4):
        error = outcomes[i][1]
        assert isinstance(error, StorageError) and not isinstance(error, StorageUnavailable)
        assert "poisoned event" in str(error)
    first = outcomes[0][0][0]
    assert outcomes[3][0][0].deduplicated is True and outcomes[3][0][0].event == first.event
    assert [outcomes[i][0][0].event.seq for i in (0, 2, 5)] == [1, 2, 3]
    assert stored_actions(store) == ["before", "after", "last"]
    assert store.verify_chain_sync() == {"valid": True, "checked": 3, "head": {
        "seq": 3, "hash": outcomes[5][0][0].event.hash}, "firstInvalid": None}
    # The in-memory head followed only what was committed: the next event chains on.
    (nxt,) = run_group(store, [op("next")])
    assert nxt[0][0].event.seq == 4 and nxt[0][0].event.prev_hash == outcomes[5][0][0].event.hash


def test_a_constraint_failure_in_a_plain_op_fails_only_that_op(store):
    def duplicate_meta(conn):
        conn.execute("INSERT INTO meta (key, value) VALUES ('isolation', 'x')")
        conn.execute("INSERT INTO meta (key, value) VALUES ('project_id', 'clash')")  # PRIMARY KEY

    def fine(conn):
        conn.execute("INSERT INTO meta (key, value) VALUES ('fine', 'y')")
        return "done"

    outcomes = run_group(store, [op("a"), CallOp(duplicate_meta), CallOp(fine), op("b")])
    assert outcomes[0][1] is None and outcomes[3][1] is None
    assert isinstance(outcomes[1][1], StorageError) and "UNIQUE constraint failed" in str(outcomes[1][1])
    assert outcomes[2] == ("done", None)
    meta = dict(store._conn.execute("SELECT key, value FROM meta"))
    assert "isolation" not in meta and meta["fine"] == "y" and meta["project_id"] != "clash"
    assert stored_actions(store) == ["a", "b"]
    assert store.verify_chain_sync()["valid"] is True


def test_a_failing_intake_hook_fails_only_its_op_and_its_in_memory_effects_are_rewound(store):
    # An intake hook (the webhook outbox is one) that hits a real constraint for one event,
    # after noting a hand-off in memory, as the webhook hook does before its INSERT.
    store._conn.execute("CREATE TABLE outbox (event_action TEXT PRIMARY KEY)")
    store._conn.execute("INSERT INTO outbox VALUES ('taken')")
    handed: list[str] = []

    def hook(conn, records):
        for record in records:
            handed.append(record.action)
            conn.execute("INSERT INTO outbox VALUES (?)", (record.action,))

    store.add_intake_hook(hook)
    store.writer.savepoint_listeners.append((lambda: len(handed), lambda n: handed.__delitem__(slice(n, None))))
    outcomes = run_group(store, [op("one"), op("taken"), op("two")])
    assert [error is None for _, error in outcomes] == [True, False, True]
    assert "UNIQUE constraint failed: outbox.event_action" in str(outcomes[1][1])
    assert handed == ["one", "two"]  # the rolled-back op's hand-off was undone
    assert stored_actions(store) == ["one", "two"]
    assert [a for (a,) in store._conn.execute("SELECT event_action FROM outbox ORDER BY 1")] == \
        ["one", "taken", "two"]
    assert store.verify_chain_sync()["valid"] is True


def test_a_full_database_abandons_the_whole_group(tmp_path):
    s = SqliteStore(tmp_path / "full.db", secret=b"s" * 64)
    run_group(s, [op("seed")])
    pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
    s._conn.execute(f"PRAGMA max_page_count={pages + 2}")
    try:
        pad = {"pad": "x" * 30_000}
        big = AppendEvents([op("big", metadata=pad).events[0] for _ in range(20)])
        outcomes = run_group(s, [op("small"), big, op("small2")])
        assert all(isinstance(error, StorageUnavailable) for _, error in outcomes)
        assert "disk is full" in str(outcomes[0][1])
        assert stored_actions(s) == ["seed"]  # nothing of the group was committed
        s._conn.execute("PRAGMA max_page_count=0")
        (after,) = run_group(s, [op("after")])
        assert after[0][0].event.seq == 2  # the head was reloaded from disk
        assert s.verify_chain_sync()["valid"] is True
    finally:
        s.close()


def test_a_schema_with_deferred_constraints_is_refused(tmp_path):
    # SQLite checks only deferred foreign keys at COMMIT, where one op's violation would
    # fail its whole group; the schema has none, and the store refuses one that does.
    path = tmp_path / "deferred.db"
    SqliteStore(path, secret=b"s" * 64).close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE sql LIKE '%DEFERR%'").fetchone()[0] == 0
    conn.execute("CREATE TABLE notes (event_seq INTEGER REFERENCES events (seq) "
                 "DEFERRABLE INITIALLY DEFERRED)")
    conn.close()
    with pytest.raises(ConfigError, match="deferred constraints"):
        SqliteStore(path, secret=b"s" * 64)
