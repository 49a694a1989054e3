"""Two `recalled-lite serve` instances on one PostgreSQL database (issue #15, must-show 3,
intake half; the webhook half is tests/test_pg_webhooks*): 16 concurrent writers spread over
both, single events and batches, idempotency keys colliding across the instances, and a
SIGKILL of one instance under load."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import ServerProcess
from pg_support import create_database, drop_database

WRITERS = 16
COLLIDING_KEYS = 120


class PgServer(ServerProcess):
    """A ServerProcess on a PostgreSQL URL, with the secret and signing key in shared files."""

    def __init__(self, workdir: Path, url: str, config: Path) -> None:
        super().__init__(workdir, backend="sqlite")  # no database of its own: command() names the URL
        self.pg_url = url
        self.shared_config = config

    def command(self) -> list[str]:
        import sys

        return [sys.executable, "-m", "recalled_lite.cli", "serve", "--db", self.pg_url,
                "--port", str(self.port), "--config", str(self.shared_config)]


@pytest.fixture
def pair(tmp_path):
    url = create_database("instances")
    shared = tmp_path / "shared"
    shared.mkdir()
    secret = shared / "server.secret"
    secret.write_text(secrets.token_hex(32) + "\n")
    os.chmod(secret, 0o600)
    config = shared / "config.toml"
    config.write_text(f'[server]\nsecret_file = "{secret}"\n\n'
                      f'[checkpoints]\nsigning_key_file = "{shared / "signing-key"}"\n')
    servers = [PgServer(tmp_path / name, url, config) for name in ("one", "two")]
    try:
        for server in servers:  # one after the other: the first creates the signing key file
            server.start(timeout=60)
        yield servers, url
    finally:
        for server in servers:
            server.kill()
        drop_database(url)


def pg(url: str, sql: str, params=()):
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def body(writer: int, n: int, key: str | None = None) -> dict:
    event = {"action": "load.single", "organization": f"org_{writer % 3}",
             "actor": {"type": "user", "id": f"w{writer}"}, "metadata": {"writer": writer, "n": n}}
    if key is not None:
        event["idempotency_key"] = key
        event["metadata"] = {"collision": key}  # the same body from both instances: a replay
        event["actor"] = {"type": "user", "id": "collider"}
    return event


class Load:
    """16 writers, even ones on the first instance and odd ones on the second; each writes
    single events, batches of 25, and takes its turn at the colliding keys."""

    def __init__(self, servers: list[PgServer], *, until: threading.Event, max_rounds: int) -> None:
        self.servers, self.until, self.max_rounds = servers, until, max_rounds
        self.lock = threading.Lock()
        self.acked: dict[str, int] = {}        # event id -> how often acknowledged as new
        self.keyed: dict[str, set[str]] = {}   # idempotency key -> ids answered
        self.failures: list[str] = []          # requests that got no answer (a killed instance)
        self.errors: list[str] = []            # answers that are not 200
        self.new_by = [0] * len(servers)       # events each instance acknowledged as new
        self.replayed_by = [0] * len(servers)  # colliding keys each answered as a replay
        self.keys = iter(range(COLLIDING_KEYS))
        self.key_lock = threading.Lock()

    def writer(self, w: int) -> None:
        server = self.servers[w % len(self.servers)]
        client = server.client(timeout=30)
        try:
            for n in range(self.max_rounds):
                if self.until.is_set():
                    return
                if n % 3 == 2:
                    with self.key_lock:
                        k = next(self.keys, None)
                    if k is not None:
                        # Both instances get this key at nearly the same moment.
                        self._post_keyed(f"collide-{k}", w)
                        continue
                if n % 4 == 1:
                    request = ("/v1/events/batch", {"events": [body(w, n * 100 + i) for i in range(25)]})
                else:
                    request = ("/v1/events", body(w, n))
                self._post(client, *request, at=w % len(self.servers))
        finally:
            client.close()

    def _post(self, client: httpx.Client, path: str, payload: dict, *, at: int) -> None:
        try:
            r = client.post(path, json=payload)
        except httpx.TransportError as exc:
            with self.lock:
                self.failures.append(f"{path}: {exc!r}")
            return
        with self.lock:
            if r.status_code != 200:
                self.errors.append(f"{path}: {r.status_code} {r.text[:200]}")
                return
            data = r.json()
            events = data["data"] if isinstance(data["data"], list) else [data["data"]]
            dedup = set(data["deduplicated"]) if isinstance(data["deduplicated"], list) else (
                {0} if data["deduplicated"] else set())
            for i, event in enumerate(events):
                if i not in dedup:
                    self.acked[event["id"]] = self.acked.get(event["id"], 0) + 1
                    self.new_by[at] += 1
                elif event.get("idempotencyKey"):
                    self.replayed_by[at] += 1
                if event.get("idempotencyKey"):
                    self.keyed.setdefault(event["idempotencyKey"], set()).add(event["id"])

    def _post_keyed(self, key: str, w: int) -> None:
        barrier = threading.Barrier(2)

        def on(at: int, server: PgServer) -> None:
            with server.client(timeout=30) as client:
                try:
                    barrier.wait(5)
                except threading.BrokenBarrierError:
                    pass
                self._post(client, "/v1/events", body(w, 0, key), at=at)

        threads = [threading.Thread(target=on, args=(i, s)) for i, s in enumerate(self.servers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def run(self) -> None:
        threads = [threading.Thread(target=self.writer, args=(w,)) for w in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def leaf(event_hash: str, signature: str) -> bytes:
    return hashlib.sha256(b"\x00" + event_hash.encode() + b"\n" + signature.encode()).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 Merkle tree hash over leaf hashes, written here independently of the server."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def assert_log_whole(servers: list[PgServer], url: str) -> int:
    """Seqs 1..N with no gap, every prevHash the previous hash, the server's own verification
    valid from each instance, and a checkpoint's Merkle root equal to the root over every
    event's leaf (computed here, RFC 9162)."""
    rows = pg(url, "SELECT seq, prev_hash, hash, signature FROM events ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert all(rows[i][1] == rows[i - 1][2] for i in range(1, len(rows))) and rows[0][1] is None
    for server in servers:
        with server.client(timeout=120) as c:
            verify = c.get("/v1/events/verify").json()["data"]
            assert verify["valid"] is True and verify["checked"] >= len(rows), verify
    with servers[0].client(timeout=60) as c:
        made = c.post("/v1/checkpoint").json()["data"]
    size = made["treeSize"]
    assert size >= len(rows)
    rows = pg(url, "SELECT seq, prev_hash, hash, signature FROM events WHERE seq <= %s ORDER BY seq", (size,))
    stored = pg(url, "SELECT root_hash FROM checkpoints WHERE tree_size = %s ORDER BY id DESC LIMIT 1", (size,))
    assert bytes(stored[0][0]) == mth([leaf(r[2], r[3]) for r in rows])
    return len(rows)


def test_two_instances_sixteen_writers_every_ack_stored_once(pair):
    servers, url = pair
    load = Load(servers, until=threading.Event(), max_rounds=60)
    load.run()
    assert not load.failures and not load.errors, (load.failures[:5], load.errors[:5])
    # Every acknowledged event is stored, once, and nothing else of the load is.
    assert all(n == 1 for n in load.acked.values())
    stored = pg(url, "SELECT id FROM events WHERE action = 'load.single'")
    assert len(stored) == len({r[0] for r in stored})
    assert {r[0] for r in stored} == set(load.acked)
    # Each colliding key gave one event, the same id on both instances.
    assert len(load.keyed) == COLLIDING_KEYS
    assert all(len(ids) == 1 for ids in load.keyed.values())
    per_key = pg(url, "SELECT idempotency_key, count(*) FROM events WHERE idempotency_key LIKE 'collide-%%' "
                      "GROUP BY 1")
    assert len(per_key) == COLLIDING_KEYS and all(n == 1 for _, n in per_key)
    # Both instances took a share of the appends and each answered some collisions as
    # replays of the other's event: the race really crossed instances.
    assert min(load.new_by) > 1000 and min(load.replayed_by) > 0, (load.new_by, load.replayed_by)
    assert assert_log_whole(servers, url) > 16 * 40


def test_sigkill_of_one_instance_under_load_loses_nothing_acknowledged(pair):
    servers, url = pair
    stop = threading.Event()
    load = Load(servers, until=stop, max_rounds=10_000)
    runner = threading.Thread(target=load.run)
    runner.start()
    time.sleep(3)
    servers[1].kill()  # SIGKILL mid-load: its open group never commits
    at_kill = load.new_by[0]
    time.sleep(3)
    stop.set()
    runner.join(120)
    assert not runner.is_alive()
    assert load.failures, "the killed instance's writers should have seen it go"
    assert not load.errors, load.errors[:5]
    stored = {r[0] for r in pg(url, "SELECT id FROM events WHERE action = 'load.single'")}
    missing = set(load.acked) - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    assert len(load.acked) > 200 and load.new_by[1] > 0
    assert load.new_by[0] > at_kill, "the surviving instance stopped acknowledging after the kill"
    # The survivor kept appending after the kill, and a restarted instance chains on.
    servers[1].start(timeout=60)
    with servers[1].client() as c:
        after = c.post("/v1/events", json={"action": "after.restart"}).json()["data"]
    head = pg(url, "SELECT max(seq) FROM events")[0][0]
    assert after["seq"] == head
    assert_log_whole(servers, url)


def test_a_checkpoint_on_one_instance_covers_what_the_other_wrote(pair):
    servers, url = pair
    with servers[0].client() as c:
        c.post("/v1/events", json={"action": "on.one"}).raise_for_status()
        c.post("/v1/checkpoint").raise_for_status()
    with servers[1].client() as c:
        written = c.post("/v1/events", json={"action": "on.two"}).json()["data"]
    with servers[0].client() as c:
        made = c.post("/v1/checkpoint").json()["data"]
    assert made["treeSize"] >= written["seq"]


def test_a_proof_on_one_instance_for_an_event_the_other_wrote(pair):
    servers, url = pair
    with servers[1].client() as c:
        written = c.post("/v1/events", json={"action": "on.two"}).json()["data"]
    with servers[0].client(timeout=10) as c:
        proof = c.get(f"/v1/events/{written['id']}/proof")
    assert proof.status_code == 200, proof.text
