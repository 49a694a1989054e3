"""SPEC §4.1-4.3: every field, alias, limit and error of intake, against the real server."""

from __future__ import annotations

import datetime as dt
import re

import pytest

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
EVENT_KEYS = {"id", "projectId", "organization", "action", "actor", "targets", "metadata", "ipAddress",
              "userAgent", "occurredAt", "receivedAt", "idempotencyKey", "seq", "hash", "prevHash", "signature"}


def post(server, body, **kw):
    with server.client() as c:
        return c.post("/v1/events", json=body, **kw)


def test_event_object_shape_is_exactly_the_spec(server):
    r = post(server, {"action": "shape.check"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"data", "deduplicated"}
    event = body["data"]
    assert set(event) == EVENT_KEYS
    assert event["actor"] == {"type": None, "id": None, "name": None, "email": None}
    assert event["targets"] is None and event["metadata"] is None and event["organization"] is None
    assert ISO_MS.match(event["occurredAt"]) and ISO_MS.match(event["receivedAt"])
    assert event["occurredAt"] == event["receivedAt"]  # default = receive time
    assert event["projectId"].startswith("proj_")
    assert re.match(r"^sha256:[0-9a-f]{64}$", event["hash"])
    assert re.match(r"^hmac-sha256:[0-9a-f]{64}$", event["signature"])


def test_quickstart_shape_works_as_is(server):
    body = {"event_type": "user.signed_up", "occurred_at": "2026-04-14T09:12:45Z",
            "idempotency_key": "qs-1", "data": {"plan": "pro"}}
    r = post(server, body)
    assert r.status_code == 200, r.text
    event = r.json()["data"]
    assert event["action"] == "user.signed_up"
    assert event["metadata"] == {"plan": "pro"}
    assert event["occurredAt"] == "2026-04-14T09:12:45.000Z"
    assert event["idempotencyKey"] == "qs-1"


def test_all_fields_round_trip_and_seq_increases(server):
    body = {"action": "doc.shared", "organization": "org_fields",
            "actor": {"type": "user", "id": "u_1", "name": "Ada", "email": "ada@example.com"},
            "targets": [{"type": "doc", "id": "d1", "name": "Plan"}, {"type": "user", "id": "u_2"}],
            "metadata": {"k": [1, 2, {"x": True}]}, "occurred_at": "2026-04-14T11:12:45.5+02:00",
            "ip_address": "198.51.100.7", "user_agent": "curl/8", "unknown_field": "ignored"}
    first = post(server, body).json()["data"]
    second = post(server, {"action": "doc.viewed"}).json()["data"]
    assert first["organization"] == "org_fields"
    assert first["actor"] == body["actor"]
    assert first["targets"] == [{"type": "doc", "id": "d1", "name": "Plan"}, {"type": "user", "id": "u_2", "name": None}]
    assert first["metadata"] == body["metadata"]
    assert first["occurredAt"] == "2026-04-14T09:12:45.500Z"
    assert first["ipAddress"] == "198.51.100.7" and first["userAgent"] == "curl/8"
    assert second["seq"] == first["seq"] + 1
    assert second["prevHash"] == first["hash"]


def _error(r):
    return r.status_code, r.json()["error"]["code"]


@pytest.mark.parametrize("body,field", [
    ({}, "action"),
    ({"action": ""}, "action"),
    ({"action": "x" * 256}, "action"),
    ({"action": 5}, "action"),
    ({"action": "a", "organization": "o" * 129}, "organization"),
    ({"action": "a", "actor": {"email": "e" * 321}}, "actor.email"),
    ({"action": "a", "actor": {"name": "n" * 256}}, "actor.name"),
    ({"action": "a", "actor": "user"}, "actor"),
    ({"action": "a", "targets": [{"type": "t"}]}, "targets[0].id"),
    ({"action": "a", "targets": [{"type": "t", "id": str(i)} for i in range(51)]}, "targets"),
    ({"action": "a", "metadata": [1, 2]}, "metadata"),
    ({"action": "a", "occurred_at": "2026-04-14T09:12:45"}, "occurred_at"),
    ({"action": "a", "occurred_at": "yesterday"}, "occurred_at"),
    ({"action": "a", "idempotency_key": "k" * 256}, "idempotency_key"),
    ({"action": "a", "idempotency_key": "tab\there"}, "idempotency_key"),
    ({"action": "a\u0000b"}, "action"),
])
def test_validation_errors_name_the_field(server, body, field):
    r = post(server, body)
    assert _error(r) == (400, "VALIDATION_ERROR"), r.text
    assert r.json()["error"]["details"]["field"] == field
    assert r.json()["error"]["message"]


def test_missing_action_message_matches_spec(server):
    r = post(server, {"organization": "x"})
    assert r.json() == {"error": {"code": "VALIDATION_ERROR", "message": "action is required",
                                  "details": {"field": "action"}}}


def test_occurred_at_future_limit(server):
    now = dt.datetime.now(dt.timezone.utc)
    ok = post(server, {"action": "a", "occurred_at": (now + dt.timedelta(minutes=50)).isoformat()})
    assert ok.status_code == 200
    bad = post(server, {"action": "a", "occurred_at": (now + dt.timedelta(minutes=70)).isoformat()})
    assert _error(bad) == (400, "VALIDATION_ERROR")
    assert bad.json()["error"]["details"]["field"] == "occurred_at"


def test_metadata_limits(server):
    big = {"action": "a", "metadata": {"blob": "x" * (33 * 1024)}}
    r = post(server, big)
    assert _error(r) == (413, "EVENT_TOO_LARGE")
    details = r.json()["error"]["details"]
    assert details["field"] == "metadata" and details["limit"] == 32768 and details["size"] > 32768
    deep: dict = {}
    node = deep
    for _ in range(17):
        node["n"] = {}
        node = node["n"]
    r = post(server, {"action": "a", "metadata": deep})
    assert _error(r) == (400, "VALIDATION_ERROR")
    assert r.json()["error"]["details"]["field"] == "metadata"


def test_batch_all_or_nothing(server):
    org = "org_batch_aon"
    events = [{"action": "ok", "organization": org} for _ in range(5)]
    events[1] = {"organization": org}                       # no action
    events[3] = {"action": "x", "organization": org, "occurred_at": "nope"}
    with server.client() as c:
        r = c.post("/v1/events/batch", json={"events": events})
        assert _error(r) == (400, "VALIDATION_ERROR")
        errors = r.json()["error"]["details"]["errors"]
        assert [(e["index"], e["field"]) for e in errors] == [(1, "action"), (3, "occurred_at")]
        verify = c.get("/v1/events/verify").json()["data"]
    stored = server.query("SELECT count(*) FROM events WHERE organization = ?", org)[0][0]
    assert stored == 0
    assert verify["valid"] is True


def test_batch_success_and_limits(server):
    with server.client() as c:
        r = c.post("/v1/events/batch", json={"events": [{"action": f"b.{i}"} for i in range(1000)]})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert len(data) == 1000 and r.json()["deduplicated"] == []
        assert [e["seq"] for e in data] == list(range(data[0]["seq"], data[0]["seq"] + 1000))
        assert [e["action"] for e in data[:3]] == ["b.0", "b.1", "b.2"]
        too_many = c.post("/v1/events/batch", json={"events": [{"action": "x"}] * 1001})
        assert _error(too_many) == (400, "VALIDATION_ERROR")
        assert too_many.json()["error"]["details"]["field"] == "events"
        empty = c.post("/v1/events/batch", json={"events": []})
        assert _error(empty) == (400, "VALIDATION_ERROR")
        not_list = c.post("/v1/events/batch", json={"events": {"action": "x"}})
        assert _error(not_list) == (400, "VALIDATION_ERROR")


def test_get_event_by_id(server):
    with server.client() as c:
        created = c.post("/v1/events", json={"action": "get.me"}).json()["data"]
        got = c.get(f"/v1/events/{created['id']}")
        assert got.status_code == 200 and got.json()["data"] == created
        missing = c.get("/v1/events/evt_01M00000000000000000000000")
        assert _error(missing) == (404, "NOT_FOUND")
