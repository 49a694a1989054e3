"""The server audits itself: every administrative action is an event in the log (real server).

Actions through the API and the CLI, what each event says, who may see it, that the chain
still verifies, which webhooks get them, and that no secret lands anywhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from audit_events import audit_events as admin_events
from audit_events import erased_reference
from conftest import ADMIN_KEY, ServerProcess
from webhook_receiver import Receiver, tag, wait_until


def admin_key_id(c: httpx.Client) -> tuple[str, str]:
    (key,) = [k for k in c.get("/v1/keys").json()["data"] if k["prefix"] == ADMIN_KEY.split("_")[2]]
    return key["id"], key["name"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("selfaudit"), args=["--dev"]).start()
    yield server
    server.kill()


def test_creating_and_revoking_a_key_are_listed_with_the_key_as_actor(srv):
    t = tag()
    with srv.client() as c:
        admin_id, admin_name = admin_key_id(c)
        created = c.post("/v1/keys", json={"name": f"ci-{t}", "scopes": ["events:write"], "organization": f"org_{t}"})
        assert created.status_code == 201, created.text
        key = created.json()["data"]
        assert c.delete(f"/v1/keys/{key['id']}").status_code == 200
        events = [e for e in admin_events(c) if e["targets"] and e["targets"][0]["id"] == key["id"]]
        search = c.get("/v1/events/search", params={"q": f"action:recalled.key.* ci-{t}"}).json()["data"]
        verified = c.get("/v1/events/verify").json()["data"]
    assert [e["action"] for e in events] == ["recalled.key.revoked", "recalled.key.created"]  # newest first
    for event in events:
        assert event["actor"] == {"type": "api_key", "id": admin_id, "name": admin_name, "email": None}
        assert event["targets"] == [{"type": "api_key", "id": key["id"], "name": f"ci-{t}"}]
        assert event["organization"] is None  # the acting key's: bound to none
        assert event["metadata"]["organization"] == f"org_{t}"  # the key's own
        assert event["metadata"]["scopes"] == ["events:write"] and event["metadata"]["prefix"] == key["prefix"]
        assert event["metadata"]["request_id"].startswith("req_")
        assert event["ipAddress"] == "127.0.0.1" and event["userAgent"].startswith("python-httpx")
        assert key["key"] not in json.dumps(event)
    assert {e["id"] for e in search} == {e["id"] for e in events}
    assert verified["valid"] is True


def test_a_key_bound_to_an_organization_sees_its_own_admin_actions(srv):
    t = tag()
    org, other = f"org_own_{t}", f"org_other_{t}"
    manager = srv.create_key(["keys:manage", "events:read"], organization=org, name=f"mgr-{t}")
    outsider = srv.create_key(["keys:manage", "events:read"], organization=other, name=f"out-{t}")
    with srv.client(key=manager) as c:
        minted = c.post("/v1/keys", json={"name": f"narrow-{t}", "scopes": ["events:read"]})
        assert minted.status_code == 201, minted.text
        mine = admin_events(c)
    with srv.client(key=outsider) as c:
        theirs = admin_events(c)
    minted_id = minted.json()["data"]["id"]
    (event,) = [e for e in mine if e["targets"][0]["id"] == minted_id]
    assert event["organization"] == org and event["actor"]["type"] == "api_key"
    assert event["actor"]["name"] == f"mgr-{t}"
    assert all(e["organization"] == org for e in mine)
    # What the operator did with the unbound admin key (creating this manager) is not shown.
    assert not any(e["targets"][0]["name"] == f"mgr-{t}" for e in mine)
    assert minted_id not in json.dumps(theirs)
    with srv.client() as c:  # the unbound admin sees both
        everything = json.dumps(admin_events(c))
    assert minted_id in everything and f"mgr-{t}" in everything


def test_subscription_changes_and_erasure_are_audited(srv):
    t = tag()
    receiver = Receiver()
    try:
        with srv.client() as c:
            sub = c.post("/v1/event_subscriptions", json={
                "url": receiver.url(f"/audit/{t}?token=query-secret-{t}"), "event_types": ["x.*"],
                "description": f"hook-{t}"})
            assert sub.status_code == 201, sub.text
            sub_id = sub.json()["data"]["id"]
            patched = c.patch(f"/v1/event_subscriptions/{sub_id}", json={"event_types": ["y.*"]})
            assert patched.status_code == 200, patched.text
            rotated = c.post(f"/v1/event_subscriptions/{sub_id}/secret/rotate")
            assert rotated.status_code == 200, rotated.text
            assert c.delete(f"/v1/event_subscriptions/{sub_id}").status_code == 200
            c.post("/v1/events", json={"action": "doc.viewed", "actor": {"id": f"gone_{t}"}, "organization": f"org_{t}"})
            erased = c.delete(f"/v1/actors/gone_{t}", params={"organization": f"org_{t}"})
            assert erased.status_code == 200 and erased.json()["data"]["anonymized_events"] == 1
            events = admin_events(c)
            verified = c.get("/v1/events/verify").json()["data"]
    finally:
        receiver.close()
    server_secret = srv.secret_path.read_text().strip()
    reference = erased_reference(server_secret, f"gone_{t}")
    mine = {e["action"]: e for e in events if e["targets"] and e["targets"][0]["id"] in (sub_id, reference)}
    assert set(mine) == {"recalled.subscription.created", "recalled.subscription.updated",
                         "recalled.subscription.secret_rotated", "recalled.subscription.deleted",
                         "recalled.actor.erased"}
    created = mine["recalled.subscription.created"]
    assert created["targets"] == [{"type": "event_subscription", "id": sub_id, "name": f"hook-{t}"}]
    assert created["metadata"]["url"] == receiver.url(f"/audit/{t}")  # no query string (a credential, often)
    assert created["metadata"]["event_types"] == ["x.*"]
    updated = mine["recalled.subscription.updated"]["metadata"]
    assert updated["changed"] == ["event_types"]
    assert updated["before"] == {"event_types": ["x.*"]} and updated["after"] == {"event_types": ["y.*"]}
    assert mine["recalled.subscription.secret_rotated"]["metadata"]["previous_secret_expires_at"]
    erasure = mine["recalled.actor.erased"]
    # Not the actor id (the erasure took it out of the file): a digest keyed by the server secret.
    assert erasure["targets"] == [{"type": "actor", "id": reference, "name": None}]
    assert f"gone_{t}" not in json.dumps(erasure)
    assert erasure["organization"] is None
    assert erasure["metadata"]["anonymized_events"] == 1 and erasure["metadata"]["organization"] == f"org_{t}"
    assert verified["valid"] is True
    for secret in (sub.json()["data"]["secret"], rotated.json()["data"]["secret"], f"query-secret-{t}"):
        assert secret not in json.dumps(events)


def test_clients_may_not_write_server_actions(srv):
    with srv.client() as c:
        single = c.post("/v1/events", json={"action": "recalled.key.created"})
        batch = c.post("/v1/events/batch", json={"events": [{"event_type": "recalled.actor.erased"}]})
    assert single.status_code == 400 and single.json()["error"]["details"]["field"] == "action"
    assert batch.status_code == 400 and batch.json()["error"]["details"]["errors"][0]["index"] == 0


def run_cli(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
    return subprocess.run([sys.executable, "-m", "recalled_lite.cli", *args, "--db", srv.db_location],
                          capture_output=True, text=True, env=env, timeout=60, cwd=srv.workdir)


def test_cli_key_commands_are_audited_while_the_server_keeps_writing(srv):
    t = tag()
    with srv.client() as c:
        before = c.post("/v1/events", json={"action": f"cli.before.{t}"}).json()["data"]["seq"]
        created = run_cli(srv, "keys", "create", "--name", f"cli-{t}", "--scopes", "events:read")
        assert created.returncode == 0, created.stderr
        plaintext = created.stdout.strip()
        (key,) = [k for k in run_cli_list(srv) if k[2] == f"cli-{t}"]
        # The server's next append continues the chain the CLI extended.
        after = c.post("/v1/events", json={"action": f"cli.after.{t}"})
        assert after.status_code == 200, after.text
        revoked = run_cli(srv, "keys", "revoke", key[0])
        assert revoked.returncode == 0, revoked.stderr
        again = c.post("/v1/events", json={"action": f"cli.again.{t}"})
        assert again.status_code == 200, again.text
        events = [e for e in admin_events(c) if e["targets"][0]["id"] == key[0]]
        verified = c.get("/v1/events/verify").json()["data"]
    assert [e["action"] for e in events] == ["recalled.key.revoked", "recalled.key.created"]
    user = events[0]["actor"]["name"]
    for event in events:
        assert event["actor"]["type"] == "cli" and event["actor"]["id"] == "local" and event["actor"]["name"] == user
        assert event["metadata"]["command"] in ("keys create", "keys revoke")
        assert plaintext not in json.dumps(event)
    seqs = sorted([before, after.json()["data"]["seq"], again.json()["data"]["seq"], *(e["seq"] for e in events)])
    assert seqs == list(range(before, before + 5))  # one chain, nothing forked or skipped
    assert verified["valid"] is True


def run_cli_list(srv: ServerProcess) -> list[list[str]]:
    listed = run_cli(srv, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    return [line.split() for line in listed.stdout.splitlines()[1:]]


def test_empty_event_types_do_not_get_admin_events_but_recalled_star_does(srv):
    t = tag()
    receiver = Receiver()
    try:
        with srv.client() as c:
            everything = c.post("/v1/event_subscriptions", json={"url": receiver.url(f"/all/{t}"),
                                                                   "event_types": []})
            star = c.post("/v1/event_subscriptions", json={"url": receiver.url(f"/star/{t}"),
                                                             "event_types": ["*"]})
            admin = c.post("/v1/event_subscriptions", json={"url": receiver.url(f"/admin/{t}"),
                                                              "event_types": ["recalled.key.*"]})
            assert everything.status_code == star.status_code == admin.status_code == 201
            for sub in (everything, star, admin):
                sub_id = sub.json()["data"]["id"]
                wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub_id}").json()["data"]["state"] == "valid",
                           message="the subscription's test delivery")
            key = c.post("/v1/keys", json={"name": f"hooked-{t}", "scopes": ["events:read"]}).json()["data"]
            event = c.post("/v1/events", json={"action": f"app.thing.{t}"}).json()["data"]
            wait_until(lambda: receiver.received(f"/admin/{t}") and receiver.received(f"/all/{t}")
                       and receiver.received(f"/star/{t}"), message="the deliveries")
            time.sleep(1.0)  # anything wrongly queued would arrive within this
            for sub in (everything, star, admin):
                assert c.delete(f"/v1/event_subscriptions/{sub.json()['data']['id']}").status_code == 200
    finally:
        receiver.close()
    for path in (f"/all/{t}", f"/star/{t}"):
        assert [r.json["event"]["id"] for r in receiver.received(path)] == [event["id"]]
    delivered = [r.json["event"] for r in receiver.received(f"/admin/{t}")]
    assert [e["action"] for e in delivered] == ["recalled.key.created"]
    assert delivered[0]["targets"][0]["id"] == key["id"] and key["key"] not in json.dumps(delivered)


def test_no_secret_reaches_the_log_the_export_or_the_database_file(srv):
    t = tag()
    with srv.client() as c:
        key = c.post("/v1/keys", json={"name": f"secretive-{t}", "scopes": ["events:read"]}).json()["data"]
        assert c.delete(f"/v1/keys/{key['id']}").status_code == 200
        sub = c.post("/v1/event_subscriptions", json={"url": "http://127.0.0.1:9/s", "event_types": ["z.*"]}).json()["data"]
        rotated = c.post(f"/v1/event_subscriptions/{sub['id']}/secret/rotate").json()["data"]
        listed = json.dumps(admin_events(c))
        export = c.get("/v1/exports", params={"format": "ndjson"}).text
        searched = c.get("/v1/events/search", params={"q": "action:recalled.*", "limit": 200}).text
    server_secret = srv.secret_path.read_text().strip()
    secrets = {"key plaintext": key["key"], "admin key": ADMIN_KEY, "webhook secret": sub["secret"],
               "rotated webhook secret": rotated["secret"], "server secret": server_secret}
    if srv.on_postgres:
        files = srv.stored_bytes()
    else:
        files = b"".join(p.read_bytes() for p in srv.db_path.parent.glob("recalled.db*")
                         if not p.name.endswith(".secret"))
    log = srv.log_text()
    assert f"secretive-{t}" in listed and f"secretive-{t}" in export  # the actions are there ...
    for name, secret in secrets.items():  # ... their secrets are not
        for where, text in (("API list", listed), ("export", export), ("search", searched), ("log", log)):
            assert secret not in text, f"{name} found in the {where}"
        assert secret.encode() not in files, f"{name} found in the database file"


def test_a_crash_never_leaves_a_key_without_its_audit_event(tmp_path):
    srv = ServerProcess(tmp_path / "crash").start()
    stop = threading.Event()

    def mint() -> None:
        with srv.client(timeout=5) as c:
            while not stop.is_set():
                try:
                    c.post("/v1/keys", json={"name": "crash", "scopes": ["events:read"]})
                except httpx.HTTPError:
                    return

    threads = [threading.Thread(target=mint) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    stop.set()
    for thread in threads:
        thread.join(10)
    srv.start()
    try:
        with srv.client() as c:
            keys = {k["id"] for k in c.get("/v1/keys").json()["data"] if k["name"] == "crash"}
            audited = {e["targets"][0]["id"] for e in admin_events(c, **{"action": "recalled.key.created"})
                       if e["targets"][0]["name"] == "crash"}
            verified = c.get("/v1/events/verify").json()["data"]
    finally:
        srv.kill()
    assert keys, "no key was created before the kill"
    assert keys == audited
    assert verified["valid"] is True


def test_admin_events_never_use_an_organizations_monthly_quota(tmp_path):
    srv = ServerProcess(tmp_path / "quota", config_text="[limits.monthly_events]\norg_quota = 2\n").start()
    try:
        manager = srv.create_key(["keys:manage", "events:read"], organization="org_quota", name="qm")
        with srv.client(key=manager) as c:
            for i in range(3):  # three audit events in org_quota
                assert c.post("/v1/keys", json={"name": f"q{i}", "scopes": ["events:read"]}).status_code == 201
        srv.restart()  # the count is rebuilt from the table
        with srv.client() as c:
            assert len(admin_events(c, organization="org_quota")) == 3
            codes = [c.post("/v1/events", json={"action": "q.x", "organization": "org_quota"}).status_code
                     for _ in range(3)]
    finally:
        srv.kill()
    assert codes == [200, 200, 429]
