"""Erasure without stalls (erasure.py, purge.py, checkpoint.py).

* The full-text purge runs as bounded FTS5 'merge' steps, each its own write op, and intake
  is committed between every two steps: proven by commit order (seq) on a 400k-event log,
  never by timings. When DELETE returns, the erased strings are gone from the file and WAL.
* A purge left half-done (a crash between steps) is finished by the next start.
* A reader holding an old snapshot open delays only the WAL truncation: the erasure returns,
  intake is served, and the WAL is emptied once the reader ends.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from pathlib import Path

import msgspec
import pytest

from recalled_lite.auth import new_key_record
from recalled_lite.config import EventsConfig
from recalled_lite.intake import prepare_event
from recalled_lite.schemas import EventIn
from recalled_lite.storage.sqlite import erasure
from recalled_lite.storage.sqlite.store import AppendEvents, SqliteStore

from test_erasure import NEEDLES, grep, personal_event
from webhook_receiver import wait_until

pytestmark = pytest.mark.sqlite_only("SQLite's FTS5 merge-step purge, its resume marker and WAL truncation "
                                     "with an open reader; PostgreSQL has no such purge (tsvector updated in the row)")

ACTOR = "zq_actor_7f3kpw"
SECRET = b"e" * 64
_, KEY = new_key_record("k", frozenset({"admin"}), None)
WORDS = ("quarterly annual report draft final budget roadmap contract renewal onboarding security "
         "review migration billing export archive customer vendor payroll audit compliance").split()


def background_event(rng: random.Random, i: int) -> dict:
    a = rng.randrange(10_000)
    return {
        "action": rng.choice(["invoice.paid", "user.login", "document.shared", "member.invited"]),
        "organization": f"org_{rng.randrange(100):03d}",
        "actor": {"type": "user", "id": f"user_{a:05d}", "name": f"Name{a % 97} Last{a % 89}",
                  "email": f"user{a}@example.com"},
        "targets": [{"type": "invoice", "id": f"inv_{rng.randrange(100_000):06d}"}],
        "metadata": {"amount": rng.randrange(100_000), "note": " ".join(rng.choice(WORDS) for _ in range(4))},
        "ip_address": f"203.0.113.{rng.randrange(256)}",
    }


def prepare(body: dict):
    return prepare_event(msgspec.convert(body, EventIn), KEY, EventsConfig(), 1_800_000_000_000)


def files_hold(path: Path, needles=NEEDLES) -> dict[str, int]:
    return {**grep(path, needles), **{f"wal:{k}": v for k, v in grep(Path(f"{path}-wal"), needles).items()}}


@pytest.fixture(scope="module")
def log_400k(tmp_path_factory) -> Path:
    """400,000 events, 40 of them the actor's, spread through the log (so through every
    full-text segment), built with the writer's own batched intake."""
    path = tmp_path_factory.mktemp("big") / "recalled.db"
    store = SqliteStore(path, secret=SECRET)
    rng = random.Random(7)
    try:
        for start in range(0, 400_000, 2000):
            bodies = [background_event(rng, start + i) for i in range(2000)]
            if start % 10_000 == 0:
                bodies[1000] = personal_event(start, "org_001")
            ((_, _, error),) = store.writer._run_group([(AppendEvents([prepare(b) for b in bodies]), None)])
            assert error is None, error
    finally:
        store.close()
    return path


def test_purge_steps_interleave_with_intake_on_a_400k_event_log(log_400k, monkeypatch):
    path = log_400k
    assert files_hold(path), "the needles must be in the file before the erasure"
    store = SqliteStore(path, secret=SECRET)
    bystanders_before = store._conn.execute(
        "SELECT * FROM events WHERE actor_id != ? AND seq % 997 = 0 ORDER BY seq", (ACTOR,)).fetchall()

    # What the writer connection runs: every FTS5 maintenance statement of the purge.
    maintenance: list[str] = []
    store._conn.set_trace_callback(
        lambda sql: maintenance.append(sql) if "'merge'" in sql or "'optimize'" in sql else None)
    steps: list[tuple[erasure.PurgeStep, int, int]] = []
    real_step = erasure.purge_step

    def observed_step(conn, generation):
        step = real_step(conn, generation)
        head = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
        steps.append((step, head, store.writer.groups_committed))
        return step

    monkeypatch.setattr(erasure, "purge_step", observed_step)
    acked: list[int] = []
    rng = random.Random(11)

    async def intake(stop: asyncio.Event) -> None:
        while not stop.is_set():
            (result,) = await store.append_events([prepare(background_event(rng, 0))])
            acked.append(result.event.seq)

    async def scenario() -> int:
        store.start(asyncio.get_running_loop())
        stop = asyncio.Event()
        producers = [asyncio.create_task(intake(stop)) for _ in range(4)]
        await asyncio.sleep(0.2)
        erased = await store.erase_actor(ACTOR, None, 1_800_000_000_000)
        on_return = files_hold(path)
        stop.set()
        await asyncio.gather(*producers)
        verify = await store.verify_chain()
        assert verify["valid"] is True and verify["checked"] == 400_000 + len(acked)
        return erased, on_return

    try:
        erased, on_return = asyncio.run(scenario())
        bystanders_after = store._conn.execute(
            "SELECT * FROM events WHERE actor_id != ? AND seq % 997 = 0 AND seq <= 400000 ORDER BY seq",
            (ACTOR,)).fetchall()
    finally:
        store.close()

    assert erased == 40
    assert on_return == {}, f"erased data still in the file or WAL when DELETE returned: {on_return}"
    # Incremental: many steps, each a merge with the fixed page budget, never an 'optimize'.
    assert len(steps) >= 20, len(steps)
    budget = erasure.PURGE_STEP_PAGES
    assert maintenance and all(sql.endswith(f"VALUES ('merge', {budget})")
                               or sql.endswith(f"VALUES ('merge', -{budget})") for sql in maintenance)
    # purge_begin, then the steps: each merges events_fts and events_keys (keys.py holds actor ids).
    assert len(maintenance) == 2 * (len(steps) + 1)
    assert sum("INTO events_keys" in sql for sql in maintenance) == len(steps) + 1
    assert [s.wal_generation is not None for s, _, _ in steps] == [False] * (len(steps) - 1) + [True]
    # Interleaved: intake was committed between every two steps (commit order, by seq),
    # and no two steps ever shared a write group.
    heads = [head for _, head, _ in steps]
    assert all(b > a for a, b in zip(heads, heads[1:])), heads
    groups = [g for _, _, g in steps]
    assert all(b > a for a, b in zip(groups, groups[1:]))
    assert len(acked) > len(steps) and set(acked) <= set(range(400_001, 400_001 + len(acked)))
    assert bystanders_after == bystanders_before


def test_a_chunk_committed_mid_purge_gets_another_round(tmp_path):
    """Two erasures overlap: the second commits its tombstones after the first purge round
    began (so in segments that round may not take). The marker's generation keeps the purge
    owed, and a second round removes the second actor's data too."""
    path = tmp_path / "overlap.db"
    store = SqliteStore(path, secret=SECRET)
    try:
        bodies = [background_event(random.Random(i), i) for i in range(3000)]
        for i in range(0, 3000, 100):
            bodies[i] = personal_event(i, "org_a")
            bodies[i + 1] = {**personal_event(i, "org_a"), "actor": {"id": "second_actor_q9", "name": "Secondnamexq"}}
        for start in range(0, 3000, 500):
            store.writer.run_sync(AppendEvents([prepare(b) for b in bodies[start:start + 500]]))
        assert store.write_sync(erasure.erase_chunk, ACTOR, None, 1) == 30
        generation = store.write_sync(erasure.purge_begin)
        assert store.write_sync(erasure.erase_chunk, "second_actor_q9", None, 1) == 30
        while store.write_sync(erasure.purge_step, generation).wal_generation is None:
            pass
        assert store.write_sync(erasure.purge_pending)  # the second erasure still owes one
        second = store.write_sync(erasure.purge_begin)
        assert second is not None and second != generation
        while store.write_sync(erasure.purge_step, second).wal_generation is None:
            pass
        assert not store.write_sync(erasure.purge_pending)
        assert store.write_sync(erasure.wal_truncation_owed) is not None
    finally:
        store.close()  # the last connection: the WAL is checkpointed into the file and removed
    assert grep(path, NEEDLES + ["second_actor_q9", "econdnamexq"]) == {}


def test_a_purge_left_half_done_is_finished_by_the_next_start(make_server):
    srv = make_server("half_purged")
    rng = random.Random(5)
    with srv.client() as c:  # 24,000 events: an index of several purge steps
        for round_ in range(24):
            batch = [background_event(rng, i) for i in range(1000)]
            for j in range(0, 1000, 500):
                batch[j] = personal_event(round_ * 2 + j // 500, "org_a")
            assert c.post("/v1/events/batch", json={"events": batch}).status_code == 200
    srv.stop()
    secret = srv.secret_path.read_text().strip().encode()
    # What a crash between purge steps leaves: the rows erased, the purge begun and two steps
    # committed, the marker still set.
    store = SqliteStore(srv.db_path, secret=secret)
    try:
        while store.write_sync(erasure.erase_chunk, ACTOR, None, 1_800_000_000_000) == erasure.ERASE_CHUNK:
            pass
        generation = store.write_sync(erasure.purge_begin)
        for _ in range(2):
            assert store.write_sync(erasure.purge_step, generation).wal_generation is None
    finally:
        store.close()
    assert files_hold(srv.db_path), "a half-done purge leaves the erased terms in the index"

    srv.start()
    wait_until(lambda: files_hold(srv.db_path) == {}, timeout=60, message="the resumed purge")
    conn = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True)
    try:
        wait_until(lambda: conn.execute("SELECT count(*) FROM meta WHERE key IN (?, ?)",
                                        (erasure.PURGE_MARKER, erasure.WAL_MARKER)).fetchone()[0] == 0,
                   timeout=30, message="the markers to be cleared")
    finally:
        conn.close()
    with srv.client() as c:
        assert c.get("/v1/events/search", params={"q": "qwzxnamevkjh"}).json()["data"] == []
        assert c.get("/v1/events/verify").json()["data"]["valid"] is True
        assert c.post("/v1/events", json={"action": "after.resume"}).status_code == 200
    assert "finishing the purge a previous run left owed" in srv.log_text()


def test_a_long_reader_delays_only_the_wal_truncation(make_server):
    srv = make_server("long_reader")
    with srv.client() as c:
        for round_ in range(4):
            batch = [background_event(random.Random(round_ * 1000 + i), i) for i in range(500)]
            for j in range(0, 500, 50):
                batch[j] = personal_event(round_ * 10 + j // 50, "org_a")
            assert c.post("/v1/events/batch", json={"events": batch}).status_code == 200
        stored = c.get("/readyz").json()["data"]["seq"]  # the batches and the server's own events
    # A read transaction on an old snapshot (what a long export or verify holds).
    reader = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True, isolation_level=None,
                             check_same_thread=False)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == stored >= 2000

    statuses: list[int] = []
    stop = threading.Event()

    def intake() -> None:
        with srv.client() as c:
            while not stop.is_set():
                statuses.append(c.post("/v1/events", json={"action": "during.erasure"}).status_code)

    worker = threading.Thread(target=intake)
    worker.start()
    try:
        time.sleep(0.3)
        served_before = len(statuses)
        started = time.monotonic()
        with srv.client() as c:
            r = c.delete(f"/v1/actors/{ACTOR}")
        elapsed = time.monotonic() - started
        assert r.status_code == 200 and r.json()["data"]["anonymized_events"] == 40
        # Before: ten TRUNCATE attempts each holding the write lock for its 1 s busy timeout
        # (10.5 s). Generous: the answer waits at most ~2 s for the WAL, plus the purge.
        assert elapsed < 8.0, elapsed
        time.sleep(0.5)
        assert len(statuses) > served_before, "intake stalled during the erasure"
        # The reader's snapshot keeps the WAL from being reset: the old images are still there.
        assert grep(Path(f"{srv.db_path}-wal"), NEEDLES)
        with srv.client() as c:
            assert c.get("/v1/events/search", params={"q": "qwzxnamevkjh"}).json()["data"] == []
    finally:
        stop.set()
        worker.join(30)
    assert statuses and set(statuses) == {200}
    reader.execute("COMMIT")
    reader.close()
    # The WAL is emptied once the reader ends: the pre-erasure page images are gone from it.
    wal = Path(f"{srv.db_path}-wal")
    wait_until(lambda: grep(wal, NEEDLES) == {}, timeout=60,
               message="the WAL truncation once the reader ended")
    with srv.client() as c:
        assert c.get("/v1/events/verify").json()["data"]["valid"] is True
