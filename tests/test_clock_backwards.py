"""The wall clock going backwards (NTP step, VM restore) does not break seq, ids or the chain,
within one run and across a restart."""

from __future__ import annotations

from unittest import mock

import msgspec

from recalled_lite import ids
from recalled_lite.auth import new_key_record
from recalled_lite.config import EventsConfig
from recalled_lite.intake import prepare_event
from recalled_lite.schemas import EventIn
from recalled_lite.storage.sqlite.store import AppendEvents, SqliteStore

_, KEY = new_key_record("k", frozenset({"admin"}), None)
SECRET = b"s" * 64


def append(store: SqliteStore, action: str, received_at: int):
    event = msgspec.convert({"action": action}, EventIn)
    op = AppendEvents([prepare_event(event, KEY, EventsConfig(), received_at)])
    [(_, result, error)] = store.writer._run_group([(op, None)])
    assert error is None, error
    return result[0].event


def test_clock_going_back_keeps_seq_ids_and_chain_in_order(tmp_path):
    clock = [1_800_000_000_000]  # ms

    def time_ns():
        return clock[0] * 1_000_000

    stored = []
    with mock.patch.object(ids.time, "time_ns", time_ns):
        store = SqliteStore(tmp_path / "c.db", secret=SECRET)
        for step in (0, -5_000, -3_600_000, +10, 0, -1):  # back 5 s, back an hour, ...
            clock[0] += step
            stored.append(append(store, f"clock.{len(stored)}", clock[0]))
        store.close()
        clock[0] -= 86_400_000  # a whole day back, across a restart
        store = SqliteStore(tmp_path / "c.db", secret=SECRET)
        stored.append(append(store, "clock.after_restart", clock[0]))
        stored.append(append(store, "clock.after_restart2", clock[0]))
        report = store.verify_chain_sync()
        rows = store._conn.execute("SELECT seq, id FROM events ORDER BY seq").fetchall()
        store.close()
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    event_ids = [e.id for e in stored]
    assert event_ids == sorted(event_ids) and len(set(event_ids)) == len(event_ids)
    assert [r[1] for r in rows] == event_ids
    # receive times went backwards, as the clock did: the order is seq's, not the clock's
    assert stored[2].received_at < stored[0].received_at
    assert report["valid"] is True and report["checked"] == len(stored)
