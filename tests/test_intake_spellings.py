"""Every multi-word intake field in both spellings (snake_case and camelCase), real server.

Responses are camelCase, so clients send `occurredAt`, `idempotencyKey`, ... back. Both
spellings must store the same event; two different values for one field are a 400 naming both.
"""

from __future__ import annotations

import uuid

import msgspec
import pytest

from recalled_lite.schemas import CAMEL_ALIASES, EventIn

# What the server decides itself (or that differs by construction between two stored events).
SERVER_SET = {"id", "seq", "hash", "prevHash", "signature", "receivedAt"}


def snake_and_camel(tag: str) -> tuple[dict, dict]:
    common = {"organization": f"org_spell_{tag}",
              "actor": {"type": "user", "id": f"u_{tag}", "name": "Ada", "email": "ada@example.com"},
              "targets": [{"type": "doc", "id": "d1", "name": "Plan"}], "metadata": {"n": 1}}
    snake = {**common, "event_type": "doc.shared", "occurred_at": "2026-01-05T10:00:00+02:00",
             "ip_address": "198.51.100.7", "user_agent": "Mozilla/5.0 (spelling)",
             "idempotency_key": f"spell-{tag}"}
    camel = {**common, "eventType": "doc.shared", "occurredAt": "2026-01-05T10:00:00+02:00",
             "ipAddress": "198.51.100.7", "userAgent": "Mozilla/5.0 (spelling)",
             "idempotencyKey": f"spell-{tag}-camel"}
    return snake, camel


def stored(c, event_id: str) -> dict:
    r = c.get(f"/v1/events/{event_id}")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def comparable(event: dict) -> dict:
    event = {k: v for k, v in event.items() if k not in SERVER_SET}
    event["idempotencyKey"] = event["idempotencyKey"].removesuffix("-camel")
    return event


def test_the_alias_table_covers_every_camel_field_of_the_struct():
    info = msgspec.inspect.type_info(EventIn)
    encoded = {f.encode_name for f in info.fields}
    camel_fields = {name for name in encoded if any(ch.isupper() for ch in name)}
    assert camel_fields == set(CAMEL_ALIASES.values())
    assert set(CAMEL_ALIASES) <= encoded  # each snake spelling is a field too


def test_both_spellings_store_the_same_event(server):
    snake, camel = snake_and_camel(uuid.uuid4().hex[:8])
    with server.client() as c:
        a = c.post("/v1/events", json=snake)
        b = c.post("/v1/events", json=camel)
        assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
        first, second = stored(c, a.json()["data"]["id"]), stored(c, b.json()["data"]["id"])
    assert first["occurredAt"] == "2026-01-05T08:00:00.000Z"  # back-dated, not the receive time
    assert second["ipAddress"] == "198.51.100.7" and second["userAgent"] == "Mozilla/5.0 (spelling)"
    assert second["idempotencyKey"] == camel["idempotencyKey"]
    assert comparable(first) == comparable(second)


def test_both_spellings_store_the_same_event_in_a_batch(server):
    snake, camel = snake_and_camel(uuid.uuid4().hex[:8])
    with server.client() as c:
        r = c.post("/v1/events/batch", json={"events": [snake, camel]})
        assert r.status_code == 200, r.text
        first, second = (stored(c, e["id"]) for e in r.json()["data"])
    assert second["occurredAt"] == "2026-01-05T08:00:00.000Z"
    assert comparable(first) == comparable(second)


@pytest.mark.parametrize("retry_in", ["camel", "snake"])
def test_a_retry_in_the_other_spelling_is_deduplicated(server, retry_in):
    tag = uuid.uuid4().hex[:8]
    snake, camel = snake_and_camel(tag)
    camel["idempotencyKey"] = snake["idempotency_key"]
    original, retry = (snake, camel) if retry_in == "camel" else (camel, snake)
    with server.client() as c:
        first = c.post("/v1/events", json=original)
        again = c.post("/v1/events", json=retry)
        in_batch = c.post("/v1/events/batch", json={"events": [retry]})
        listed = c.get("/v1/events", params={"organization": snake["organization"]}).json()["data"]
    assert first.status_code == 200 and first.json()["deduplicated"] is False
    assert again.status_code == 200, again.text
    assert again.json()["deduplicated"] is True and again.headers.get("idempotent-replayed") == "true"
    assert again.json()["data"]["id"] == first.json()["data"]["id"]
    assert in_batch.json()["deduplicated"] == [0]
    assert in_batch.json()["data"][0]["id"] == first.json()["data"]["id"]
    assert [e["id"] for e in listed] == [first.json()["data"]["id"]]  # stored once


def test_the_same_value_in_both_spellings_is_accepted(server):
    snake, camel = snake_and_camel(uuid.uuid4().hex[:8])
    camel["idempotencyKey"] = snake["idempotency_key"]
    with server.client() as c:
        r = c.post("/v1/events", json={**snake, **camel})
    assert r.status_code == 200, r.text
    event = r.json()["data"]
    assert event["occurredAt"] == "2026-01-05T08:00:00.000Z" and event["idempotencyKey"] == snake["idempotency_key"]


CONFLICTS = {
    "event_type": ("a.one", "a.two"),
    "occurred_at": ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),
    "ip_address": ("198.51.100.1", "198.51.100.2"),
    "user_agent": ("ua/1", "ua/2"),
    "idempotency_key": ("k-1", "k-2"),
}


@pytest.mark.parametrize("snake_name", sorted(CONFLICTS))
def test_two_values_for_one_field_are_a_400_naming_both_spellings(server, snake_name):
    camel_name = CAMEL_ALIASES[snake_name]
    one, two = CONFLICTS[snake_name]
    body = {"event_type": "spell.conflict", snake_name: one, camel_name: two}
    with server.client() as c:
        r = c.post("/v1/events", json=body)
        batch = c.post("/v1/events/batch", json={"events": [{"action": "spell.ok"}, body]})
        count = c.get("/v1/events", params={"action": "spell.*"}).json()["data"]
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert snake_name in error["message"] and camel_name in error["message"]
    assert error["details"]["fields"] == [snake_name, camel_name]
    assert batch.status_code == 400, batch.text
    (entry,) = batch.json()["error"]["details"]["errors"]
    assert entry["index"] == 1
    assert snake_name in entry["message"] and camel_name in entry["message"]
    assert entry["fields"] == [snake_name, camel_name]
    assert count == []  # nothing of either request was stored


def test_camel_idempotency_key_must_match_the_header_too(server):
    with server.client() as c:
        r = c.post("/v1/events", json={"action": "spell.header", "idempotencyKey": "body-key"},
                   headers={"Idempotency-Key": "header-key"})
        ok = c.post("/v1/events", json={"action": "spell.header", "idempotencyKey": "same-key"},
                    headers={"Idempotency-Key": "same-key"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "idempotency_key"
    assert ok.status_code == 200 and ok.json()["data"]["idempotencyKey"] == "same-key"
