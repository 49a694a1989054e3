"""The real server on a fresh PostgreSQL database: intake, reads, idempotency, chain and
tree, crash safety (storage/postgres/). Skipped without RECALLED_TEST_PG_URL (pg_support)."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import httpx
import pytest

from conftest import ServerProcess
from pg_reads_support import drop_pg
from pg_support import create_database


@pytest.fixture
def pg_server(tmp_path):
    """A server on its own fresh database, started with `--db postgresql://...`."""
    url = create_database("srv")
    servers: list[ServerProcess] = []

    def start(name: str = "srv", **kwargs) -> ServerProcess:
        srv = ServerProcess(tmp_path / name, args=["--db", url, *kwargs.pop("args", [])], **kwargs)
        servers.append(srv)
        return srv.start()

    start.url = url  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for srv in servers:
            srv.kill()
        drop_pg(url)


def test_single_and_batch_events_round_trip(pg_server):
    srv = pg_server()
    with srv.client() as c:
        one = c.post("/v1/events", json={"action": "invoice.paid", "organization": "org_a",
                                         "actor": {"type": "user", "id": "u1"},
                                         "targets": [{"type": "invoice", "id": "inv_1"}],
                                         "metadata": {"amount": 42}})
        assert one.status_code == 200, one.text
        event = one.json()["data"]
        batch = c.post("/v1/events/batch", json={"events": [{"action": "b.one"}, {"action": "b.two"}]})
        assert batch.status_code == 200, batch.text
        assert [e["action"] for e in batch.json()["data"]] == ["b.one", "b.two"]

        got = c.get(f"/v1/events/{event['id']}")
        assert got.status_code == 200, got.text
        assert got.json()["data"] == event
        assert c.get("/v1/events/evt_00000000000000000000000000").status_code == 404

        listed = c.get("/v1/events", params={"limit": 2})
        assert listed.status_code == 200, listed.text
        page = listed.json()
        assert [e["action"] for e in page["data"]] == ["b.two", "b.one"]
        rest = c.get("/v1/events", params={"limit": 10, "cursor": page["nextCursor"]}).json()
        assert [e["action"] for e in rest["data"]] == ["invoice.paid", "recalled.key.created"]
        by_target = c.get("/v1/events", params={"target_type": "invoice", "target_id": "inv_1"}).json()
        assert [e["id"] for e in by_target["data"]] == [event["id"]]

        verified = c.get("/v1/events/verify").json()["data"]
        assert verified["valid"] is True and verified["checked"] == 4
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["data"]["seq"] == 4


def test_idempotent_replay_and_conflict(pg_server):
    srv = pg_server()
    body = {"action": "order.created", "organization": "org_i", "idempotency_key": "key-1"}
    with srv.client() as c:
        first = c.post("/v1/events", json=body)
        again = c.post("/v1/events", json=body)
        assert first.status_code == again.status_code == 200
        assert again.json()["deduplicated"] is True
        assert again.json()["data"]["id"] == first.json()["data"]["id"]
        # Another organization is another scope: the same key stores a new event.
        other = c.post("/v1/events", json={**body, "organization": "org_j"})
        assert other.json()["deduplicated"] is False
        conflict = c.post("/v1/events", json={**body, "action": "order.cancelled"})
        assert conflict.status_code == 409, conflict.text
        assert conflict.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"  # as on SQLite (tests/test_idempotency.py)


def test_sixteen_concurrent_requests_with_one_key_store_one_event(pg_server):
    srv = pg_server()
    body = {"action": "race.won", "organization": "org_race", "idempotency_key": "one-key"}

    def post(_: int) -> tuple[int, str, bool]:
        with srv.client() as c:
            r = c.post("/v1/events", json=body)
            return r.status_code, r.json()["data"]["id"], r.json()["deduplicated"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(post, range(16)))
    assert {status for status, _, _ in results} == {200}
    assert len({event_id for _, event_id, _ in results}) == 1
    assert sum(1 for _, _, dedup in results if not dedup) == 1
    with srv.client() as c:
        stored = c.get("/v1/events", params={"organization": "org_race"}).json()["data"]
        assert len(stored) == 1


def test_sigkill_under_load_loses_no_acknowledged_event(pg_server):
    srv = pg_server()
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {srv.key}"}, timeout=5) as c:
            i = 0
            while not stop.is_set():
                try:
                    r = c.post("/v1/events", json={"action": f"load.w{n}", "metadata": {"i": i}})
                except httpx.TransportError:
                    return
                if r.status_code == 200:
                    with lock:
                        acknowledged.append(r.json()["data"]["id"])
                i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.kill()
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged) >= 200
    srv.start()
    with srv.client() as c:
        seen: set[str] = set()
        after = 0
        while True:
            page = c.get("/v1/events", params={"after_seq": after, "limit": 100}).json()["data"]
            if not page:
                break
            seen.update(e["id"] for e in page)
            after = page[-1]["seq"]
        missing = set(acknowledged) - seen
        assert not missing, f"{len(missing)} acknowledged events lost"
        verified = c.get("/v1/events/verify").json()["data"]
        assert verified["valid"] is True


def test_checkpoint_and_inclusion_proof(pg_server):
    srv = pg_server(config_text="[checkpoints]\ninterval_seconds = 3600.0\n")
    with srv.client() as c:
        events = c.post("/v1/events/batch", json={"events": [{"action": f"proof.{i}"} for i in range(40)]})
        assert events.status_code == 200, events.text
        signed = c.post("/v1/checkpoint")
        assert signed.status_code == 200, signed.text
        newest = c.get("/v1/events", params={"limit": 1}).json()["data"][0]
        assert signed.json()["data"]["treeSize"] == newest["seq"]
        proof = c.get(f"/v1/events/{events.json()['data'][3]['id']}/proof", params={"tree_size": newest["seq"]})
        assert proof.status_code == 200, proof.text
        assert proof.json()["data"]["leafIndex"] == events.json()["data"][3]["seq"] - 1
    with srv.client(key=None) as anon:
        consistency = anon.get("/v1/checkpoint/consistency", params={"from": 7})
        assert consistency.status_code == 200, consistency.text
        assert consistency.json()["data"]["to"] == newest["seq"]
        tile = anon.get("/tile/0/000.p/" + str(newest["seq"]))
        assert tile.status_code == 200 and len(tile.content) == 32 * newest["seq"]


def _cli(args: list[str], cwd, **env: str):
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "recalled_lite.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=clean, timeout=120)


def test_the_cli_works_on_a_url_and_never_prints_its_password(pg_server):
    srv = pg_server()
    url = pg_server.url
    password = url.split("@")[0].rsplit(":", 1)[1]
    with srv.client() as c:
        assert c.post("/v1/events/batch", json={"events": [{"action": "cli.x"}] * 5}).status_code == 200
    # The secret is ./recalled.secret in the server's working directory (never in the database).
    assert (srv.workdir / "recalled.secret").is_file() and not (srv.workdir / "recalled.db").exists()

    verify = _cli(["verify", "--db", url], srv.workdir)
    assert verify.returncode == 0, verify.stderr
    assert "OK: 6 events verified" in verify.stderr

    created = _cli(["keys", "create", "--db", url, "--name", "cli", "--scopes", "events:read"], srv.workdir,
                   RECALLED_DB=url)
    assert created.returncode == 0, created.stderr
    plaintext = next(line.strip() for line in (created.stdout + created.stderr).splitlines()
                     if line.strip().startswith("rec_live_"))
    with srv.client(key=plaintext) as c:  # a key another process created: found on the first miss
        assert c.get("/v1/events", params={"limit": 1}).status_code == 200

    backup = _cli(["backup", "--db", url, str(srv.workdir / "copy.db")], srv.workdir)
    assert backup.returncode == 2
    assert "pg_dump" in backup.stderr and not (srv.workdir / "copy.db").exists()

    migrate = _cli(["migrate", "--db", url], srv.workdir)
    assert migrate.returncode == 0, migrate.stderr

    wrong = _cli(["verify", "--db", url.rsplit("/", 1)[0] + "/rl_no_such_database"], srv.workdir)
    assert wrong.returncode == 2 and "cannot connect" in wrong.stderr

    for text in (verify.stderr + verify.stdout, created.stderr, backup.stderr, migrate.stderr, wrong.stderr,
                 srv.log_text()):
        assert f":{password}@" not in text
    assert "[redacted]" in srv.log_text()


def test_serve_makes_a_secret_only_for_a_database_without_a_log(pg_server, tmp_path):
    first = pg_server("first")
    with first.client() as c:
        assert c.post("/v1/events", json={"action": "secret.first"}).status_code == 200
    # A second instance elsewhere without the secret file: refused, and no secret made up for
    # a log that has one (it would sign nothing that verifies).
    second = ServerProcess(tmp_path / "second", args=["--db", pg_server.url])
    with pytest.raises(RuntimeError, match="no server secret"):
        second.start()
    assert not (second.workdir / "recalled.secret").exists()
    # With the same secret (and signing key) it serves the same log beside the first.
    for name in ("recalled.secret", "recalled.signing-key"):
        (second.workdir / name).write_bytes((first.workdir / name).read_bytes())
    second.start()
    try:
        with second.client() as c:
            assert c.post("/v1/events", json={"action": "secret.second"}).status_code == 200
            assert [e["action"] for e in c.get("/v1/events", params={"limit": 2}).json()["data"]] == \
                ["secret.second", "secret.first"]
            assert c.get("/v1/events/verify").json()["data"]["valid"] is True
    finally:
        second.kill()
    # Another secret on the same log: refused with SQLite's message.
    third = ServerProcess(tmp_path / "third", args=["--db", pg_server.url])
    (third.workdir / "recalled.secret").write_text("x" * 64 + "\n")
    (third.workdir / "recalled.secret").chmod(0o600)
    with pytest.raises(RuntimeError, match="server.secret does not match"):
        third.start()


def test_the_server_recovers_when_postgresql_drops_its_connections(pg_server):
    import psycopg

    srv = pg_server()
    with srv.client() as c:
        assert c.post("/v1/events", json={"action": "before.drop"}).status_code == 200
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                                  "datname = current_database() AND application_name LIKE 'recalled-lite%' "
                                  "AND pid <> pg_backend_pid()").fetchone()[0]
        assert ended >= 2  # the writer and at least one reader
        # At most one answer per connection may be a 503 (a retry helps); then all is well.
        statuses = [c.post("/v1/events", json={"action": f"after.drop.{i}"}).status_code for i in range(4)]
        assert set(statuses) <= {200, 503} and statuses[-1] == 200, statuses
        for _ in range(3):
            listed = c.get("/v1/events", params={"limit": 1})
            if listed.status_code == 200:
                break
        assert listed.status_code == 200 and listed.json()["data"][0]["action"] == "after.drop.3"
        assert c.get("/v1/events/verify").json()["data"]["valid"] is True
        assert c.get("/readyz").status_code == 200
