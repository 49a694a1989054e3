"""`recalled-lite migrate-to-postgres` (issue #15, must-show 5): a 100k-event SQLite log,
written by a real SQLite server, copied by the real command into a fresh PostgreSQL database,
compared row by row with its source, then served by a PostgreSQL server with the same
secret. The sources are SQLite servers on both test passes (RECALLED_TEST_BACKEND)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import ServerProcess
from pg_support import create_database, drop_database
from test_proofs_independent import b64d, consistent, open_checkpoint, parse_vkey
from test_verify_export import verify_cli

EVENTS = 100_000
BATCH = 1000
ORGS = ["org_acme", "org_globex", "org_initech"]
ACTIONS = ["invoice.paid", "invoice.created", "user.signed_in", "user.deleted", "project.archived"]
ERASED_ACTOR = "usr_7"
CLI = [sys.executable, "-m", "recalled_lite.cli"]
# Reads the SQLite server answers before the move and the PostgreSQL server must answer the
# same after it: full-text words, phrases, prefixes, qualifiers, the erased actor, list filters.
READS = [
    ("/v1/events/search", {"q": "cafe", "limit": 25}),
    ("/v1/events/search", {"q": '"payment number 4242"'}),
    ("/v1/events/search", {"q": "Invoice action:invoice.* -org:org_acme", "limit": 30}),
    ("/v1/events/search", {"q": f"{ERASED_ACTOR}"}),
    ("/v1/events/search", {"q": "deleted -action:user.deleted", "limit": 10}),
    ("/v1/events/search", {"q": "u8@example.com target:invoice:inv_8", "limit": 10}),
    ("/v1/events/search", {"q": "paym* actor:usr_9", "limit": 10}),
    ("/v1/events", {"organization": "org_globex", "action": "user.signed_in", "limit": 20}),
    ("/v1/events", {"actor_id": "usr_3", "target_type": "invoice", "limit": 20}),
    ("/v1/events", {"actor_id": ERASED_ACTOR}),
]


def event(i: int) -> dict:
    body = {
        "action": ACTIONS[i % len(ACTIONS)],
        "organization": ORGS[i % len(ORGS)],
        "actor": {"type": "user", "id": f"usr_{i % 40}", "name": f"User {i % 40}", "email": f"u{i % 40}@example.com"},
        "targets": [{"type": "invoice", "id": f"inv_{i % 997}", "name": f"Invoice {i}"}],
        "metadata": {"amount": i, "note": f"payment number {i} for café Ünïcode", "nested": {"k": [i, "x"]}},
        "ip_address": "203.0.113.7",
        "user_agent": "pg-migrate-test",
    }
    if i % 100 == 0:
        body["idempotency_key"] = f"key-{i}"
    return body


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # stdin/stdout/stderr are pipes: no terminal, as under nohup or in a CI job.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
    clean.update(env or {})
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=900, env=clean,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A stopped SQLite server's log: 100k events plus what the server wrote itself."""
    srv = ServerProcess(tmp_path_factory.mktemp("sqlite-source"), args=["--dev"], backend="sqlite").start()
    try:
        sample_ids = []
        with srv.client(timeout=120) as c:
            for start in range(0, EVENTS, BATCH):
                r = c.post("/v1/events/batch", json={"events": [event(i) for i in range(start, start + BATCH)]})
                assert r.status_code == 200, r.text
                if start in (0, BATCH * 7, EVENTS // 2, EVENTS - BATCH):
                    sample_ids += [e["id"] for e in r.json()["data"][:9]]
            # A replayed idempotency key is answered from the stored event, not appended.
            again = c.post("/v1/events", json=event(500))
            assert again.status_code == 200 and again.json()["deduplicated"] is True
            erased = c.delete(f"/v1/actors/{ERASED_ACTOR}")
            assert erased.status_code == 200 and erased.json()["data"]["anonymized_events"] == EVENTS // 40
            sub = c.post("/v1/event_subscriptions", json={"url": "http://127.0.0.1:9/hook", "description": "copied"})
            assert sub.status_code in (200, 201), sub.text
            c.post("/v1/events", json={"action": "after.subscription", "organization": ORGS[0]}).raise_for_status()
            made = c.post("/v1/checkpoint")
            assert made.status_code == 200, made.text
            checkpoint = c.get("/v1/checkpoint").text
            verifier = c.get("/v1/checkpoint/key").json()
            newest = c.get("/v1/events", params={"limit": 20}).json()
            # Events as the SQLite server serves them after the erasure: some erased, some not.
            sample = {i: c.get(f"/v1/events/{i}").json()["data"] for i in sample_ids}
            reads = []
            for path, params in READS:
                r = c.get(path, params=params)
                assert r.status_code == 200, (path, params, r.text)
                reads.append(r.json()["data"])
            assert reads[0] and reads[1] and reads[2] and not reads[3] and not reads[4] and not reads[-1]
    finally:
        srv.stop()
    yield {"server": srv, "checkpoint": checkpoint, "subscription": sub.json()["data"]["id"],
           "verifier": verifier, "newest": newest, "sample": sample, "reads": reads}


@pytest.fixture(scope="module")
def migrated(source):
    url = create_database("migrate")
    try:
        result = run_cli("migrate-to-postgres", "--from", str(source["server"].db_path), "--to", url)
        yield url, result
    finally:
        drop_database(url)


def sqlite_rows(path, sql):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def pg_rows(url, sql):
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_the_copy_verifies_and_shows_progress_without_a_terminal(source, migrated):
    url, result = migrated
    assert result.returncode == 0, result.stderr
    # No terminal: plain progress lines (one per tenth), not carriage-return bars.
    assert "\r" not in result.stderr
    assert "copying (rows): " in result.stderr and "(100%)" in result.stderr
    assert "verifying the copy (events): " in result.stderr
    assert "OK: " in result.stderr and "events copied and verified" in result.stderr
    import json

    data = json.loads(result.stdout)["data"]
    assert data["verify"]["valid"] is True and data["verify"]["rootMatchesSource"] is True
    assert data["verify"]["chain"]["checked"] == data["copied"]["head"]["seq"]
    assert data["copied"]["tables"]["events"] > EVENTS  # plus the server's own audit events


def test_same_ids_seqs_hashes_and_totals(source, migrated):
    url, result = migrated
    assert result.returncode == 0, result.stderr
    db = source["server"].db_path
    columns = ("seq, id, organization, action, actor_id, actor_name, actor_email, targets, metadata, "
               "occurred_at, received_at, idempotency_key, prev_hash, hash, signature, personal_digest, erased_at")
    sample = "WHERE seq % 997 = 1 OR seq > (SELECT max(seq) - 50 FROM events) ORDER BY seq"
    theirs = sqlite_rows(db, f"SELECT {columns} FROM events {sample}")
    ours = pg_rows(url, f"SELECT {columns} FROM events {sample}")
    assert len(theirs) >= EVENTS // 997 + 50 and ours == theirs
    salts = "SELECT seq, personal_salt FROM events WHERE seq % 4999 = 3 ORDER BY seq"
    assert [(s, bytes(v) if v is not None else None) for s, v in pg_rows(url, salts)] == sqlite_rows(db, salts)
    for table in ("events", "api_keys", "checkpoints", "signing_keys", "merkle_tiles", "webhook_subscriptions",
                  "webhook_messages", "webhook_attempts"):
        count = f"SELECT count(*) FROM {table}"
        assert pg_rows(url, count) == sqlite_rows(db, count), table
    subs = "SELECT id, url, secret, state, description FROM webhook_subscriptions ORDER BY id"
    assert pg_rows(url, subs) == sqlite_rows(db, subs) and pg_rows(url, subs)[0][0] == source["subscription"]
    erased = "SELECT count(*) FROM events WHERE erased_at IS NOT NULL"
    assert pg_rows(url, erased) == sqlite_rows(db, erased) == [(EVENTS // 40,)]
    head = sqlite_rows(db, "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")[0]
    assert pg_rows(url, "SELECT seq, hash FROM chain_head") == [head]
    keyed = pg_rows(url, "SELECT count(*) FROM events WHERE idempotency_key IS NOT NULL")
    assert keyed == [(EVENTS // 100,)]
    # The filter keys and the full-text document exist for every event, and erasure's
    # effect is kept: the erased actor's id names no key and no lexeme any more.
    assert pg_rows(url, "SELECT count(*) FROM events WHERE keys = '{}' OR search = ''::tsvector") == [(0,)]
    gone = pg_rows(url, f"SELECT count(*) FROM events WHERE search @@ '{ERASED_ACTOR}'::tsquery")
    assert gone == [(0,)]
    assert pg_rows(url, "SELECT count(*) FROM events WHERE search @@ 'usr_8'::tsquery") == [(EVENTS // 40,)]
    assert pg_rows(url, "SELECT value FROM meta WHERE key = 'project_id'") == sqlite_rows(
        db, "SELECT value FROM meta WHERE key = 'project_id'")


def test_a_non_empty_target_is_refused(source, migrated):
    url, first = migrated
    assert first.returncode == 0, first.stderr
    before = pg_rows(url, "SELECT count(*), max(seq) FROM events")
    again = run_cli("migrate-to-postgres", "--from", str(source["server"].db_path), "--to", url)
    assert again.returncode == 2
    assert "is not empty" in again.stderr and "already holds a recalled-lite log" in again.stderr
    assert "create a new database" in again.stderr
    assert pg_rows(url, "SELECT count(*), max(seq) FROM events") == before


def test_a_wrong_secret_is_refused_before_anything_is_written(source, tmp_path):
    url = create_database("wrongsecret")
    try:
        wrong = tmp_path / "wrong.secret"
        wrong.write_text("00" * 32)
        os.chmod(wrong, 0o600)
        result = run_cli("migrate-to-postgres", "--from", str(source["server"].db_path), "--to", url,
                         "--secret-file", str(wrong))
        assert result.returncode == 2, result.stderr
        assert "secret is not the one" in result.stderr
        assert pg_rows(url, "SELECT count(*) FROM pg_tables WHERE tablename = 'events'") == [(0,)]
    finally:
        drop_database(url)


def test_a_source_with_a_running_server_is_refused(make_server):
    srv = make_server("running", backend="sqlite")
    with srv.client() as c:
        c.post("/v1/events", json={"action": "still.serving"}).raise_for_status()
    url = create_database("running")
    try:
        result = run_cli("migrate-to-postgres", "--from", str(srv.db_path), "--to", url)
        assert result.returncode == 2, result.stderr
        assert "is already serving" in result.stderr and "stop it first" in result.stderr
        assert pg_rows(url, "SELECT count(*) FROM pg_tables WHERE tablename = 'events'") == [(0,)]
    finally:
        drop_database(url)


def test_a_target_that_is_not_postgresql_is_refused(source, tmp_path):
    result = run_cli("migrate-to-postgres", "--from", str(source["server"].db_path), "--to", str(tmp_path / "x.db"))
    assert result.returncode == 2 and "expected a PostgreSQL URL" in result.stderr


def test_a_postgresql_server_with_the_same_secret_serves_the_copy(source, migrated, tmp_path):
    url, result = migrated
    assert result.returncode == 0, result.stderr
    db = source["server"].db_path
    config = tmp_path / "pg.toml"
    config.write_text(f'[server]\nsecret_file = "{db}.secret"\n\n[checkpoints]\nsigning_key_file = "{db}.signing-key"\n')
    # The bootstrap key is the SQLite server's: it was copied with the other keys.
    # backend="sqlite" only keeps the fixture from making a database of its own: the later
    # --db URL is the one serve takes.
    srv = ServerProcess(tmp_path / "pg", args=["--db", url, "--config", str(config)], backend="sqlite").start(timeout=60)
    try:
        with srv.client(timeout=120) as c:
            for event_id, served in source["sample"].items():
                assert c.get(f"/v1/events/{event_id}").json()["data"] == served
            assert c.get("/v1/events", params={"limit": 20}).json()["data"] == source["newest"]["data"]
            for (path, params), before in zip(READS, source["reads"]):
                assert c.get(path, params=params).json()["data"] == before, (path, params)
            verify = c.get("/v1/events/verify").json()["data"]
            head = sqlite_rows(db, "SELECT max(seq) FROM events")[0][0]
            assert verify["valid"] is True and verify["checked"] == head, verify
            # The same tree, signed by the same key: the latest checkpoint is the copied one.
            assert c.get("/v1/checkpoint/key").json() == source["verifier"]
            assert c.get("/v1/checkpoint").text == source["checkpoint"]
            last = sqlite_rows(db, "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")[0]
            new = c.post("/v1/events", json={"action": "after.migration", "organization": ORGS[1]}).json()["data"]
            assert (new["seq"], new["prevHash"]) == (last[0] + 1, last[1])
            assert c.get("/v1/events/verify").json()["data"]["valid"] is True
            made = c.post("/v1/checkpoint").json()["data"]
            assert made["treeSize"] == new["seq"]
            # The tree signed before the move is a prefix of the one signed after it, under the
            # same key (checked here with the independent verifier of test_proofs_independent).
            vkey_text = source["verifier"]["data"]["current"]
            vkey = parse_vkey(vkey_text)
            _, m, root_m = open_checkpoint(source["checkpoint"], vkey)
            _, n, root_n = open_checkpoint(c.get("/v1/checkpoint").text, vkey)
            assert n == new["seq"] > m
            proof = c.get("/v1/checkpoint/consistency", params={"from": m, "to": n}).json()["data"]["proof"]
            assert consistent(m, n, root_m, root_n, b64d(proof))
            # An export from the PostgreSQL server verifies offline with that key.
            export = tmp_path / "after.ndjson"
            export.write_bytes(c.get("/v1/exports", params={"format": "ndjson"}).content)
            checked = verify_cli(export, vkey_text, tmp_path)
            assert checked.returncode == 0, checked.stderr
    finally:
        srv.kill()


RETENTION_CONFIG = """
[checkpoints]
interval_seconds = 3600.0
[retention]
min_days = 30
interval_minutes = 600.0
batch_size = 7
"""


def days_ago(days: float) -> str:
    from datetime import datetime, timedelta, timezone

    return (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@pytest.fixture(scope="module")
def purged_source(tmp_path_factory):
    """A small log where a retention purge removed 40 old events (tombstones, retention
    checkpoints) and a legal hold kept some."""
    import time

    srv = ServerProcess(tmp_path_factory.mktemp("purged-source"), args=["--dev"], config_text=RETENTION_CONFIG,
                        backend="sqlite").start()
    try:
        with srv.client(timeout=60) as c:
            old = [{"action": "billing.old", "organization": "org_r", "occurred_at": days_ago(400 + i),
                    "actor": {"id": f"a{i % 3}"}} for i in range(40)]
            held = [{"action": "billing.held", "organization": "org_h", "occurred_at": days_ago(500)}] * 5
            recent = [{"action": "billing.new", "organization": "org_r"} for _ in range(20)]
            for events in (old, held, recent):
                assert c.post("/v1/events/batch", json={"events": events}).status_code == 200
            assert c.put("/v1/retention/rules", json={"days": 365}).status_code == 200
            assert c.post("/v1/legal_holds", json={"organization": "org_h", "reason": "case 7"}).status_code in (200, 201)
            job = c.post("/v1/retention/run", json={"reason": "before the move"}).json()["data"]
            deadline = time.monotonic() + 60
            while job["status"] == "running" and time.monotonic() < deadline:
                time.sleep(0.05)
                job = c.get(f"/v1/retention/jobs/{job['id']}").json()["data"]
            assert job["status"] == "completed" and job["purged"] == 40, job
            c.post("/v1/checkpoint").raise_for_status()
            verify = c.get("/v1/events/verify").json()["data"]
            assert verify["valid"] is True and verify["purged"]["count"] == 40
    finally:
        srv.stop()
    return srv, verify


def test_a_purged_log_is_copied_with_its_tombstones_and_verifies(purged_source, tmp_path):
    srv, verify_before = purged_source
    url = create_database("purged")
    try:
        result = run_cli("migrate-to-postgres", "--from", str(srv.db_path), "--to", url)
        assert result.returncode == 0, result.stderr
        import json

        data = json.loads(result.stdout)["data"]
        assert data["verify"]["purgedAccountedFor"] == 40 and data["verify"]["valid"] is True
        assert data["verify"]["chain"]["purged"] == verify_before["purged"]
        for table in ("retention_rules", "legal_holds", "retention_jobs", "retention_checkpoints",
                      "retention_tombstones", "retention_purged"):
            count = f"SELECT count(*) FROM {table}"
            assert pg_rows(url, count) == sqlite_rows(srv.db_path, count) != [(0,)], table
        config = tmp_path / "pg.toml"
        config.write_text(RETENTION_CONFIG.replace("[retention]", f'signing_key_file = "{srv.db_path}.signing-key"\n'
                                                   f'[server]\nsecret_file = "{srv.db_path}.secret"\n[retention]'))
        pg_srv = ServerProcess(tmp_path / "pg", args=["--db", url, "--config", str(config)],
                               backend="sqlite").start(timeout=60)
        try:
            with pg_srv.client() as c:
                after = c.get("/v1/events/verify").json()["data"]
                assert after["valid"] is True and after["purged"] == verify_before["purged"]
                assert after["checked"] == verify_before["checked"]
        finally:
            pg_srv.kill()
    finally:
        drop_database(url)


def test_the_copy_verification_can_fail(purged_source):
    """What verify_copy checks, broken one at a time on a good copy (triggers off: only the
    table owner can, and the server never does)."""
    import psycopg

    from recalled_lite.errors import ConfigError
    from recalled_lite.storage.postgres.copy import verify_copy
    from recalled_lite.storage.sqlite.dump import SqliteDump

    srv, _ = purged_source
    url = create_database("tamper")
    try:
        assert run_cli("migrate-to-postgres", "--from", str(srv.db_path), "--to", url).returncode == 0
        secret = (srv.db_path.parent / "recalled.db.secret").read_text().strip().encode()
        dump = SqliteDump(srv.db_path)
        try:
            expected = {"tables": {t: dump.count(t) for t in ("meta", "events", "merkle_tiles")},
                        "head": dict(zip(("seq", "hash"), dump.head())), "treeSize": dump.tree_size()}
            expected["tables"]["meta"] = len(dump.meta())
            root = dump.tree_root(expected["treeSize"])
        finally:
            dump.close()
        assert verify_copy(url, secret, expected, root)["valid"] is True

        def broken(sql: str, table: str) -> dict:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
                conn.execute(sql)
                conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            return verify_copy(url, secret, expected, root)

        seq, action = pg_rows(url, "SELECT seq, action FROM events ORDER BY seq DESC LIMIT 1")[0]
        bad = broken(f"UPDATE events SET action = 'billing.forged' WHERE seq = {seq}", "events")
        assert bad["valid"] is False and bad["chain"]["firstInvalid"]["reason"] == "hash mismatch"
        broken(f"UPDATE events SET action = '{action}' WHERE seq = {seq}", "events")
        assert verify_copy(url, secret, expected, root)["valid"] is True
        stone = broken("DELETE FROM retention_tombstones WHERE seq = (SELECT min(seq) FROM retention_tombstones)",
                       "retention_tombstones")
        assert stone["valid"] is False and "purged seq not accounted for" in stone["chain"]["firstInvalid"]["reason"] \
            or stone["chain"]["firstInvalid"]["reason"].startswith("seq gap")
        tile = broken("UPDATE merkle_tiles SET hashes = '\\x00'::bytea || substr(hashes, 2) "
                      "WHERE level = 0 AND idx = 0 AND strip = 0", "merkle_tiles")
        assert tile["valid"] is False and tile["rootMatchesSource"] is False
        with pytest.raises(ConfigError, match="secret check does not match"):
            verify_copy(url, b"x" * 64, expected, root)
    finally:
        drop_database(url)


def test_an_unreachable_target_is_refused_without_showing_its_password(source):
    url = "postgresql://recalled:not-the-password@127.0.0.1:5432/does_not_exist"
    result = run_cli("migrate-to-postgres", "--from", str(source["server"].db_path), "--to", url)
    assert result.returncode == 2 and "cannot connect to postgresql://recalled:[redacted]@" in result.stderr
    assert "not-the-password" not in result.stderr + result.stdout
