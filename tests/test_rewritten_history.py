"""Rewritten history is caught: by `recalled-lite witness`, and by a webhook receiver.

The attacker holds everything the operator holds: a copy of the database, its secret and its
signing key. From seq 100 on it alters the events and rebuilds the chain (hashes and HMACs
with the real secret, so `verify` passes), drops the tree and the checkpoints, and starts
the server on the copy: the server rebuilds the tree and signs new checkpoints with the real
key. Every signature is valid, yet a witness holding a checkpoint from before, and a
receiver holding the checkpoint its webhook delivery carried, both see the fork.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import sqlite3
import subprocess
import sys

import pytest

from conftest import ServerProcess
from test_integrity_independent import canonical, load_events
from test_proofs_independent import consistent, open_checkpoint, parse_vkey
from webhook_receiver import Receiver, wait_until

CONFIG = "[checkpoints]\ninterval_seconds = 3600.0\n"
TRIGGERS = ["events_append_only_update", "events_append_only_delete", "merkle_tiles_append_only_update",
            "merkle_tiles_append_only_delete", "checkpoints_append_only_update", "checkpoints_append_only_delete"]


def witness(url: str, vkey: str, state) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recalled_lite.cli", "witness", url, "--key", vkey,
                           "--state", str(state)], capture_output=True, text=True, timeout=120)


def rewrite_from(db_path, secret: bytes, first_seq: int) -> None:
    """The attacker: alter every event from first_seq on and re-chain them (docs/integrity.md §3)."""
    project_id, events = load_events(db_path)
    conn = sqlite3.connect(db_path, isolation_level=None)
    for trigger in TRIGGERS:
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("BEGIN")
    prev = events[first_seq - 2]["hash"]
    for e in events[first_seq - 1:]:
        action = "rewritten." + e["action"]
        core = {"action": action, "actorType": e["actor"]["type"], "id": e["id"],
                "idempotencyKey": e["idempotencyKey"], "occurredAt": e["occurredAt"],
                "organization": e["organization"], "personalDigest": e["personalDigest"],
                "projectId": project_id, "receivedAt": e["receivedAt"], "seq": e["seq"], "targets": e["targets"]}
        message = prev.encode() + b"\n" + canonical(core)
        new_hash = "sha256:" + hashlib.sha256(message).hexdigest()
        signature = "hmac-sha256:" + hmac.new(secret, message, "sha256").hexdigest()
        conn.execute("UPDATE events SET action = ?, prev_hash = ?, hash = ?, signature = ? WHERE seq = ?",
                     (action, prev, new_hash, signature, e["seq"]))
        prev = new_hash
    conn.execute("DELETE FROM merkle_tiles")
    conn.execute("DELETE FROM checkpoints")
    conn.execute("COMMIT")
    conn.close()


@pytest.mark.sqlite_only("the attacker drops the tree and the server rebuilds it, as for a pre-006 SQLite "
                         "file; a PostgreSQL store refuses a tree shorter than its log instead")
def test_a_rewritten_history_is_caught_by_witnesses(tmp_path):
    rx = Receiver()
    original = ServerProcess(tmp_path / "original", args=["--dev"], config_text=CONFIG).start()
    try:
        with original.client() as c:
            sub = c.post("/v1/event_subscriptions", json={"url": rx.url("/witness")})
            assert sub.status_code == 201, sub.text
            wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub.json()['data']['id']}").json()["data"]["state"]
                       == "valid", message="the subscription to be valid")
            # The server's own audit events (the bootstrap key, the subscription) come first.
            base = c.get("/readyz").json()["data"]["seq"]
            batch = [{"action": f"hist.{i}", "actor": {"id": f"u{i % 9}"}} for i in range(150)]
            assert c.post("/v1/events/batch", json={"events": batch}).status_code == 200
            assert c.post("/v1/checkpoint").json()["data"]["treeSize"] == base + 150
            last = c.post("/v1/events", json={"action": "hist.last"}).json()["data"]
            vkey = c.get("/v1/checkpoint/key").json()["data"]["current"]
            delivered = wait_until(lambda: [r for r in rx.received("/witness") if r.json["event"]["id"] == last["id"]],
                                   message="the delivery of the last event")[0]
            assert c.post("/v1/checkpoint").json()["data"]["treeSize"] == base + 151
        receiver_note = delivered.json["checkpoint"]  # what the receiver keeps
        _, receiver_size, receiver_root = open_checkpoint(receiver_note, parse_vkey(vkey))
        assert receiver_size == base + 150

        state = tmp_path / "witness.state"
        first = witness(original.url, vkey, state)
        assert first.returncode == 0, first.stderr
        assert f"tree size {base + 151}" in first.stderr
        before = state.read_text()
        original.stop()

        # The attacker's copy: database, secret and signing key.
        attacker_dir = tmp_path / "attacker"
        attacker_dir.mkdir()
        for suffix in ("", "-wal", "-shm", ".secret", ".signing-key"):
            source = original.db_path.with_name(original.db_path.name + suffix)
            if source.exists():
                shutil.copy2(source, attacker_dir / source.name)
        secret = (attacker_dir / "recalled.db.secret").read_text().strip().encode()
        rewrite_from(attacker_dir / "recalled.db", secret, 100)
        attacker = ServerProcess(attacker_dir, args=["--dev"], config_text=CONFIG).start()
        try:
            with attacker.client() as c:
                # The rewrite is perfect as far as the chain and its HMACs go ...
                verified = c.get("/v1/events/verify").json()["data"]
                assert verified["valid"] is True and verified["checked"] == base + 151
                assert c.get(f"/v1/events/{last['id']}").json()["data"]["action"] == "rewritten.hist.last"
                assert c.get("/v1/checkpoint/key").json()["data"]["current"] == vkey  # the same key signs
            # ... but the witness sees two roots for one tree size.
            caught = witness(attacker.url, vkey, state)
            assert caught.returncode == 1, caught.stderr
            assert "ALERT" in caught.stderr and "FORK" in caught.stderr
            assert state.read_text() == before  # the evidence is kept
            # The log grows on: still not an extension of what was signed before.
            with attacker.client() as c:
                assert c.post("/v1/events/batch", json={"events": batch[:5]}).status_code == 200
                assert c.post("/v1/checkpoint").json()["data"]["treeSize"] == base + 156
            caught = witness(attacker.url, vkey, state)
            assert caught.returncode == 1 and "does not extend" in caught.stderr, caught.stderr
            # The receiver checks its delivered checkpoint through the consistency route.
            with attacker.client(key=None) as anon:
                _, size, root = open_checkpoint(anon.get("/v1/checkpoint").text, parse_vkey(vkey))
                proof = anon.get("/v1/checkpoint/consistency",
                                 params={"from": receiver_size, "to": size}).json()["data"]["proof"]
            assert size == base + 156
            assert not consistent(receiver_size, size, receiver_root, root, [base64.b64decode(p) for p in proof])
        finally:
            attacker.kill()

        # Positive control: the real log still satisfies both.
        original.start()
        with original.client() as c:
            assert c.post("/v1/events", json={"action": "hist.after"}).status_code == 200
            assert c.post("/v1/checkpoint").json()["data"]["treeSize"] == base + 152
        good = witness(original.url, vkey, state)
        assert good.returncode == 0 and f"{base + 151} -> {base + 152}" in good.stderr, good.stderr
        with original.client(key=None) as anon:
            _, size, root = open_checkpoint(anon.get("/v1/checkpoint").text, parse_vkey(vkey))
            proof = anon.get("/v1/checkpoint/consistency", params={"from": receiver_size, "to": size}).json()
        assert consistent(receiver_size, size, receiver_root, root,
                          [base64.b64decode(p) for p in proof["data"]["proof"]])
    finally:
        original.kill()
        rx.close()


def test_witness_catches_a_rollback_and_a_foreign_key(tmp_path, make_server):
    srv = make_server("rollback", config_text=CONFIG)
    with srv.client() as c:
        assert c.post("/v1/events/batch", json={"events": [{"action": "rb.x"}] * 10}).status_code == 200
        c.post("/v1/checkpoint")
        vkey = c.get("/v1/checkpoint/key").json()["data"]["current"]
    state = tmp_path / "state"
    assert witness(srv.url, vkey, state).returncode == 0
    # A state file from "the future" (a larger tree): the server's current one is a rollback.
    text = state.read_text()
    body, sigs = text[: text.rindex("\n\n") + 1], text[text.rindex("\n\n") + 2:]
    origin, size, root = body.rstrip("\n").split("\n")
    state.write_text(f"{origin}\n{int(size) + 5}\n{root}\n\n{sigs}")
    rolled = witness(srv.url, vkey, state)
    assert rolled.returncode == 1 and "ROLLBACK" in rolled.stderr, rolled.stderr
    # In a loop (--interval) it exits at the first alert ...
    looped = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "witness", srv.url, "--key", vkey,
                             "--state", str(state), "--interval", "0.2"], capture_output=True, text=True, timeout=60)
    assert looped.returncode == 1 and "ROLLBACK" in looped.stderr
    # ... and otherwise keeps following the log as it grows.
    good_state = tmp_path / "good"
    follower = subprocess.Popen([sys.executable, "-m", "recalled_lite.cli", "witness", srv.url, "--key", vkey,
                                 "--state", str(good_state), "--interval", "0.2"],
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_until(good_state.exists, message="the first checkpoint to be stored")
        with srv.client() as c:
            assert c.post("/v1/events", json={"action": "rb.more"}).status_code == 200
            c.post("/v1/checkpoint")
        wait_until(lambda: good_state.read_text().split("\n")[1] == "11", message="the witness to follow")
        assert follower.poll() is None
    finally:
        follower.terminate()
        follower.wait(30)
    # Another key: the server's checkpoint is not signed by it.
    other = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"  # C2SP example key
    fresh = tmp_path / "fresh"
    wrong = witness(srv.url, other, fresh)
    assert wrong.returncode == 1 and "does not verify" in wrong.stderr and not fresh.exists()
    # An unreachable server is not an alarm (exit 3), and stores nothing.
    gone = witness("http://127.0.0.1:9", vkey, fresh)
    assert gone.returncode == 3 and not fresh.exists()
