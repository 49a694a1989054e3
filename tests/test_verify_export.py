"""`recalled-lite verify --export FILE --key VERIFIER_KEY`: an export checks without the secret;
one changed byte makes it fail. And erasing an actor leaves every proof and checkpoint valid.

The CLI runs in a directory with no secret, no signing key and no database, and with no
RECALLED_* variable: all it has is the file and the public verifier key.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys

import pytest

from conftest import ServerProcess
from recalled_lite.integrity.export_check import verify_export
from recalled_lite.integrity.note import parse_verifier
from test_cli_progress import run_on_tty
from test_exports import EVENTS
from test_proofs_independent import consistent, event_leaf, mth, open_checkpoint, parse_vkey, root_from_inclusion

CLI = [sys.executable, "-m", "recalled_lite.cli"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}


def verify_cli(path, vkey, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["verify", "--export", str(path), "--key", vkey], capture_output=True,
                          text=True, cwd=cwd, env=clean_env(), timeout=300)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("verify_export"),
                        config_text="[checkpoints]\ninterval_seconds = 3600.0\n").start()
    with srv.client() as c:
        for body in EVENTS:
            assert c.post("/v1/events", json=body).status_code == 200
        batch = [{"action": f"vx.{i % 4}", "organization": ["org_p", "org_q"][i % 2],
                  "actor": {"id": f"vx_user_{i % 6}", "email": f"vx{i}@example.com", "name": "Ünïcode"},
                  "metadata": {"i": i, "f": i / 3, "s": "a\"b\\c"}, "ip_address": "198.51.100.7"}
                 for i in range(600)]
        assert c.post("/v1/events/batch", json={"events": batch}).status_code == 200
        erased = c.delete("/v1/actors/vx_user_3")
        assert erased.status_code == 200 and erased.json()["data"]["anonymized_events"] == 100
        vkey = c.get("/v1/checkpoint/key").json()["data"]["current"]
    yield srv, vkey
    srv.kill()


def export(srv, fmt, path, **params):
    with srv.client() as c:
        r = c.get("/v1/exports", params={"format": fmt, **params})
    assert r.status_code == 200, r.text
    path.write_bytes(r.content)
    return path


@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv"])
def test_a_fresh_export_verifies_without_the_secret(world, tmp_path, fmt):
    srv, vkey = world
    path = export(srv, fmt, tmp_path / f"export.{fmt}")
    done = verify_cli(path, vkey, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)["data"]
    with srv.client() as c:
        total = c.get("/readyz").json()["data"]["seq"]  # the 604 events and the server's own
    assert total == 604 + 2  # the bootstrap key's audit event, and the erasure's
    assert report["valid"] and report["complete"] and report["checked"] == total
    assert report["checkpoint"]["rootMatches"] is True and report["checkpoint"]["treeSize"] == total
    assert report["checkpoint"]["signedBy"] == vkey
    assert f"OK: {total} events; the Merkle root of the first {total} matches" in done.stderr
    assert sorted(os.listdir(tmp_path)) == [f"export.{fmt}"]  # it made no key, secret or database


def test_one_changed_byte_fails(world, tmp_path):
    srv, vkey = world
    path = export(srv, "ndjson", tmp_path / "export.ndjson")
    original = path.read_bytes()
    verifier = parse_verifier(vkey)
    assert verify_export(str(path), verifier)["valid"]
    # The one thing no hash covers: the erasedAt time of an erased event (docs/integrity.md §9).
    uncovered = set()
    for line_start, line in zip([0] + [i + 1 for i, b in enumerate(original) if b == 10], original.split(b"\n")):
        at = line.find(b'"erasedAt":"')
        if at >= 0:
            uncovered.update(range(line_start + at + 12, line_start + at + 12 + 24))
    rng = random.Random(604)
    positions = [p for p in rng.sample(range(len(original)), 300) if p not in uncovered]
    changed = tmp_path / "changed.ndjson"
    for position in positions:
        data = bytearray(original)
        data[position] = (data[position] + rng.randrange(1, 255)) % 256
        changed.write_bytes(bytes(data))
        report = verify_export(str(changed), verifier)
        assert not report["valid"], f"a change at byte {position} went unnoticed: {original[position - 20:position + 20]!r}"
    # ... the same through the CLI, for a byte in an action, the checkpoint and a personal field
    for needle in (b'"action":"vx.2"', b"\\n\\n\xe2\x80\x94 recalled-lite/", b"vx17@example.com"):
        at = original.index(needle) + len(needle) - 2
        data = bytearray(original)
        data[at] = ord("Z") if data[at] != ord("Z") else ord("Y")
        changed.write_bytes(bytes(data))
        done = verify_cli(changed, vkey, tmp_path)
        assert done.returncode == 2 and "INVALID" in done.stderr, (needle, done.stderr)
    # and an inserted space, which still parses as the same JSON
    data = original.replace(b'"action":"vx.1"', b'"action": "vx.1"', 1)
    changed.write_bytes(data)
    assert verify_cli(changed, vkey, tmp_path).returncode == 2
    # the wrong key
    done = verify_cli(path, "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", tmp_path)
    assert done.returncode == 2 and "does not verify with the key given" in done.stderr


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_one_changed_byte_fails_in_json_and_csv(world, tmp_path, fmt):
    srv, vkey = world
    path = export(srv, fmt, tmp_path / f"export.{fmt}")
    original = path.read_bytes()
    verifier = parse_verifier(vkey)
    rng = random.Random(17)
    for needle in (b"vx.3", b"vx8@example.com", b"198.51.100.7", b"hmac-sha256:"):
        at = original.index(needle) + len(needle) - 1
        data = bytearray(original)
        data[at] = (data[at] + rng.randrange(1, 200)) % 256
        path.write_bytes(bytes(data))
        assert not verify_export(str(path), verifier)["valid"], needle


def test_a_filtered_export_is_reported_as_partial(world, tmp_path):
    srv, vkey = world
    path = export(srv, "ndjson", tmp_path / "org.ndjson", organization="org_p")
    done = verify_cli(path, vkey, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["data"]
    assert report["valid"] and not report["complete"] and report["checked"] == 300
    assert report["checkpoint"]["rootMatches"] is None
    assert "not the whole log" in done.stderr


def test_a_cli_export_verifies_and_shows_progress(world, tmp_path):
    srv, vkey = world
    with srv.client() as c:  # after the last checkpoint: covered by the chain only
        assert c.post("/v1/events", json={"action": "vx.after"}).status_code == 200
    out = tmp_path / "cli.ndjson"
    made = subprocess.run(CLI + ["export", "--db", srv.db_location, "-o", str(out)], capture_output=True,
                          text=True, env=clean_env(), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    done = verify_cli(out, vkey, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["data"]
    assert report["complete"] and report["afterCheckpoint"] >= 1
    assert report["checkpoint"]["treeSize"] == report["checked"] - report["afterCheckpoint"]
    assert "covered by the chain only" in done.stderr
    code, screen = run_on_tty(CLI + ["verify", "--export", str(out), "--key", vkey], tmp_path)
    assert code == 0 and "verifying export (bytes) [" in screen and "100.0%" in screen


def test_erasure_leaves_every_proof_and_checkpoint_valid(tmp_path, make_server):
    srv = make_server("erasure_proofs", config_text="[checkpoints]\ninterval_seconds = 3600.0\n")

    def all_events(c) -> list[dict]:
        # Every event in seq order, the server's own audit events included: they are leaves too.
        lines = c.get("/v1/exports", params={"format": "ndjson"}).text.splitlines()
        return [json.loads(line) for line in lines[:-1]]

    with srv.client() as c:
        batch = [{"action": f"er.{i}", "actor": {"id": f"er_user_{i % 3}", "email": f"er{i}@example.com"},
                  "metadata": {"secret": f"value-{i}"}, "user_agent": "UA/1"} for i in range(300)]
        assert c.post("/v1/events/batch", json={"events": batch[:150]}).status_code == 200
        first = c.post("/v1/checkpoint").json()["data"]
        assert c.post("/v1/events/batch", json={"events": batch[150:]}).status_code == 200
        second = c.post("/v1/checkpoint").json()["data"]
        size = second["treeSize"]
        vkey = parse_vkey(c.get("/v1/checkpoint/key").json()["data"]["current"])
        events = [e for e in all_events(c) if e["seq"] <= size]
        assert len(events) == size and sum(e["action"].startswith("er.") for e in events) == 300
        proofs = {e["id"]: c.get(f"/v1/events/{e['id']}/proof", params={"tree_size": size}).json()["data"]
                  for e in events}

        erased = c.delete("/v1/actors/er_user_1")
        assert erased.json()["data"]["anonymized_events"] == 100
        # The erasure is audited (recalled.actor.erased): the tree grows by that event, and
        # nothing it already held changes.
        again = c.post("/v1/checkpoint").json()["data"]
        assert again["treeSize"] > size
        after = {e["id"]: c.get(f"/v1/events/{e['id']}/proof", params={"tree_size": size}).json()["data"]
                 for e in events}
        assert after == proofs
        listed = c.get("/v1/checkpoints").json()["data"]
        reread = all_events(c)
        erased_one = next(e for e in reread if e["action"] == "er.1")
        assert erased_one["actor"]["email"] == "[deleted]"
    leaves = [event_leaf(e) for e in reread]  # from the erased events
    for item in listed:
        _, cp_size, cp_root = open_checkpoint(item["checkpoint"], vkey)
        assert cp_root == mth(leaves[:cp_size])
    root = mth(leaves[:size])
    assert base64.b64decode(second["rootHash"]) == root
    for index, e in enumerate(events):
        proof = [base64.b64decode(p) for p in after[e["id"]]["proof"]]
        assert root_from_inclusion(index, size, leaves[index], proof) == root
    with srv.client(key=None) as anon:
        data = anon.get("/v1/checkpoint/consistency", params={"from": first["treeSize"], "to": size}).json()["data"]
    assert consistent(first["treeSize"], size, base64.b64decode(first["rootHash"]), root,
                      [base64.b64decode(p) for p in data["proof"]])
    # and the export after erasure still verifies against the checkpoint
    path = export(srv, "ndjson", tmp_path / "erased.ndjson")
    done = verify_cli(path, vkey_text(srv), tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["data"]["checkpoint"]["rootMatches"], done.stderr
    assert b"er1@example.com" not in path.read_bytes()


def vkey_text(srv) -> str:
    with srv.client(key=None) as anon:
        return anon.get("/v1/checkpoint/key").json()["data"]["current"]
