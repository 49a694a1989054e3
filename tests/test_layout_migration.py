"""Migration 007 (issue #14) on a database written with the old layout: every id, seq and
hash is kept, the chain verifies, and the filters answered through events_keys find the same
events as before, both when `serve` migrates at startup and with `recalled-lite migrate`.

The old layout is made by taking a log the server wrote and putting it back the way
migrations 001-006 left it (the b-tree indexes and event_targets, no events_keys or
event_blocks): what a database of the previous release holds. That release shipped 007 and
008 as empty placeholders, so its databases are at user_version 8; version 6 (older still)
is tested too."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit_events import audit_events
from conftest import ServerProcess

pytestmark = pytest.mark.sqlite_only("rewrites an SQLite file back to the pre-007 layout and migrates it; "
                                     "PostgreSQL starts at its own 001")

CLI = [sys.executable, "-m", "recalled_lite.cli"]

# The release before 009 (events_ahead): max_below over every event, as 007 computed it.
BEFORE_009 = """
DROP TABLE events_ahead;
UPDATE event_blocks SET max_below = r.below FROM (
    SELECT block, max(hi) OVER (ORDER BY block ROWS UNBOUNDED PRECEDING) AS below
    FROM (SELECT seq >> 10 AS block, max(occurred_at) AS hi FROM events GROUP BY seq >> 10)) AS r
WHERE r.block = event_blocks.block;
"""

OLD_LAYOUT = """
DROP TABLE events_ahead;
DROP TABLE events_keys;
DROP TABLE event_blocks;
CREATE INDEX events_by_org_time ON events (organization, occurred_at, seq);
CREATE INDEX events_by_actor    ON events (actor_id, occurred_at, seq) WHERE actor_id IS NOT NULL;
CREATE TABLE event_targets (
    seq         INTEGER NOT NULL,
    target_type TEXT    NOT NULL,
    target_id   TEXT    NOT NULL,
    PRIMARY KEY (target_type, target_id, seq)
) WITHOUT ROWID;
CREATE TRIGGER event_targets_append_only
BEFORE UPDATE ON event_targets
BEGIN
    SELECT RAISE(ABORT, 'event_targets are append-only');
END;
INSERT OR IGNORE INTO event_targets (seq, target_type, target_id)
    SELECT events.seq, t.value ->> '$.type', t.value ->> '$.id'
    FROM events, json_each(events.targets) AS t WHERE events.targets IS NOT NULL;
CREATE INDEX events_by_org_action_time ON events (organization, action, occurred_at, seq);
CREATE INDEX event_targets_by_seq ON event_targets (seq, target_type, target_id);
-- 008 (retention) was a placeholder too: none of its objects, the old delete trigger.
DROP TABLE retention_rules;
DROP TABLE legal_holds;
DROP TABLE retention_jobs;
DROP TABLE retention_checkpoints;
DROP TABLE retention_tombstones;
DROP TABLE retention_purged;
DROP TABLE retention_guard;
DROP TRIGGER events_append_only_delete;
CREATE TRIGGER events_append_only_delete
BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: rows cannot be deleted');
END;
"""

ORGS = ["org_a", "org_b", "org_c"]
ACTIONS = ["invoice.paid", "invoice.sent", "user.login", "user.logout"]


def event(rng: random.Random, i: int) -> dict:
    body = {"action": rng.choice(ACTIONS), "organization": rng.choice(ORGS),
            "actor": {"id": f"u{rng.randrange(6)}", "name": "Ada"},
            "metadata": {"n": i}}
    if rng.random() < 0.7:
        body["targets"] = [{"type": rng.choice(["invoice", "doc"]), "id": f"t{rng.randrange(5)}"}]
    r = rng.random()
    if r < 0.3:  # back-dated
        body["occurred_at"] = f"2026-0{rng.randrange(1, 9)}-1{rng.randrange(10)}T10:00:00.000Z"
    elif r < 0.35:  # dated ahead of its arrival, as by a clock running fast (migration 009)
        ahead = time.time() + rng.randrange(120, 1800)
        body["occurred_at"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ahead))
    return body


def snapshot(db: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT seq, id, hash, prev_hash, signature FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


def listing(srv: ServerProcess, params: dict) -> list[int]:
    out, cursor = [], None
    with srv.client() as c:
        while True:
            r = c.get("/v1/events", params={**params, "limit": 37, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            out += [e["seq"] for e in r.json()["data"]]
            cursor = r.json()["nextCursor"]
            if cursor is None:
                return out


FILTERS = [{"organization": "org_a"}, {"organization": "org_b", "action": "invoice.paid"},
           {"organization": "org_c", "action": "user.*"}, {"actor_id": "u3"},
           {"target_type": "invoice"}, {"target_type": "doc", "target_id": "t2"}, {"target_id": "t1"},
           {"organization": "org_a", "actor_id": "u1", "target_type": "invoice"}, {}]


@pytest.fixture(scope="module", params=["009", 8, 6], ids=["before-009", "placeholders-applied", "version-6"])
def old_db(tmp_path_factory, request):
    """(a database in the old layout, the seqs each filter listed before, the event bodies)."""
    srv = ServerProcess(tmp_path_factory.mktemp("layout-old")).start()
    rng = random.Random(7)
    try:
        with srv.client() as c:
            for start in range(0, 2300, 230):  # more than two blocks of 1024 seqs
                r = c.post("/v1/events/batch", json={"events": [event(rng, start + i) for i in range(230)]})
                assert r.status_code == 200, r.text
            r = c.delete("/v1/actors/u5")  # an erased actor: its keys name '[deleted]'
            assert r.status_code in (200, 202), r.text
            audit_events(c)
        before = {json.dumps(f): listing(srv, f) for f in FILTERS}
    finally:
        srv.stop()
    conn = sqlite3.connect(srv.db_path)
    if request.param == "009":  # the previous release: 007 and 008 real, no 009 yet
        conn.executescript(BEFORE_009 + "PRAGMA user_version = 8;")
        conn.close()
        return srv.workdir, before, 8
    conn.executescript(OLD_LAYOUT + f"PRAGMA user_version = {request.param};")
    assert conn.execute("SELECT count(*) FROM event_targets").fetchone()[0] > 1000
    conn.close()
    return srv.workdir, before, request.param


def copy_dir(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def check_migrated(srv: ServerProcess, rows_before: list[tuple], before: dict) -> None:
    assert snapshot(srv.db_path) == rows_before
    conn = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 8
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
        assert "event_targets" not in names and "events_by_actor" not in names
        # 008 ran too (also where the version said it had): retention's tables and the
        # delete trigger that only a purge batch passes.
        assert {"retention_rules", "legal_holds", "retention_tombstones", "retention_guard"} <= names
        trigger = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'events_append_only_delete'").fetchone()[0]
        assert "retention_guard" in trigger
        assert conn.execute("SELECT count(*) FROM events_keys").fetchone()[0] == len(rows_before)
        # 009: the events dated more than a minute ahead of their arrival are listed apart, and
        # each block's bound covers only the others.
        ahead = conn.execute("SELECT seq FROM events WHERE occurred_at > received_at + 60000").fetchall()
        assert len(ahead) > 20
        assert conn.execute("SELECT seq FROM events_ahead ORDER BY seq").fetchall() == ahead
        bounds = conn.execute(
            "SELECT b.block, b.max_below = (SELECT max(occurred_at) FROM events WHERE seq >> 10 <= b.block "
            "AND occurred_at <= received_at + 60000) FROM event_blocks AS b").fetchall()
        assert bounds and all(exact for _, exact in bounds), bounds
    finally:
        conn.close()
    after = {json.dumps(f): listing(srv, f) for f in FILTERS}
    assert after == before
    assert all(len(v) > 0 for v in after.values())


def test_serve_migrates_at_startup_keeping_every_id_seq_and_hash(old_db, tmp_path):
    workdir, before, _ = old_db
    work = copy_dir(workdir, tmp_path / "startup")
    rows_before = snapshot(work / "recalled.db")
    srv = ServerProcess(work).start(timeout=60)
    try:
        check_migrated(srv, rows_before, before)
    finally:
        srv.stop()
    done = subprocess.run(CLI + ["verify", "--db", str(srv.db_path)], capture_output=True, text=True,
                          cwd=work, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["data"]["valid"] is True


def test_cli_migrate_then_verifies(old_db, tmp_path):
    workdir, before, version = old_db
    work = copy_dir(workdir, tmp_path / "cli")
    rows_before = snapshot(work / "recalled.db")
    done = subprocess.run(CLI + ["migrate", "--db", str(work / "recalled.db")], capture_output=True,
                          text=True, cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["data"]
    assert report["schemaBefore"] == version and report["schemaAfter"] >= 8
    assert report["verify"]["valid"] is True and report["verify"]["checked"] == len(rows_before)
    assert "verified after the migration" in done.stderr
    srv = ServerProcess(work).start(timeout=60)
    try:
        check_migrated(srv, rows_before, before)
    finally:
        srv.stop()
