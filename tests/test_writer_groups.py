"""The writer applies a group's intake requests together; idempotency must hold inside a group."""

from __future__ import annotations

import msgspec
import pytest

from recalled_lite.auth import new_key_record
from recalled_lite.config import EventsConfig
from recalled_lite.intake import prepare_event
from recalled_lite.schemas import EventIn
from recalled_lite.storage.base import AppendResult, IdempotencyKeyReused
from recalled_lite.storage.sqlite.store import AppendEvents, CallOp, SqliteStore


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "w.db", secret=b"s" * 64)
    yield s
    s.close()


_, KEY = new_key_record("k", frozenset({"admin"}), None)


def op(action: str, key: str | None = None, org: str | None = None) -> AppendEvents:
    event = msgspec.convert({"action": action, "idempotency_key": key, "organization": org}, EventIn)
    return AppendEvents([prepare_event(event, KEY, EventsConfig(), 1_800_000_000_000)])


def run_group(store, ops):
    return [(result, error) for _, result, error in store.writer._run_group([(o, None) for o in ops])]


def test_repeats_and_conflicts_inside_one_group(store):
    existing = run_group(store, [op("stored", "k-old")])[0][0][0].event
    outcomes = run_group(store, [
        op("a", "k1"),            # fresh
        op("a", "k1"),            # repeat of the previous request, same group
        op("b", "k1"),            # conflict with a not-yet-numbered event
        op("c"),                  # fresh, no key
        op("other", "k-old"),     # conflict with a stored event
        op("stored", "k-old"),    # repeat of a stored event
        op("a", "k1", org="o2"),  # same key, other organization: fresh
    ])
    first = outcomes[0][0][0]
    assert first.deduplicated is False
    assert outcomes[1][0][0] == AppendResult(first.event, True)
    assert isinstance(outcomes[2][1], IdempotencyKeyReused) and outcomes[2][1].event_id == first.event.id
    assert outcomes[3][0][0].deduplicated is False
    assert isinstance(outcomes[4][1], IdempotencyKeyReused) and outcomes[4][1].event_id == existing.id
    assert outcomes[5][0][0] == AppendResult(existing, True)
    assert outcomes[6][0][0].event.organization == "o2" and outcomes[6][0][0].deduplicated is False
    # Exactly three new rows, numbered in request order, chained.
    seqs = [outcomes[i][0][0].event.seq for i in (0, 3, 6)]
    assert seqs == [2, 3, 4]
    assert store.verify_chain_sync()["valid"] is True
    assert store.verify_chain_sync()["checked"] == 4


def test_plain_ops_between_intake_runs_keep_their_savepoints(store):
    def boom(conn):
        conn.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
        raise ValueError("business error")

    outcomes = run_group(store, [op("a"), CallOp(boom), op("b")])
    assert outcomes[0][1] is None and outcomes[2][1] is None
    assert isinstance(outcomes[1][1], ValueError)
    rows = store.write_sync(lambda conn: conn.execute("SELECT count(*) FROM meta WHERE key='x'").fetchone()[0])
    assert rows == 0  # the failing op was rolled back alone
    assert store.verify_chain_sync()["checked"] == 2


def test_a_bug_in_a_batched_op_fails_the_group_and_keeps_the_chain(store):
    run_group(store, [op("before")])

    def broken_hook(conn, records):
        raise RuntimeError("bug")

    store.add_intake_hook(broken_hook)
    outcomes = run_group(store, [op("x"), op("y")])
    assert all(error is not None for _, error in outcomes)
    store.writer.state["intake_hooks"].clear()
    after = run_group(store, [op("after")])[0][0][0].event
    assert after.seq == 2  # nothing of the failed group was kept; the head was reloaded
    assert store.verify_chain_sync()["valid"] is True


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_durability_settings_are_read_back_from_sqlite(tmp_path, synchronous):
    # /metrics reports these and `make bench` refuses figures without FULL/WAL/FTS,
    # so they must come from SQLite itself, not echo the config.
    s = SqliteStore(tmp_path / "d.db", secret=b"s" * 64, synchronous=synchronous)
    try:
        assert s.durability == {"journal_mode": "wal", "synchronous": synchronous,
                                "secure_delete": "on", "fts": "on"}
    finally:
        s.close()


def test_a_between_groups_op_runs_alone_with_no_transaction_open(store):
    """It ends the group it was queued in, runs outside BEGIN/COMMIT (what a WAL checkpoint
    needs), and a failure fails only itself."""
    import asyncio
    import threading

    from recalled_lite.storage.group_writer import BetweenGroupsOp

    release = threading.Event()
    seen: list[tuple[bool, int, int]] = []

    def look(conn):
        head = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
        seen.append((conn.in_transaction, head, store.writer.groups_committed))
        return "looked"

    def fail(conn):
        raise ValueError("not now")

    async def scenario():
        store.start(asyncio.get_running_loop())
        hold = store.writer.submit(CallOp(lambda conn: release.wait(5)))
        await asyncio.sleep(0.05)  # the writer is now inside the first group, blocked
        futures = [store.writer.submit(o) for o in
                   (op("a"), BetweenGroupsOp(look), op("b"), BetweenGroupsOp(fail), op("c"))]
        release.set()
        await hold
        return await asyncio.gather(*futures, return_exceptions=True)

    a, looked, b, failed, c = asyncio.run(scenario())
    assert looked == "looked" and isinstance(failed, ValueError)
    assert [r.event.seq for r in (a[0], b[0], c[0])] == [1, 2, 3]
    # Alone and outside a transaction, after the group holding "a" committed, before "b".
    ((in_transaction, head, groups),) = seen
    assert in_transaction is False and head == 1
    assert store.writer.groups_committed == groups + 2  # "b" and "c" each in a group of their own
