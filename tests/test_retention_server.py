"""Retention on a real server (issue #13): rules, legal holds, the purge job and its proof.

1. A rule of N days and events back-dated across it: the purge removes exactly the expired
   events of that scope and nothing under a hold; verify (API, CLI, offline export) passes and
   reports the purged range; inclusion and consistency proofs of what remains still verify.
2. Rows deleted behind the server's back (triggers dropped in the sqlite3 shell) fail verify.
3. A purge SIGKILLed mid-batch resumes after the restart: nothing expired left, nothing live lost.
5. An organization-bound key neither reads nor changes another organization's rules or holds;
   no rule goes under min_days.
(4, concurrent writers, is tests/test_retention_concurrency.py.)
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from console_support import signed_in
from test_proofs_independent import consistent, event_leaf, mth, open_checkpoint, parse_vkey, root_from_inclusion
from test_verify_export import clean_env, verify_cli

CLI = [sys.executable, "-m", "recalled_lite.cli"]
CONFIG = """
[checkpoints]
interval_seconds = 3600.0
[retention]
min_days = 30
interval_minutes = 600.0
batch_size = {batch}
"""


def days_ago(days: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def post_batch(c, events: list[dict]) -> list[dict]:
    out = []
    for start in range(0, len(events), 500):
        r = c.post("/v1/events/batch", json={"events": events[start:start + 500]})
        assert r.status_code == 200, r.text
        out += r.json()["data"]
    return out


def run_job(c, timeout: float = 60.0) -> dict:
    r = c.post("/v1/retention/run", json={"reason": "test purge"})
    assert r.status_code == 202, r.text
    job = r.json()["data"]
    assert job["status"] == "running"
    return wait_job(c, job["id"], timeout)


def wait_job(c, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/retention/jobs/{job_id}").json()["data"]
        if job["status"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"the job did not finish: {job}")


def all_records(c) -> list[dict]:
    lines = c.get("/v1/exports", params={"format": "ndjson"}).text.splitlines()
    return [json.loads(line) for line in lines[:-1]]


def file_bytes(srv) -> bytes:
    """SQLite: the file and its WAL; PostgreSQL: every live row as text."""
    return srv.stored_bytes()


def cli_verify(srv) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["verify", "--db", srv.db_location], capture_output=True, text=True,
                          cwd=srv.workdir, env=clean_env(), timeout=120)


def test_purge_removes_exactly_the_expired_events_and_everything_still_verifies(make_server, tmp_path):
    srv = make_server("purge", args=["--dev"], config_text=CONFIG.format(batch=7))
    with srv.client() as c:
        assert c.put("/v1/retention/rules", json={"organization": "org_r", "days": 365}).status_code == 200
        # A more specific rule for one action prefix of the same organization keeps longer.
        assert c.put("/v1/retention/rules", json={"organization": "org_r", "action_prefix": "billing.*",
                                                  "days": 3650}).status_code == 200
        hold = c.post("/v1/legal_holds", json={"organization": "org_r", "actor_id": "held_user",
                                               "reason": "case 2026-17"})
        assert hold.status_code == 201, hold.text
        events = []
        for i in range(60):
            events += [
                {"action": f"doc.{i % 3}", "organization": "org_r", "occurred_at": days_ago(400 + i),
                 "actor": {"id": f"user_{i % 4}", "email": f"u{i}@example.com"},
                 "metadata": {"n": i, "note": f"purgedsecret{i}"},
                 "targets": [{"type": "doc", "id": f"d{i}"}]},                      # expired
                {"action": "doc.x", "organization": "org_r", "occurred_at": days_ago(300),
                 "actor": {"id": "user_1"}},                                         # within 365 days
                {"action": "billing.paid", "organization": "org_r", "occurred_at": days_ago(400),
                 "actor": {"id": "user_2"}},                                         # the 10-year rule
                {"action": "doc.y", "organization": "org_r", "occurred_at": days_ago(500),
                 "actor": {"id": "held_user"}},                                      # held
                {"action": "doc.z", "organization": "org_s", "occurred_at": days_ago(900),
                 "actor": {"id": "user_3"}},                                         # no rule: for ever
            ]
        stored = post_batch(c, events)
        expired = {e["id"] for e in stored[0::5]}
        kept = {e["id"] for k, e in enumerate(stored) if k % 5}
        head = c.post("/v1/checkpoint").json()["data"]
        before_records = all_records(c)
        size = head["treeSize"]
        assert len(before_records) == size

        assert b"purgedsecret" in file_bytes(srv)
        job = run_job(c)
        assert job["status"] == "completed", job
        assert job["purged"] == 60 and job["held"] == 60 and job["batches"] == 9  # 60 in batches of 7

        for event_id in list(expired)[:10]:
            assert c.get(f"/v1/events/{event_id}").status_code == 404
        listed = {e["id"] for e in c.get("/v1/events", params={"organization": "org_r", "limit": 200}).json()["data"]}
        listed |= {e["id"] for e in c.get("/v1/events", params={"organization": "org_s", "limit": 200}).json()["data"]}
        assert not (listed & expired) and kept <= listed
        assert c.get("/v1/events/search", params={"q": "u3@example.com"}).json()["data"] == []  # the index too

        # verify (API): valid, and the purged seqs are reported as ranges
        purged_seqs = sorted(e["seq"] for e in stored[0::5])
        verified = c.get("/v1/events/verify").json()["data"]
        assert verified["valid"], verified
        assert verified["purged"]["count"] == 60
        assert verified["purged"]["ranges"] == [[s, s] for s in purged_seqs]  # non-contiguous
        assert verified["checked"] + 60 == verified["head"]["seq"]
        # a range that starts right after a purged seq links to its tombstone
        ranged = c.get("/v1/events/verify", params={"from_seq": purged_seqs[3] + 1}).json()["data"]
        assert ranged["valid"], ranged

        status = c.get("/v1/retention/status").json()["data"]
        assert status["purged_total"] == 60
        [by_rule] = status["purged_by_rule"]
        assert by_rule["organization"] == "org_r" and by_rule["days"] == 365 and by_rule["purged"] == 60
        assert status["last_run"]["id"] == job["id"] and status["next_run_at"]
        assert status["oldest_retained_event"]["occurred_at"] <= days_ago(899)
        # the console overview shows the same (and counts the events kept, not the head seq)
        session = signed_in(srv.url, srv.key)
        try:
            overview = session.get("/console/").text
        finally:
            session.close()
        tile = overview[overview.index('id="t-retention"'):]
        tile = tile[:tile.index("</section>")]
        assert "60 events purged in all" in tile and "60 purged" in tile and status["last_run"]["finished_at"] in tile
        events_tile = overview[overview.index('id="t-events"'):]
        assert f'<p class="big">{verified["head"]["seq"] - 60:,}</p>' in events_tile[:300]

        # inclusion proofs of every remaining event, against the checkpoint signed BEFORE the purge
        vkey_text = c.get("/v1/checkpoint/key").json()["data"]["current"]
        vkey = parse_vkey(vkey_text)
        leaves = [event_leaf(r) for r in before_records]
        root = mth(leaves)
        assert base64.b64decode(head["rootHash"]) == root
        for index, record in enumerate(before_records):
            if record["id"] in expired:
                continue
            proof = c.get(f"/v1/events/{record['id']}/proof", params={"tree_size": size})
            assert proof.status_code == 200, proof.text
            path = [base64.b64decode(p) for p in proof.json()["data"]["proof"]]
            assert root_from_inclusion(index, size, leaves[index], path) == root
        # the tree grows on (the purge request was audited): consistency still proves it
        newer = c.post("/v1/checkpoint").json()["data"]
        assert newer["treeSize"] > size
        after_records = all_records(c)
        assert [r.get("purged", {}).get("seq") for r in after_records if "purged" in r] == purged_seqs
        new_leaves = [event_leaf(r["purged"] if "purged" in r else r) for r in after_records]
        assert new_leaves[:size] == leaves
        _, new_size, new_root = open_checkpoint(newer["checkpoint"], vkey)
        assert new_root == mth(new_leaves[:new_size])
        with srv.client(key=None) as anon:
            data = anon.get("/v1/checkpoint/consistency", params={"from": size, "to": new_size}).json()["data"]
            bundle = anon.get("/tile/entries/000" if new_size >= 256 else f"/tile/entries/000.p/{new_size}")
            assert bundle.status_code == 200, bundle.text  # entry bundles keep the purged entries
        assert consistent(size, new_size, root, new_root, [base64.b64decode(p) for p in data["proof"]])

        # offline export verification, in all three formats
        for fmt in ("ndjson", "json", "csv"):
            r = c.get("/v1/exports", params={"format": fmt})
            path = tmp_path / f"after.{fmt}"
            path.write_bytes(r.content)
            done = verify_cli(path, vkey_text, tmp_path)
            assert done.returncode == 0, (fmt, done.stdout, done.stderr)
            report = json.loads(done.stdout)["data"]
            assert report["complete"] and report["checkpoint"]["rootMatches"], report
            assert report["purged"]["count"] == 60 and report["purged"]["ranges"][0] == [purged_seqs[0]] * 2
        # a seq missing from the file with no purged record is not taken for a purge: the file
        # no longer proves the whole log (complete: false, the Merkle root is not claimed)
        lines = (tmp_path / "after.ndjson").read_text().splitlines(keepends=True)
        cut = [line for line in lines if f'"seq":{purged_seqs[5]},' not in line]
        assert len(cut) == len(lines) - 1
        (tmp_path / "cut.ndjson").write_text("".join(cut))
        report = json.loads(verify_cli(tmp_path / "cut.ndjson", vkey_text, tmp_path).stdout)["data"]
        assert not report["complete"] and report["purged"]["count"] == 59

    # verify (CLI), beside the running server
    done = cli_verify(srv)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["data"]["purged"]["count"] == 60
    assert "60 purged events are accounted for" in done.stderr

    # The purged text leaves the file (rows, index segments, WAL), as erased text does: the
    # index is merged in bounded steps after the job, freed pages are zeroed.
    deadline = time.monotonic() + 30
    while True:
        data = file_bytes(srv)
        if b"purgedsecret" not in data or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert b"purgedsecret" not in data


def test_a_row_deleted_behind_the_servers_back_is_tampering_not_a_purge(make_server):
    srv = make_server("tamper", args=["--dev"], config_text=CONFIG.format(batch=100))
    with srv.client() as c:
        assert c.put("/v1/retention/rules", json={"days": 30}).status_code == 200
        stored = post_batch(c, [{"action": "t.old", "occurred_at": days_ago(40)} for _ in range(5)]
                            + [{"action": "t.new"} for _ in range(5)])
        assert run_job(c)["purged"] == 5
        assert c.get("/v1/events/verify").json()["data"]["valid"]
    victim = stored[7]["seq"]
    if srv.on_postgres:
        _tamper_on_postgres(srv, stored, victim)
        return
    db = sqlite3.connect(srv.db_path)
    try:
        # The trigger refuses a plain DELETE, even of a purged-looking row ...
        with pytest.raises(sqlite3.DatabaseError, match="retention purge"):
            db.execute("DELETE FROM events WHERE seq = ?", (victim,))
        # ... and a forged tombstone does not open the door without the guard row.
        row = db.execute("SELECT hash, signature FROM events WHERE seq = ?", (victim,)).fetchone()
        with db:
            db.execute("INSERT INTO retention_tombstones VALUES (?, ?, ?, 99)", (victim, *row))
        with pytest.raises(sqlite3.DatabaseError, match="retention purge"):
            db.execute("DELETE FROM events WHERE seq = ?", (victim,))
    finally:
        db.close()
    # With the trigger dropped, the row goes: the forged tombstone is not covered by its
    # signed retention checkpoint (there is no checkpoint 99), so verify fails at that seq.
    subprocess.run(["sqlite3", "-cmd", ".timeout 10000", str(srv.db_path),
                    f"DROP TRIGGER events_append_only_delete; DELETE FROM events WHERE seq = {victim};"],
                   check=True, timeout=30)
    with srv.client() as c:
        result = c.get("/v1/events/verify").json()["data"]
    assert not result["valid"] and result["firstInvalid"]["seq"] == victim, result
    assert "not accounted for" in result["firstInvalid"]["reason"]
    # A deletion with no tombstone at all is a plain gap.
    other = stored[8]["seq"]
    subprocess.run(["sqlite3", "-cmd", ".timeout 10000", str(srv.db_path), f"DELETE FROM events WHERE seq = {other};"], check=True, timeout=30)
    with srv.client() as c:
        result = c.get("/v1/events/verify", params={"from_seq": victim + 1}).json()["data"]
    assert not result["valid"] and result["firstInvalid"]["reason"] == f"seq gap: expected {other}, found {other + 1}"
    done = cli_verify(srv)
    assert done.returncode == 2 and f"INVALID at seq {victim}" in done.stderr


def _tamper_on_postgres(srv, stored: list[dict], victim: int) -> None:
    """The same attack with the table owner's login: the triggers refuse a plain DELETE, and a
    forged tombstone does not open the door without the purge's transaction-local flag; with
    the triggers disabled the row goes, and verify names it."""
    import psycopg

    import pg_support

    url = srv.db_location
    with pytest.raises(psycopg.Error, match="append-only"):
        pg_support.execute(url, "DELETE FROM events WHERE seq = %s", (victim,))
    ((hash_, signature),) = srv.query("SELECT hash, signature FROM events WHERE seq = ?", victim)
    pg_support.execute(url, "INSERT INTO retention_tombstones VALUES (%s, %s, %s, 99)", (victim, hash_, signature))
    with pytest.raises(psycopg.Error, match="append-only"):
        pg_support.execute(url, "DELETE FROM events WHERE seq = %s", (victim,))
    pg_support.execute(url, f"ALTER TABLE events DISABLE TRIGGER USER; DELETE FROM events WHERE seq = {victim};")
    with srv.client() as c:
        result = c.get("/v1/events/verify").json()["data"]
    assert not result["valid"] and result["firstInvalid"]["seq"] == victim, result
    assert "not accounted for" in result["firstInvalid"]["reason"]
    other = stored[8]["seq"]
    pg_support.execute(url, "DELETE FROM events WHERE seq = %s", (other,))
    with srv.client() as c:
        result = c.get("/v1/events/verify", params={"from_seq": victim + 1}).json()["data"]
    assert not result["valid"] and result["firstInvalid"]["reason"] == f"seq gap: expected {other}, found {other + 1}"
    done = cli_verify(srv)
    assert done.returncode == 2 and f"INVALID at seq {victim}" in done.stderr


def test_a_purge_killed_mid_batch_resumes_after_restart(make_server):
    srv = make_server("crash", args=["--dev"], config_text=CONFIG.format(batch=50),
                      env={"RECALLED_TEST_RETENTION_PAUSE_MS": "300"})
    with srv.client() as c:
        assert c.put("/v1/retention/rules", json={"organization": "org_k", "days": 30}).status_code == 200
        events = []
        for i in range(1000):
            events.append({"action": "k.old", "organization": "org_k", "occurred_at": days_ago(31 + i % 50)})
            if i % 4 == 0:
                events.append({"action": "k.live", "organization": "org_k", "occurred_at": days_ago(29)})
        stored = post_batch(c, events)
        expired = {e["id"] for e in stored if e["action"] == "k.old"}
        live = {e["id"] for e in stored if e["action"] == "k.live"}
        job = c.post("/v1/retention/run", json={}).json()["data"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # A batch logs the test pause after its deletes, then holds its transaction open
            # 300 ms: one more pause line than committed batches means we are inside one.
            now = c.get(f"/v1/retention/jobs/{job['id']}").json()["data"]
            paused = srv.log_text().count("retention test pause")
            if now["batches"] >= 3 and paused == now["batches"] + 1:
                break
            time.sleep(0.01)
        assert now["status"] == "running" and paused == now["batches"] + 1, (now, paused)
    srv.kill()  # SIGKILL inside that batch's transaction
    srv.env.pop("RECALLED_TEST_RETENTION_PAUSE_MS")
    srv.start()
    with srv.client() as c:
        done = wait_job(c, job["id"])
        assert done["status"] == "completed" and done["purged"] == 1000, done
        assert done["batches"] == 20  # batches of 50: the killed one was rolled back whole and redone
        left = set()
        cursor = None
        while True:
            params = {"organization": "org_k", "limit": 200, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v1/events", params=params).json()
            left |= {e["id"] for e in page["data"]}
            cursor = page["nextCursor"]
            if not cursor:
                break
        assert not (left & expired) and left == live
        verified = c.get("/v1/events/verify").json()["data"]
        assert verified["valid"] and verified["purged"]["count"] == 1000, verified


def test_holds_shield_erasure_with_409(make_server):
    srv = make_server("holds", args=["--dev"], config_text=CONFIG.format(batch=100))
    with srv.client() as c:
        post_batch(c, [{"action": "h.x", "organization": "org_h", "actor": {"id": "alice"}},
                       {"action": "h.x", "organization": "org_h", "actor": {"id": "bob"}}])
        hold = c.post("/v1/legal_holds", json={"organization": "org_h", "actor_id": "alice", "reason": "litigation"})
        hold_id = hold.json()["data"]["id"]
        refused = c.delete("/v1/actors/alice", params={"organization": "org_h"})
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "LEGAL_HOLD"
        assert refused.json()["error"]["details"]["hold_id"] == hold_id
        assert c.delete("/v1/actors/bob").json()["data"]["anonymized_events"] == 1  # not held
        listed = c.get("/v1/legal_holds").json()["data"]
        assert [h["id"] for h in listed] == [hold_id] and listed[0]["active"]
        assert c.delete(f"/v1/legal_holds/{hold_id}").json()["data"]["active"] is False
        assert c.get("/v1/legal_holds").json()["data"] == []
        assert c.delete("/v1/actors/alice").json()["data"]["anonymized_events"] == 1
        actions = [e["action"] for e in c.get("/v1/events", params={"action": "recalled.legal_hold.*"}).json()["data"]]
        assert actions == ["recalled.legal_hold.released", "recalled.legal_hold.created"]


def test_bound_keys_stay_in_their_organization_and_the_floor_holds(make_server):
    srv = make_server("walls", args=["--dev"], config_text=CONFIG.format(batch=100))
    key_a = srv.create_key(["retention:manage"], organization="org_a")
    key_b = srv.create_key(["retention:manage"], organization="org_b")
    with srv.client(key=key_a) as a, srv.client(key=key_b) as b, srv.client() as admin:
        rule = a.put("/v1/retention/rules", json={"days": 90})
        assert rule.status_code == 200 and rule.json()["data"]["organization"] == "org_a"
        rule_id = rule.json()["data"]["id"]
        hold = a.post("/v1/legal_holds", json={"organization": "org_a", "reason": "audit"}).json()["data"]
        # B cannot see A's rules or holds ...
        assert b.get("/v1/retention/rules").json()["data"] == []
        assert b.get("/v1/legal_holds").json()["data"] == []
        assert "org_a" not in b.get("/v1/retention/status").text
        # ... nor change them
        assert b.put("/v1/retention/rules", json={"organization": "org_a", "days": 30}).status_code == 403
        assert b.delete(f"/v1/retention/rules/{rule_id}").status_code == 404
        assert b.post("/v1/legal_holds", json={"organization": "org_a", "reason": "x"}).status_code == 403
        assert b.delete(f"/v1/legal_holds/{hold['id']}").status_code == 404
        assert b.post("/v1/retention/run").status_code == 403  # a purge spans every organization
        assert [r["days"] for r in admin.get("/v1/retention/rules").json()["data"]] == [90]
        # the floor (min_days = 30) and bad input: 400 with the error shape, never a 500
        for body in ({"days": 29}, {"days": -1}, {"days": "x"}, {"days": 40, "action_prefix": "a*b"},
                     {"days": 40, "bogus": 1}, {}):
            r = a.put("/v1/retention/rules", json=body)
            assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR", (body, r.text)
        assert a.put("/v1/retention/rules", json={"days": 29}).json()["error"]["details"]["min_days"] == 30
        assert a.post("/v1/legal_holds", json={"organization": "org_a"}).status_code == 400
        # deleting works for the owner, and is audited
        assert a.delete(f"/v1/retention/rules/{rule_id}").status_code == 200
        actions = [e["action"] for e in admin.get("/v1/events", params={"action": "recalled.retention.*"}).json()["data"]]
        assert actions == ["recalled.retention.rule_deleted", "recalled.retention.rule_set"]


@pytest.mark.sqlite_only("SQLite's auto_vacuum mode of an old file")
def test_an_old_database_keeps_its_vacuum_mode_until_it_opts_in(tmp_path):
    from recalled_lite.storage.sqlite.connection import open_writer

    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE t(a)")  # a file made before auto_vacuum was set: mode NONE
    db.commit()
    db.close()
    for path, mode in ((old, 0), (tmp_path / "new.db", 2)):
        conn = open_writer(path, synchronous="FULL", busy_timeout_ms=1000, cache_mb=2)
        conn.execute("CREATE TABLE IF NOT EXISTS u(a)")
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == mode, path
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


@pytest.mark.sqlite_only("SQLite page and freelist counts after incremental vacuum; PostgreSQL leaves "
                         "space to autovacuum")
def test_a_new_database_gets_its_space_back_after_a_purge(make_server, tmp_path):
    from conftest import ServerProcess

    # A new database is created with auto_vacuum=INCREMENTAL (no opt-in needed).
    srv = ServerProcess(tmp_path / "vacuum", args=["--dev"], config_text=CONFIG.format(batch=500)).start()
    try:
        with srv.client() as c:
            assert c.put("/v1/retention/rules", json={"days": 30}).status_code == 200
            post_batch(c, [{"action": "v.old", "occurred_at": days_ago(60), "metadata": {"pad": "x" * 400, "i": i}}
                           for i in range(3000)])
            post_batch(c, [{"action": "v.new"}])
            c.post("/v1/checkpoint")

            def pages() -> tuple[int, int]:
                db = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True)
                try:
                    return (db.execute("PRAGMA page_count").fetchone()[0],
                            db.execute("PRAGMA freelist_count").fetchone()[0])
                finally:
                    db.close()

            before, _ = pages()
            assert run_job(c)["purged"] == 3000
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                after, free = pages()
                if after < before * 0.6 and free == 0:
                    break
                time.sleep(0.2)
            assert after < before * 0.6 and free == 0, (before, after, free)
            assert c.get("/v1/events/verify").json()["data"]["valid"]
    finally:
        srv.kill()
