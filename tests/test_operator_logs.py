"""Operator logs (JSON lines on stderr): access lines, the client address, state changes, the
effective config at start, and never a secret. Real servers; the log is the server's stderr."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from audit_events import erased_reference
from conftest import ADMIN_KEY, ServerProcess
from recalled_lite.client_address import ClientAddress, parse_networks

SERVER_SECRET = "e" * 64


def log_lines(srv: ServerProcess) -> list[dict]:
    lines = []
    for line in srv.log_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def access_line(srv: ServerProcess, request_id: str) -> dict:
    for _ in range(100):
        found = [e for e in log_lines(srv) if e.get("msg") == "request" and e.get("request_id") == request_id]
        if found:
            return found[0]
        time.sleep(0.05)  # the line is written after the response is sent
    raise AssertionError(f"no access line for {request_id}")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("logs"), args=["--dev"], env={"RECALLED_SECRET": SERVER_SECRET}).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("proxied"),
                        config_text='[server]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8"]\n').start()
    yield srv
    srv.kill()


# -- unit: the address rule --------------------------------------------------------------------


@pytest.mark.parametrize("peer,header,expected", [
    ("127.0.0.1", None, "127.0.0.1"),
    ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
    ("127.0.0.1", "198.51.100.1, 203.0.113.9", "203.0.113.9"),          # right-most untrusted
    ("127.0.0.1", "198.51.100.1, 203.0.113.9, 10.1.2.3", "203.0.113.9"),  # skip trusted hops
    ("127.0.0.1", "10.0.0.5, 10.0.0.6", "10.0.0.5"),                     # all trusted: left-most
    ("127.0.0.1", "198.51.100.1, garbage", "127.0.0.1"),                 # garbled: keep the proxy
    ("127.0.0.1", "[2001:db8::7]:443", "2001:db8::7"),
    ("127.0.0.1", "203.0.113.9:5555", "203.0.113.9"),
    ("198.51.100.50", "203.0.113.9", "198.51.100.50"),                   # untrusted peer: ignored
    (None, "203.0.113.9", None),
])
def test_client_address_rule(peer, header, expected):
    assert ClientAddress(["127.0.0.1", "10.0.0.0/8"]).resolve(peer, header) == expected


def test_without_trusted_proxies_the_header_is_never_read():
    assert ClientAddress().resolve("192.0.2.1", "203.0.113.9") == "192.0.2.1"
    assert ClientAddress().enabled is False


def test_a_bad_trusted_proxy_stops_the_start_naming_the_key(tmp_path):
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/8", "not-an-ip"])
    srv = ServerProcess(tmp_path, config_text='[server]\ntrusted_proxies = ["nope"]\n')
    with pytest.raises(RuntimeError) as failed:
        srv.start()
    assert "server" in str(failed.value) and "trusted_proxies" in str(failed.value) and "'nope'" in str(failed.value)


# -- the access line ---------------------------------------------------------------------------


def test_an_access_line_has_the_address_the_user_agent_and_the_key_id(plain):
    request_id = f"req-logs-{uuid.uuid4().hex[:8]}"
    with plain.client(headers={"user-agent": "audit-test/1.0", "x-request-id": request_id}) as c:
        (me,) = [k for k in c.get("/v1/keys").json()["data"] if k["prefix"] == ADMIN_KEY.split("_")[2]]
        c.get("/v1/events", headers={"x-request-id": request_id + "-2"})
    line = access_line(plain, request_id + "-2")
    assert line["client"] == "127.0.0.1"
    assert line["user_agent"] == "audit-test/1.0"
    assert line["key_id"] == me["id"]
    assert line["method"] == "GET" and line["path"] == "/v1/events" and line["status"] == 200


def test_an_unknown_key_is_not_named_and_a_revoked_one_is(plain):
    wrong = "rec_live_unknown0_" + "x" * 32
    with plain.client(key=wrong, headers={"x-request-id": "req-logs-unknown"}) as c:
        assert c.get("/v1/events").status_code == 401
    assert access_line(plain, "req-logs-unknown")["key_id"] is None
    doomed = plain.create_key(["events:read"], name="doomed")
    with plain.client() as c:
        key_id = [k for k in c.get("/v1/keys").json()["data"] if k["name"] == "doomed"][0]["id"]
        c.delete(f"/v1/keys/{key_id}")
    with plain.client(key=doomed, headers={"x-request-id": "req-logs-revoked"}) as c:
        assert c.get("/v1/events").json()["error"]["code"] == "REVOKED_API_KEY"
    assert access_line(plain, "req-logs-revoked")["key_id"] == key_id


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(plain):
    with plain.client(headers={"x-forwarded-for": "203.0.113.9", "x-request-id": "req-logs-xff"}) as c:
        c.get("/healthz")
    assert access_line(plain, "req-logs-xff")["client"] == "127.0.0.1"


def test_x_forwarded_for_from_a_trusted_proxy_is_used(proxied):
    with proxied.client(headers={"x-forwarded-for": "198.51.100.1, 203.0.113.9, 10.9.9.9",
                                 "x-request-id": "req-logs-trusted"}) as c:
        created = c.post("/v1/keys", json={"name": "via-proxy", "scopes": ["events:read"]})
    assert created.status_code == 201
    assert access_line(proxied, "req-logs-trusted")["client"] == "203.0.113.9"
    with proxied.client() as c:  # the audit event records the same address
        (event,) = [e for e in c.get("/v1/events", params={"action": "recalled.key.created"}).json()["data"]
                    if e["targets"][0]["name"] == "via-proxy"]
    assert event["ipAddress"] == "203.0.113.9"


# -- the start line and the state changes ------------------------------------------------------


def test_the_start_line_has_the_effective_config_without_secrets(plain):
    (start,) = [e for e in log_lines(plain) if e.get("msg") == "effective config"]
    config = start["config"]
    assert config["server"]["dev"] is True and config["server"]["trusted_proxies"] == []
    assert config["database"]["synchronous"] == "FULL"
    assert config["bootstrap_key"] == "[redacted]" and config["secret"] == "[redacted]"
    assert ADMIN_KEY not in json.dumps(start) and SERVER_SECRET not in json.dumps(start)


def test_state_changes_are_logged_and_no_secret_is_ever_logged(plain):
    with plain.client() as c:
        key = c.post("/v1/keys", json={"name": "logged", "scopes": ["events:read"]}).json()["data"]
        assert c.delete(f"/v1/keys/{key['id']}").status_code == 200
        sub = c.post("/v1/event_subscriptions", json={"url": "http://127.0.0.1:9/log", "event_types": ["x.*"]})
        assert sub.status_code == 201, sub.text
        sub = sub.json()["data"]
        rotated = c.post(f"/v1/event_subscriptions/{sub['id']}/secret/rotate").json()["data"]
        c.post("/v1/events", json={"action": "x.y", "actor": {"id": "u_logged"}})
        assert c.delete("/v1/actors/u_logged").status_code == 200
        c.get("/healthz")  # one more request: everything above is flushed to the log by now
    changes = {}
    for entry in log_lines(plain):
        if entry.get("msg") == "state change":
            changes.setdefault(entry["action"], []).append(entry)
    (created,) = [e for e in changes["recalled.key.created"] if e["targets"][0]["id"] == key["id"]]
    assert created["actor"]["type"] == "api_key" and created["metadata"]["scopes"] == ["events:read"]
    assert created["event_id"].startswith("evt_") and created["seq"] > 0
    assert any(e["targets"][0]["id"] == key["id"] for e in changes["recalled.key.revoked"])
    assert any(e["targets"][0]["id"] == sub["id"] for e in changes["recalled.subscription.secret_rotated"])
    assert any(e["targets"][0]["id"] == erased_reference(SERVER_SECRET, "u_logged")
               for e in changes["recalled.actor.erased"])
    log = plain.log_text()
    for name, secret in {"admin key": ADMIN_KEY, "server secret": SERVER_SECRET, "key plaintext": key["key"],
                         "webhook secret": sub["secret"], "rotated webhook secret": rotated["secret"]}.items():
        assert secret not in log, f"the {name} is in the log"
