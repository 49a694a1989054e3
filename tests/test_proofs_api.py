"""The checkpoint, proof and tile routes against a real server: parameters, errors, the public
routes with path parameters, the signing cadence, and the signing key's lifecycle."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from conftest import ServerProcess
from test_proofs_independent import open_checkpoint, parse_vkey

CLI = [sys.executable, "-m", "recalled_lite.cli"]


def error(r):
    body = r.json()
    assert set(body) == {"error"}, body
    return r.status_code, body["error"]["code"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("proofs_api"),
                           config_text="[checkpoints]\ninterval_seconds = 3600.0\n").start()
    with server.client() as c:
        assert c.post("/v1/events/batch", json={"events": [{"action": "api.x", "organization": "org_a"}] * 40}).status_code == 200
        c.post("/v1/checkpoint")
    yield server
    server.kill()


def test_parameters_are_validated(srv):
    with srv.client() as c:
        event = c.get("/v1/events", params={"limit": 1}).json()["data"][0]  # the newest
        newest = event["seq"]  # the 40 events, after the server's own audit events
        assert error(c.get(f"/v1/events/{event['id']}/proof", params={"tree_size": newest - 1})) == (400, "VALIDATION_ERROR")
        assert error(c.get(f"/v1/events/{event['id']}/proof", params={"tree_size": newest + 1})) == (404, "NOT_FOUND")
        assert error(c.get(f"/v1/events/{event['id']}/proof", params={"tree_size": "x"})) == (400, "VALIDATION_ERROR")
        assert error(c.get("/v1/events/evt_nope/proof")) == (404, "NOT_FOUND")
        ok = c.get(f"/v1/events/{event['id']}/proof", params={"tree_size": newest})
        assert ok.status_code == 200 and ok.json()["data"]["leafIndex"] == newest - 1
    with srv.client(key=None) as anon:
        consistency = "/v1/checkpoint/consistency"
        assert error(anon.get(consistency)) == (400, "VALIDATION_ERROR")
        assert error(anon.get(consistency, params={"from": 5, "to": 4})) == (400, "VALIDATION_ERROR")
        assert error(anon.get(consistency, params={"from": 5, "to": newest + 1})) == (400, "VALIDATION_ERROR")
        assert error(anon.get(consistency, params={"from": -1})) == (400, "VALIDATION_ERROR")
        assert error(anon.get(consistency, params={"from": 2**70})) == (400, "VALIDATION_ERROR")
        assert anon.get(consistency, params={"from": 7}).json()["data"]["to"] == newest  # default: the latest
        assert error(anon.get("/v1/checkpoints", params={"cursor": "bogus"})) == (400, "VALIDATION_ERROR")
        assert error(anon.get("/v1/checkpoints", params={"limit": 0})) == (400, "VALIDATION_ERROR")
        after = anon.get("/v1/checkpoints", params={"after": 1}).json()["data"]  # after the start's
        assert [c["treeSize"] for c in after] == [newest]
        wider = newest + 1
        for bad in ["0/1", "0/000.p/0", f"0/000.p/{wider}", "64/000", f"entries/000.p/{wider}", "0/001", "x/000",
                    "1/000"]:
            assert error(anon.get("/tile/" + bad)) == (404, "NOT_FOUND"), bad
        assert len(anon.get("/tile/0/000.p/40").content) == 40 * 32
        assert len(anon.get("/tile/0/000.p/12").content) == 12 * 32  # a prefix of the stored tile
        assert anon.get("/tile/0/000.p/12").headers["cache-control"].endswith("immutable")
        assert anon.get("/checkpoint").headers["cache-control"] == "no-cache"


def test_public_routes_with_path_parameters_need_no_key(srv):
    with srv.client(key=None) as anon:
        assert anon.get("/tile/0/000.p/1").status_code == 200
        assert anon.get("/tile/entries/000.p/1").status_code == 200
        assert anon.get("/v1/checkpoint/consistency", params={"from": 1}).status_code == 200
        assert anon.get("/r/static/receipt.css").status_code == 200
        assert error(anon.get("/r/rcpt_x.y")) == (404, "NOT_FOUND")
        # ... and writes still need one
        assert error(anon.post("/v1/checkpoint")) == (401, "UNAUTHORIZED")


def test_post_checkpoint_signs_only_when_the_tree_grew(srv):
    with srv.client() as c:
        first = c.post("/v1/checkpoint")
        assert first.status_code == 200 and first.json()["data"]["created"] is False
        assert c.post("/v1/events", json={"action": "api.grow"}).status_code == 200
        grown = c.post("/v1/checkpoint")
        assert grown.status_code == 200 and grown.json()["data"]["created"] is True
        assert grown.json()["data"]["treeSize"] == first.json()["data"]["treeSize"] + 1
        bound = srv.create_key(["events:write"], organization="org_a")
    with srv.client(key=bound) as c:
        assert c.post("/v1/checkpoint").status_code == 200  # a bound key may sign: nothing is revealed


def test_checkpoints_follow_the_interval_while_events_arrive(make_server):
    server = make_server("cadence", config_text="[checkpoints]\ninterval_seconds = 0.5\n")
    started = time.monotonic()
    with server.client() as c:
        while time.monotonic() - started < 3.0:
            assert c.post("/v1/events", json={"action": "cadence.x"}).status_code == 200
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        time.sleep(0.8)  # the last events get their checkpoint
        listed = c.get("/v1/checkpoints", params={"limit": 200}).json()["data"]
        head = c.get("/v1/events", params={"limit": 1}).json()["data"][0]["seq"]
    made = [c for c in listed if c["treeSize"] > 0]
    # at most one per interval (plus the one at start), and one covers the last event
    assert 2 <= len(made) <= elapsed / 0.5 + 2, [c["createdAt"] for c in made]
    assert made[-1]["treeSize"] == head
    sizes = [c["treeSize"] for c in listed]
    assert sizes == sorted(sizes)


def test_a_proof_of_a_new_event_waits_for_the_next_checkpoint(make_server):
    server = make_server("wait", config_text="[checkpoints]\ninterval_seconds = 1.0\n")
    with server.client() as c:
        time.sleep(1.1)
        event = c.post("/v1/events", json={"action": "wait.x"}).json()["data"]
        proof = c.get(f"/v1/events/{event['id']}/proof").json()["data"]
        assert proof["treeSize"] >= event["seq"]


def test_the_signing_key_lifecycle(tmp_path, request):
    server = ServerProcess(tmp_path / "keys", config_text="[checkpoints]\ninterval_seconds = 3600.0\n")
    request.addfinalizer(server.kill)  # a failing step must not leave a server running
    key_file = server.signing_key_path
    # No offline command creates a key.
    for args in (["keys", "list"], ["verify"], ["checkpoint", "key"]):
        subprocess.run(CLI + args + ["--db", server.db_location], capture_output=True, cwd=server.workdir,
                       env={k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")})
        assert not key_file.exists(), args
    server.start()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().startswith("PRIVATE+KEY+recalled-lite/proj_")
    with server.client() as c:
        posted = c.post("/v1/events", json={"action": "k.x"})
        assert posted.status_code == 200
        size = posted.json()["data"]["seq"]  # after the server's own audit event
        keys = c.get("/v1/checkpoint/key").json()["data"]
    printed = subprocess.run(CLI + ["checkpoint", "key", "--db", server.db_location], capture_output=True, text=True,
                             cwd=server.workdir)
    assert printed.returncode == 0 and printed.stdout.strip() == keys["current"]
    # the private key never enters the database (the public one is listed there)
    # PRIVATE+KEY+<name>+<hash>+<key>: the key's base64 may itself hold a '+' (even end with one)
    private = key_file.read_text().strip().split("+", 4)[4].encode()
    assert len(private) >= 40 and private not in server.stored_bytes()
    server.stop()

    # Lost key file: the server refuses to start over the old log.
    os.rename(key_file, tmp_path / "saved-key")
    with pytest.raises(RuntimeError, match="signing key .* is missing"):
        server.start()
    assert not key_file.exists()  # and it did not create one
    # Another key: refused too.
    other = subprocess.run([sys.executable, "-c",
                            "from recalled_lite.integrity.note import generate_key; print(generate_key('x/y')[0])"],
                           capture_output=True, text=True).stdout.strip()
    server.env["RECALLED_SIGNING_KEY"] = other
    with pytest.raises(RuntimeError, match="is not the one this log's checkpoints are signed with"):
        server.start()
    del server.env["RECALLED_SIGNING_KEY"]

    # Told to rotate: a new key, the old one listed as retired, the tree signed at once.
    server.extra_args = ["--rotate-signing-key"]
    server.start()
    with server.client() as c:
        rotated = c.get("/v1/checkpoint/key").json()["data"]
        latest = c.get("/v1/checkpoint").text
    assert rotated["current"] != keys["current"]
    assert {k["verifierKey"] for k in rotated["keys"]} == {keys["current"], rotated["current"]}
    old = next(k for k in rotated["keys"] if k["verifierKey"] == keys["current"])
    assert old["retiredAt"] is not None
    assert open_checkpoint(latest, parse_vkey(rotated["current"]))[1] == size
    server.stop()

    # Rotating again with the current key present moves it aside and makes a new one.
    server.start()
    with server.client() as c:
        assert c.get("/v1/checkpoint/key").json()["data"]["current"] != rotated["current"]
    assert any(p.name.startswith(key_file.name + ".retired-") for p in key_file.parent.iterdir())
    server.stop()
    # RECALLED_SIGNING_KEY overrides the file (here: the current key, so it starts).
    current = key_file.read_text().strip()
    os.rename(key_file, tmp_path / "moved")
    server.extra_args = []
    server.env["RECALLED_SIGNING_KEY"] = current
    server.start()
    with server.client(key=None) as anon:
        assert anon.get("/v1/checkpoint/key").json()["data"]["current"].split("+")[1] == \
            current.split("+")[3]
    server.kill()
