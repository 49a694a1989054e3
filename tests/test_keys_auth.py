"""SPEC §3: key format, auth error codes, scopes, /v1/keys, CLI keys, the organization wall."""

from __future__ import annotations

import subprocess
import sys
import time


from conftest import ADMIN_KEY


def code(r):
    return r.status_code, r.json()["error"]["code"]


def test_auth_error_codes(server):
    with server.client(key=None) as c:
        body = {"action": "a"}
        assert code(c.post("/v1/events", json=body)) == (401, "UNAUTHORIZED")
        assert code(c.post("/v1/events", json=body, headers={"Authorization": "Basic abc"})) == (401, "UNAUTHORIZED")
        assert code(c.post("/v1/events", json=body, headers={"Authorization": "Bearer nope"})) == (401, "UNAUTHORIZED")
        unknown = "rec_live_zzzzzzzz_" + "q" * 32
        assert code(c.post("/v1/events", json=body, headers={"Authorization": f"Bearer {unknown}"})) == (401, "INVALID_API_KEY")
        wrong_secret = ADMIN_KEY[:-1] + ("x" if ADMIN_KEY[-1] != "x" else "y")
        assert code(c.post("/v1/events", json=body, headers={"Authorization": f"Bearer {wrong_secret}"})) == (401, "INVALID_API_KEY")
        test_mode = "rec_test_" + ADMIN_KEY[9:]
        assert code(c.post("/v1/events", json=body, headers={"Authorization": f"Bearer {test_mode}"})) == (401, "INVALID_API_KEY")


def test_key_lifecycle_and_revocation(server):
    with server.client() as c:
        r = c.post("/v1/keys", json={"name": "ci", "scopes": ["events:write"]})
        assert r.status_code == 201
        created = r.json()["data"]
        assert created["key"].startswith("rec_live_") and created["scopes"] == ["events:write"]
        listed = c.get("/v1/keys").json()
        assert listed["has_more"] is False and listed["next_cursor"] is None
        entry = next(k for k in listed["data"] if k["id"] == created["id"])
        assert entry["key"] is None and entry["revoked_at"] is None
        assert created["key"] not in str(listed)
    with server.client(key=created["key"]) as ci:
        assert ci.post("/v1/events", json={"action": "ci.run"}).status_code == 200
        assert code(ci.get("/v1/events/verify")) == (403, "FORBIDDEN")
        assert code(ci.get("/v1/keys")) == (403, "FORBIDDEN")
    with server.client() as c:
        revoked = c.delete(f"/v1/keys/{created['id']}")
        assert revoked.status_code == 200 and revoked.json()["data"]["revoked_at"]
        assert code(c.delete("/v1/keys/key_doesnotexist")) == (404, "NOT_FOUND")
    with server.client(key=created["key"]) as ci:
        assert code(ci.post("/v1/events", json={"action": "ci.run"})) == (401, "REVOKED_API_KEY")


def test_key_creation_validation(server):
    with server.client() as c:
        assert code(c.post("/v1/keys", json={"name": "x", "scopes": ["events:fly"]})) == (400, "VALIDATION_ERROR")
        assert code(c.post("/v1/keys", json={"name": "x", "scopes": []})) == (400, "VALIDATION_ERROR")
        assert code(c.post("/v1/keys", json={"scopes": ["admin"]})) == (400, "VALIDATION_ERROR")


def test_bound_manager_cannot_escalate(server):
    manager = server.create_key(["keys:manage", "events:write"], organization="org_mgr")
    with server.client(key=manager) as m:
        assert code(m.post("/v1/keys", json={"name": "x", "scopes": ["admin"]})) == (403, "FORBIDDEN")
        assert code(m.post("/v1/keys", json={"name": "x", "scopes": ["events:write"], "organization": "org_other"})) == (403, "FORBIDDEN")
        ok = m.post("/v1/keys", json={"name": "x", "scopes": ["events:write"]})
        assert ok.status_code == 201 and ok.json()["data"]["organization"] == "org_mgr"
        assert all(k["organization"] == "org_mgr" for k in m.get("/v1/keys").json()["data"])


def test_organization_wall_on_intake_and_read(server):
    acme = server.create_key(["events:write", "events:read"], organization="org_acme")
    globex = server.create_key(["events:write", "events:read"], organization="org_globex")
    with server.client(key=acme) as a:
        implied = a.post("/v1/events", json={"action": "doc.created"})
        assert implied.status_code == 200 and implied.json()["data"]["organization"] == "org_acme"
        explicit = a.post("/v1/events", json={"action": "doc.created", "organization": "org_acme"})
        assert explicit.status_code == 200
        assert code(a.post("/v1/events", json={"action": "x", "organization": "org_globex"})) == (403, "FORBIDDEN")
        batch = a.post("/v1/events/batch", json={"events": [{"action": "x"}, {"action": "y", "organization": "org_globex"}]})
        assert code(batch) == (403, "FORBIDDEN")
        assert a.get(f"/v1/events/{implied.json()['data']['id']}").status_code == 200
    with server.client(key=globex) as g:
        assert code(g.get(f"/v1/events/{implied.json()['data']['id']}")) == (404, "NOT_FOUND")
        assert code(g.get("/v1/events/verify")) == (403, "FORBIDDEN")


def test_cli_keys_create_list_revoke_reach_running_server(server):
    run = [sys.executable, "-m", "recalled_lite.cli", "keys"]
    db = ["--db", server.db_location]
    created = subprocess.run(run + ["create", "--name", "cli", "--scopes", "events:write", *db],
                             capture_output=True, text=True, cwd=server.workdir)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("rec_live_")
    with server.client(key=key) as c:  # known to the running server at once
        assert c.post("/v1/events", json={"action": "from.cli"}).status_code == 200
    listing = subprocess.run(run + ["list", *db], capture_output=True, text=True, cwd=server.workdir)
    line = next(l for l in listing.stdout.splitlines() if key.split("_")[2] in l)
    assert "active" in line and key not in listing.stdout
    key_id = line.split()[0]
    revoked = subprocess.run(run + ["revoke", key_id, *db], capture_output=True, text=True, cwd=server.workdir)
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 5
    status = None
    with server.client(key=key) as c:
        while time.monotonic() < deadline:
            r = c.post("/v1/events", json={"action": "from.cli"})
            status = (r.status_code, r.json().get("error", {}).get("code"))
            if status == (401, "REVOKED_API_KEY"):
                break
            time.sleep(0.2)
    assert status == (401, "REVOKED_API_KEY")
    bad = subprocess.run(run + ["create", "--name", "x", "--scopes", "fly", *db], capture_output=True, text=True,
                         cwd=server.workdir)
    assert bad.returncode == 2 and "unknown scope" in bad.stderr
