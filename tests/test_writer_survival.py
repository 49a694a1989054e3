"""The writer survives everything it can, and fails fast and visibly when it cannot (writer.py).

In-process: a started SqliteStore on a real file, on this test's event loop. What is tested is
that futures are settled (a result or a 503), never left hanging: every wait is bounded with a
generous timeout, and what a request is told is checked against what is in the file."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import threading

import httpx
import msgspec
import pytest

from recalled_lite.app import create_app
from recalled_lite.auth import new_key_record
from recalled_lite.config import Config, EventsConfig
from recalled_lite.errors import StorageUnavailable
from recalled_lite.intake import prepare_event
from recalled_lite.schemas import EventIn
from recalled_lite.storage.sqlite.store import AppendEvents, CallOp, SqliteStore

_, KEY = new_key_record("k", frozenset({"admin"}), None)
SECRET = b"s" * 64
WAIT = 30.0  # generous: only a hang (a future nobody settles) may fail these


def prepared(action: str, **fields):
    event = msgspec.convert({"action": action, **fields}, EventIn)
    return prepare_event(event, KEY, EventsConfig(), 1_800_000_000_000)


def run(store: SqliteStore, scenario) -> object:
    async def main():
        store.start(asyncio.get_running_loop())
        return await asyncio.wait_for(scenario(), WAIT)
    try:
        return asyncio.run(main())
    finally:
        store.close()


def count_events(path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()


def corrupt_secret_reload(store: SqliteStore) -> list[int]:
    """Chain a reload step that fails the way a malformed sealed webhook secret does
    (base64 'Incorrect padding', a binascii.Error: not a sqlite3.Error)."""
    calls: list[int] = []
    previous = store.writer.reload_state

    def reload_state(conn):
        previous(conn)
        calls.append(1)
        base64.b64decode("sealed:v1:abc".split(":")[-1])

    store.writer.reload_state = reload_state
    return calls


def test_a_reload_that_raises_a_non_sqlite_error_does_not_kill_the_writer(tmp_path):
    store = SqliteStore(tmp_path / "r.db", secret=SECRET)
    calls = corrupt_secret_reload(store)

    async def scenario():
        await store.append_events([prepared("seed")])
        pages = await store.write(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await store.write(lambda c: c.execute(f"PRAGMA max_page_count={pages + 1}").fetchone())
        big = [prepared("big", metadata={"pad": "x" * 30_000}) for _ in range(10)]
        with pytest.raises(StorageUnavailable, match="disk is full"):
            await store.append_events(big)  # the group is abandoned, then the state reloaded
        assert calls, "the failed group did not reload the writer's state"
        await store.write(lambda c: c.execute("PRAGMA max_page_count=0").fetchone())
        (after,) = await store.append_events([prepared("after")])
        await store.check_writable()
        return after.event.seq, store.writer.alive

    seq, alive = run(store, scenario)
    assert (seq, alive) == (2, True)
    assert count_events(tmp_path / "r.db") == 2


def test_another_process_appending_is_picked_up_at_the_next_group(tmp_path):
    path = tmp_path / "two.db"
    store = SqliteStore(path, secret=SECRET)
    calls = corrupt_secret_reload(store)  # and its reload fails after the head was re-read

    async def scenario():
        (first,) = await store.append_events([prepared("server.1")])
        other = SqliteStore(path, secret=SECRET)  # e.g. the CLI, appending beside the server
        try:
            (foreign,) = other.writer.run_sync(AppendEvents([prepared("cli.audit")]))
        finally:
            other.close()
        (mine,) = await store.append_events([prepared("server.2")])
        return first, foreign, mine

    first, foreign, mine = run(store, scenario)
    assert foreign.event.seq == 2 and foreign.event.prev_hash == first.event.hash
    assert mine.event.seq == 3 and mine.event.prev_hash == foreign.event.hash
    assert calls  # the writer noticed the foreign append and reloaded
    check = SqliteStore(path, secret=SECRET)
    try:
        assert check.verify_chain_sync() == {"valid": True, "checked": 3, "head": {
            "seq": 3, "hash": mine.event.hash}, "firstInvalid": None}
    finally:
        check.close()


def test_failing_hooks_and_callbacks_fail_at_most_their_own_op(tmp_path):
    store = SqliteStore(tmp_path / "h.db", secret=SECRET)
    listener_calls: list[int] = []

    def hook(conn, records):
        if any(r.action == "hook.bug" for r in records):
            raise KeyError("a bug in an intake hook")

    def listener():
        listener_calls.append(1)
        raise RuntimeError("a bug in a commit listener")

    store.add_intake_hook(hook)
    store.add_commit_listener(listener)

    async def scenario():
        outcomes = await asyncio.gather(
            store.append_events([prepared("fine.1")]),
            store.append_events([prepared("hook.bug")]),
            store.write(lambda c: 42, on_commit=lambda _: 1 / 0),  # after_commit raises
            store.append_events([prepared("fine.2")]),
            return_exceptions=True)
        later = await store.append_events([prepared("later")])
        return outcomes, later

    (one, bug, answer, two), later = run(store, scenario)
    assert isinstance(bug, KeyError)
    assert answer == 42  # committed; its failing callback is logged, not fatal
    assert [r[0].event.action for r in (one, two, later)] == ["fine.1", "fine.2", "later"]
    assert listener_calls and count_events(tmp_path / "h.db") == 3


class _KillTheThread(BaseException):
    """Not an Exception: nothing in an op may catch it, so the writer thread dies (a bug)."""


def _kill(conn):
    raise _KillTheThread("simulated bug in the writer loop")


def test_a_dead_writer_refuses_every_write_fast_and_readyz_says_so(tmp_path):
    path = tmp_path / "dead.db"
    store = SqliteStore(path, secret=SECRET, busy_timeout_ms=10_000)
    app = create_app(Config(), store)

    async def scenario():
        (seed,) = await store.append_events([prepared("seed")])
        # Hold the write lock so the writes below queue up behind the one that kills the thread.
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        killer = store.writer.submit(CallOp(_kill))
        await asyncio.sleep(0.2)
        queued = [asyncio.ensure_future(store.append_events([prepared(f"queued.{i}")])) for i in range(5)]
        await asyncio.sleep(0.2)
        blocker.execute("ROLLBACK")
        blocker.close()
        results = await asyncio.gather(killer, *queued, return_exceptions=True)
        later = await asyncio.gather(store.append_events([prepared("later")]), return_exceptions=True)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            ready = await client.get("/readyz")
        return seed, results, later, ready

    seed, results, later, ready = run(store, scenario)
    assert isinstance(results[0], StorageUnavailable)
    for outcome in results[1:] + later:
        assert isinstance(outcome, StorageUnavailable), outcome
        assert "writer thread has stopped" in str(outcome) and outcome.retry_after >= 1
    assert store.writer.dead and "simulated bug" in store.writer.dead
    assert ready.status_code == 503
    body = ready.json()["error"]
    assert body["code"] == "UNAVAILABLE" and "writer thread has stopped" in body["details"]["database"]
    assert count_events(path) == 1  # nothing refused was stored


def test_writes_racing_stop_are_all_settled_committed_or_refused(tmp_path):
    """stop() from another thread (the lifespan closes the store in an executor) while the
    event loop keeps submitting: every future gets a result or a 503, and every result is in
    the file. Before the gate, a submit that checked `_closing` just before stop() set it
    could put its op behind the stop marker, where nothing would ever settle it."""
    raced = 0
    for attempt in range(10):
        path = tmp_path / f"race{attempt}.db"
        store = SqliteStore(path, secret=SECRET)
        futures: list[asyncio.Future] = []

        async def scenario():
            loop = asyncio.get_running_loop()
            stopper = threading.Thread(target=store.writer.stop)
            for i in range(400):
                futures.append(store.writer.submit(AppendEvents([prepared(f"race.{i}")])))
                if i == 150:
                    stopper.start()
                if i % 25 == 0:
                    await asyncio.sleep(0)
            await asyncio.wait(futures, timeout=WAIT)
            await loop.run_in_executor(None, stopper.join)

        run(store, scenario)
        assert all(f.done() for f in futures), "a write was never answered"
        committed = [f for f in futures if f.exception() is None]
        refused = [f for f in futures if f.exception() is not None]
        for f in refused:
            assert isinstance(f.exception(), StorageUnavailable) and "shutting down" in str(f.exception())
        assert committed, "stop() started before any write"
        assert count_events(path) == len(committed)
        raced += bool(refused)
    assert raced, "stop() never overlapped the submissions"


def test_stop_waits_for_the_running_group_before_the_connection_closes(tmp_path):
    path = tmp_path / "slow.db"
    store = SqliteStore(path, secret=SECRET)
    release = threading.Event()
    order: list[str] = []

    def slow(conn):
        release.wait(WAIT)
        conn.execute("INSERT INTO meta (key, value) VALUES ('slow', 'done')")
        order.append("op finished")

    async def scenario():
        loop = asyncio.get_running_loop()
        pending = store.writer.submit(CallOp(slow))
        await asyncio.sleep(0.1)

        def stop():
            store.writer.stop(timeout=0.1)  # much shorter than the op: it must still wait
            order.append("stop returned")

        stopper = loop.run_in_executor(None, stop)
        await asyncio.sleep(0.5)
        order.append("released")
        release.set()
        await stopper
        return await pending

    run(store, scenario)
    assert order == ["released", "op finished", "stop returned"]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'slow'").fetchone() == ("done",)
    conn.close()


def test_a_dead_writer_releases_the_write_lock(tmp_path):
    path = tmp_path / "lock.db"
    store = SqliteStore(path, secret=SECRET)

    async def scenario():
        await store.append_events([prepared("seed")])
        with pytest.raises(StorageUnavailable):
            await store.write(_kill)
        # Another process can still write (the CLI creating a key, a backup taking the lock).
        other = sqlite3.connect(path, timeout=5)
        other.execute("INSERT INTO meta (key, value) VALUES ('other', 'process')")
        other.commit()
        other.close()

    run(store, scenario)
