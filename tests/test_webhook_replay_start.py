"""replay_missing finds its first event without assuming that `receivedAt` grows with seq:
a wall clock stepped back (NTP, a VM restore) back-dates the events after the step, and
the first release's binary search over seq then started past events inside the window and
never replayed them. Back-dated rows are made by the real store under a mocked clock."""

from __future__ import annotations

from unittest import mock

import msgspec

from recalled_lite import ids
from recalled_lite.auth import new_key_record
from recalled_lite.config import EventsConfig
from recalled_lite.delivery.signing import generate_secret
from recalled_lite.intake import prepare_event
from recalled_lite.schemas import EventIn
from recalled_lite.storage.sqlite.store import AppendEvents, SqliteStore
from recalled_lite.storage.sqlite.webhook_jobs import first_seq_for_replay
from recalled_lite.storage.webhook_base import NewSubscription, RetryPolicy

_, KEY = new_key_record("k", frozenset({"admin"}), None)
HOUR = 3_600_000
T = 1_800_000_000_000


def append(store, action, received_at):
    op = AppendEvents([prepare_event(msgspec.convert({"action": action}, EventIn), KEY, EventsConfig(), received_at)])
    [(_, result, error)] = store.writer._run_group([(op, None)])
    assert error is None, error
    return result[0].event


def first_release_search(conn, at, stop):
    """The first release's _first_seq_received_after, for comparison."""
    lo, hi = 1, stop + 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute("SELECT received_at FROM events WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)).fetchone()
        if row is None or row[0] >= at:
            hi = mid
        else:
            lo = mid + 1
    return lo


def test_replay_start_with_back_dated_rows(tmp_path):
    clock = [T]
    stored = []
    with mock.patch.object(ids.time, "time_ns", lambda: clock[0] * 1_000_000):
        store = SqliteStore(tmp_path / "r.db", secret=b"s" * 64)
        # 5 events at T, then the clock steps back 3 h: 15 events stamped ~T-3h; then it
        # runs on and, later, jumps forward again.
        for step, count in ((0, 5), (-3 * HOUR, 15), (+10 * HOUR, 5)):
            clock[0] += step
            for _ in range(count):
                clock[0] += 1000
                stored.append(append(store, "replay.x", clock[0]))
        conn = store._conn
        received = {e.seq: e.received_at for e in stored}
        assert received[6] < received[5] - 2 * HOUR  # really back-dated
        stop = max(received)
        for begin in sorted({*received.values(), T - 10_000, T - 4 * HOUR, T + 20 * HOUR}):
            want = [seq for seq, at in received.items() if at >= begin]
            first = first_seq_for_replay(conn, begin)
            if want:
                assert first is not None and first <= min(want), (begin, first, want)
        # the first release started past seq 1-5 for a window that contains them
        assert first_release_search(conn, T - 10_000 - HOUR, stop) > 5

        # the whole job, through the real storage: exactly the events received in the window
        storage = store.webhook_storage(RetryPolicy((1.0,), 0.0, 10**9, 60_000), handoff_limit=0)
        store.write_sync(storage._attach)
        sub = store.write_sync(storage._create_subscription, NewSubscription(
            url="http://127.0.0.1:9/x", description="", event_types=["replay.*"], organization=None,
            disabled=False, secret=generate_secret()))
        begin = T - 10_000
        row = store.write_sync(storage._create_job, "replay_missing", sub.id, None, begin, None)
        while store.write_sync(storage._job_step, row[0], 4, 10_000) != "done":
            pass
        queued = {seq for (seq,) in conn.execute(
            "SELECT event_seq FROM webhook_messages WHERE subscription_id = ? AND event_seq IS NOT NULL", (sub.id,))}
        store.close()
    assert queued == {seq for seq, at in received.items() if at >= begin} == {1, 2, 3, 4, 5, 21, 22, 23, 24, 25}
