"""Retention on PostgreSQL purges exactly what SQLite purges: the same rules, holds and job
over the same rows give the same surviving events, tombstones, checkpoint contents (each
chain of checkpoints verifies), job counters, status and whole-log export; the rules, holds
and jobs behave as on SQLite; the events trigger lets only a purge batch delete a row, and
only once its tombstone exists.
"""

from __future__ import annotations

import psycopg
import pytest

from recalled_lite.ids import new_id
from recalled_lite.integrity.retention import check_checkpoint
from recalled_lite.retention import DAY_MS, Hold
from recalled_lite.storage.base import RecordNotFound
from recalled_lite.storage.filters import ListFilters
from recalled_lite.storage.postgres import reads, retention
from recalled_lite.storage.sqlite import retention as lite_retention
from pg_reads_support import (
    BASE_MS, SECRET, build_sqlite, copy_to_pg, corpus, drop_pg, export_rows, pg_read, pg_write, run_sqlite,
    with_sqlite,
)
from pg_support import create_database

AT = BASE_MS + 40 * DAY_MS
RULES = [("org_acme", None, 38), (None, "invoice.", 45), ("org_globex", "user.", 39), (None, "report.", 0)]


@pytest.fixture
def both(tmp_path):
    path = tmp_path / "ret.db"
    build_sqlite(path, corpus(400, seed=9))
    url = create_database("ret")
    try:
        copy_to_pg(path, url)
        yield path, url
    finally:
        drop_pg(url)


def _same_rules_and_hold(path, url):
    """The rules through SqliteStore, copied (same ids, so checkpoints name the same rules)."""
    async def put(store):
        return [(await store.put_retention_rule(org, prefix, days))[0] for org, prefix, days in RULES]

    rules = with_sqlite(path, put)
    hold = Hold(new_id("hold"), "org_acme", "user_2", None, "litigation", 1, None)
    with_sqlite(path, lambda s: s.create_legal_hold(hold))
    with psycopg.connect(url) as conn:
        for r in rules:
            conn.execute("INSERT INTO retention_rules VALUES (%s,%s,%s,%s,%s,%s)",
                         (r.id, r.organization, r.action_prefix, r.days, r.created_at, r.updated_at))
        conn.commit()
    pg_write(url, retention.insert_hold, hold)
    return rules


def _run_job(run, create):
    job, created = create()
    assert created
    while job.status == "running":
        job = run(job.id)
    return job


CP_FIELDS = ("id", "first_seq", "last_seq", "count", "last_hash", "tombstones_digest", "rules", "reason",
             "created_at")


@pytest.mark.parametrize("default_days, batch", [(0, 17), (41, 500)])
def test_a_purge_job_removes_what_sqlite_removes(both, default_days, batch):
    path, url = both
    _same_rules_and_hold(path, url)
    project_id = with_sqlite(path, lambda s: _value(s.project_id))

    lite_job = with_sqlite(path, lambda s: _lite_job(s, default_days, batch))
    pg_job = _run_job(
        lambda job_id: pg_write(url, retention.purge_batch, job_id, project_id, SECRET, default_days, batch, AT),
        lambda: pg_write(url, retention.create_job, "manual", "parity", AT))
    assert pg_job.status == lite_job.status == "completed"
    counters = ("cursor_seq", "stop_seq", "scanned", "purged", "held", "batches")
    assert [getattr(pg_job, c) for c in counters] == [getattr(lite_job, c) for c in counters]
    assert pg_job.purged > 0 and pg_job.held > 0  # not vacuous: the rules purge, the hold shields

    lite_left = [e.seq for e in run_sqlite(path, "list_events", ListFilters(limit=1000, after_seq=0), None)[0]]
    pg_left = [e.seq for e in pg_read(url, reads.list_page, ListFilters(limit=1000, after_seq=0), None)[0]]
    assert pg_left == lite_left and pg_left[-1] == 400  # the chain head stays

    with psycopg.connect(url) as conn:
        pg_stones = conn.execute("SELECT seq, hash, signature, checkpoint_id FROM retention_tombstones "
                                 "ORDER BY seq").fetchall()
        pg_cps = [retention.checkpoint(conn, i) for i in range(1, pg_job.batches + 1)]
        pg_cp_stones = [retention.checkpoint_tombstones(conn, i) for i in range(1, pg_job.batches + 1)]
        assert retention.checkpoint(conn, pg_job.batches + 1) is None
    import sqlite3

    lite_conn = sqlite3.connect(path)
    lite_stones = lite_conn.execute("SELECT seq, hash, signature, checkpoint_id FROM retention_tombstones "
                                    "ORDER BY seq").fetchall()
    lite_cps = [lite_retention.checkpoint(lite_conn, i) for i in range(1, lite_job.batches + 1)]
    lite_conn.close()
    assert [tuple(s) for s in pg_stones] == lite_stones and len(pg_stones) == pg_job.purged
    assert ([tuple(getattr(c, f) for f in CP_FIELDS) for c in pg_cps]
            == [tuple(getattr(c, f) for f in CP_FIELDS) for c in lite_cps])
    prev = None
    for cp, stones in zip(pg_cps, pg_cp_stones):
        assert check_checkpoint(project_id, cp, stones, SECRET, prev) is None
        prev = cp.hash

    lite_status = run_sqlite(path, "retention_status", None)
    pg_status = pg_read(url, retention.status, None)
    for key in ("purged_by_rule", "oldest", "tombstones"):
        assert pg_status[key] == (tuple(lite_status[key]) if key == "oldest" else lite_status[key])
    assert pg_read(url, retention.status, "org_acme")["purged_by_rule"] == \
        run_sqlite(path, "retention_status", "org_acme")["purged_by_rule"]

    # A whole-log export carries the tombstones in place, as on SQLite.
    lite_export = export_rows(lambda a, u: run_sqlite(path, "export_chunk", ListFilters(), None, a, u, list), 400)
    pg_export = export_rows(lambda a, u: pg_read(url, reads.export_chunk, ListFilters(), None, a, u, list, 50), 400)
    assert pg_export == lite_export and len(pg_export) == 400


async def _value(v):
    return v


async def _lite_job(store, default_days, batch):
    job, created = await store.write(lite_retention.create_job, "manual", "parity", AT)
    assert created
    while job.status == "running":
        job = await store.write(lite_retention.purge_batch, job.id, store.project_id, SECRET, default_days,
                                batch, AT)
    return job


def test_rules_holds_and_jobs(both):
    _, url = both
    rule, old = pg_write(url, retention.put_rule, "org_a", "invoice.", 30, 10)
    assert old is None and rule.days == 30
    same, old = pg_write(url, retention.put_rule, "org_a", "invoice.", 30, 11)
    assert same == rule and old == rule
    changed, old = pg_write(url, retention.put_rule, "org_a", "invoice.", 60, 12)
    assert changed.id == rule.id and changed.days == 60 and changed.updated_at == 12 and old.days == 30
    other, _ = pg_write(url, retention.put_rule, None, None, 400, 13)
    assert [r.id for r in pg_read(url, retention.list_rules, None)] == sorted([rule.id, other.id])
    assert [r.id for r in pg_read(url, retention.list_rules, "org_a")] == [rule.id]
    with pytest.raises(RecordNotFound):
        pg_write(url, retention.delete_rule, rule.id, "org_b")
    assert pg_write(url, retention.delete_rule, rule.id, "org_a").id == rule.id
    with pytest.raises(RecordNotFound):
        pg_write(url, retention.delete_rule, rule.id, None)

    hold = Hold(new_id("hold"), "org_a", None, "invoice.*", "audit", 5, None)
    pg_write(url, retention.insert_hold, hold)
    assert pg_read(url, retention.get_hold, hold.id, "org_a") == hold
    with pytest.raises(RecordNotFound):
        pg_read(url, retention.get_hold, hold.id, "org_b")
    released, now = pg_write(url, retention.release_hold, hold.id, None, 9)
    assert now and released.released_at == 9
    again, now = pg_write(url, retention.release_hold, hold.id, None, 10)
    assert not now and again.released_at == 9
    assert pg_read(url, retention.list_holds, "org_a", False) == []
    assert pg_read(url, retention.list_holds, "org_a", True) == [released]

    job, created = pg_write(url, retention.create_job, "manual", "r", 20)
    same_job, created_again = pg_write(url, retention.create_job, "schedule", "r2", 21)
    assert created and not created_again and same_job.id == job.id and job.stop_seq == 400
    assert pg_read(url, retention.running_job).id == job.id
    pg_write(url, retention.fail_job, job.id, "boom", 22)
    failed = pg_read(url, retention.get_job, job.id)
    assert failed.status == "failed" and failed.error == "boom" and pg_read(url, retention.running_job) is None
    assert pg_read(url, retention.status, None)["last"].id == job.id


def test_only_a_purge_batch_deletes_an_event(both):
    _, url = both
    with psycopg.connect(url) as conn:
        for setup in ["", "SELECT set_config('recalled.retention_purge', 'on', true)"]:
            if setup:
                conn.execute(setup)
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute("DELETE FROM events WHERE seq = 3")
            conn.rollback()
        # The flag and a tombstone with the row's seq and hash: the one DELETE allowed.
        (real_hash,) = conn.execute("SELECT hash FROM events WHERE seq = 3").fetchone()
        for stone_hash, allowed in [("sha256:other", False), (real_hash, True)]:
            conn.execute("INSERT INTO retention_tombstones VALUES (3, %s, 's', 1)", (stone_hash,))
            conn.execute("SELECT set_config('recalled.retention_purge', 'on', true)")
            if allowed:
                assert conn.execute("DELETE FROM events WHERE seq = 3").rowcount == 1
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    conn.execute("DELETE FROM retention_tombstones")
            else:
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    conn.execute("DELETE FROM events WHERE seq = 3")
            conn.rollback()
    # The flag does not outlive the batch's DELETE: the rest of its transaction runs without it.
    project_id = "proj"
    pg_write(url, retention.put_rule, None, None, 1, 1)
    job, _ = pg_write(url, retention.create_job, "manual", "r", AT)

    def batch_then_delete(conn):
        retention.purge_batch(conn, job.id, project_id, SECRET, 0, 5, AT)
        assert conn.execute("SELECT current_setting('recalled.retention_purge', true)").fetchone()[0] == "off"
        conn.execute("DELETE FROM events WHERE seq = 399")

    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        pg_write(url, batch_then_delete)


def test_verification_accounts_for_purged_seqs_through_their_checkpoints(both):
    from recalled_lite.storage.postgres.integrity_store import scan_chain

    path, url = both
    _same_rules_and_hold(path, url)
    project_id = with_sqlite(path, lambda s: _value(s.project_id))
    with_sqlite(path, lambda s: _lite_job(s, 0, 25))
    _run_job(lambda job_id: pg_write(url, retention.purge_batch, job_id, project_id, SECRET, 0, 25, AT),
             lambda: pg_write(url, retention.create_job, "manual", "verify", AT))
    lite = run_sqlite(path, "verify_chain", None, None)
    with psycopg.connect(url) as conn:
        whole = scan_chain(conn, project_id, SECRET, None, None, None)
        first_purged = conn.execute("SELECT min(seq) FROM retention_tombstones").fetchone()[0]
        # A range starting right after a purged seq takes its prev hash from the tombstone.
        tail = scan_chain(conn, project_id, SECRET, first_purged + 1, None, None)
    assert whole["valid"] and whole == lite, (whole, lite)
    assert tail["valid"]
    # A checkpoint changed behind the server's back: its purged seqs are no longer accounted for.
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE retention_checkpoints DISABLE TRIGGER retention_checkpoints_append_only")
        conn.execute("UPDATE retention_checkpoints SET reason = 'forged' WHERE id = 1")
        conn.commit()
        broken = scan_chain(conn, project_id, SECRET, None, None, None)
    assert not broken["valid"]
    assert "not accounted for" in broken["firstInvalid"]["reason"] and broken["firstInvalid"]["seq"] == first_purged


def test_retention_through_both_servers(tmp_path):
    import time

    from pg_reads_support import ServerPair

    pair = ServerPair(tmp_path, corpus(200, seed=13))
    try:
        statuses = []
        for srv in pair.servers:
            with srv.client() as c:
                for rule in [{"organization": "org_acme", "days": 100}, {"action_prefix": "invoice.", "days": 200}]:
                    r = c.put("/v1/retention/rules", json=rule)
                    assert r.status_code in (200, 201), r.text
                hold = c.post("/v1/legal_holds", json={"organization": "org_acme", "actor_id": "user_3",
                                                       "reason": "case 7"})
                assert hold.status_code in (200, 201), hold.text
                job = c.post("/v1/retention/run", json={"reason": "parity"})
                assert job.status_code == 202, job.text
                job_id = job.json()["data"]["id"]
                deadline = time.monotonic() + 60
                while True:
                    state = c.get(f"/v1/retention/jobs/{job_id}").json()["data"]
                    if state["status"] != "running" or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                assert state["status"] == "completed", state
                verified = c.get("/v1/events/verify").json()["data"]
                assert verified["valid"] is True, verified
                statuses.append(c.get("/v1/retention/status").json()["data"])
        lite, pg = statuses
        assert pg["purged_total"] == lite["purged_total"] > 0
        assert [p["purged"] for p in pg["purged_by_rule"]] == [p["purged"] for p in lite["purged_by_rule"]]
        assert (pair.walk(pair.pg, "/v1/events", {"after_seq": 0, "limit": 100})
                == pair.walk(pair.lite, "/v1/events", {"after_seq": 0, "limit": 100}))
    finally:
        pair.close()


def test_two_instances_share_one_job_and_purge_each_event_once():
    """Two PostgresStores: asking both for a job at once gives one job; both running its
    batches at once (as two instances' services would, were both to try) purge each expired
    event once, with one unbroken chain of retention checkpoints, and the chain verifies."""
    import asyncio

    from recalled_lite.storage.postgres.store import PostgresStore
    from pg_reads_support import prepared

    url = create_database("ret2")
    old = "2020-01-01T00:00:00Z"
    bodies = [{"action": f"a.{i % 4}", "organization": "org_x", "occurred_at": old} for i in range(600)]

    async def main():
        stores = [PostgresStore(url, secret=SECRET) for _ in range(2)]
        for s in stores:
            s.start(asyncio.get_running_loop())
        try:
            for i in range(0, len(bodies), 100):
                await stores[i % 2].append_events([prepared(b, 1_800_000_000_000) for b in bodies[i:i + 100]])
            await stores[0].put_retention_rule("org_x", None, 30)
            made = await asyncio.gather(*[s.create_retention_job("manual", f"from {n}")
                                          for n, s in enumerate(stores)])
            assert made[0][0].id == made[1][0].id and sorted(c for _, c in made) == [False, True]
            job_id = made[0][0].id

            async def drive(store):
                while (await store.retention_batch(job_id, 0, 37)).status == "running":
                    pass

            await asyncio.gather(*[drive(s) for s in stores])
            job = await stores[1].get_retention_job(job_id)
            verified = await stores[0].verify_chain()
            status = await stores[1].retention_status(None)
            return job, verified, status
        finally:
            for s in stores:
                s.close()

    try:
        job, verified, status = asyncio.run(main())
        assert job.status == "completed" and job.purged == 599  # the chain head stays
        assert status["tombstones"] == 599 and verified["valid"] is True, verified
        with psycopg.connect(url) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM retention_checkpoints ORDER BY id")]
            covered = conn.execute("SELECT sum(count) FROM retention_checkpoints").fetchone()[0]
        assert ids == list(range(1, len(ids) + 1)) and covered == 599
    finally:
        drop_pg(url)
