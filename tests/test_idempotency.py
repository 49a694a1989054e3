"""SPEC §4.1 idempotency: replays return the original, conflicts 409, races store one row."""

from __future__ import annotations

import asyncio
import uuid


def count_rows(server, key: str) -> int:
    return server.query("SELECT count(*) FROM events WHERE idempotency_key = ?", key)[0][0]


def test_same_key_same_body_returns_original(server):
    key = f"idem-{uuid.uuid4()}"
    body = {"action": "charge.created", "idempotency_key": key, "metadata": {"amount": 10}}
    with server.client() as c:
        first = c.post("/v1/events", json=body)
        second = c.post("/v1/events", json=body)
    assert first.status_code == second.status_code == 200
    assert first.json()["deduplicated"] is False and "idempotent-replayed" not in first.headers
    assert second.json()["deduplicated"] is True
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["data"] == first.json()["data"]
    assert count_rows(server, key) == 1


def test_header_form_and_default_occurred_at(server):
    key = f"idem-{uuid.uuid4()}"
    with server.client() as c:
        # No occurred_at: the default (receive time) must not make repeats differ.
        a = c.post("/v1/events", json={"action": "x"}, headers={"Idempotency-Key": key})
        b = c.post("/v1/events", json={"action": "x", "idempotency_key": key})
    assert b.json()["deduplicated"] is True
    assert b.json()["data"]["id"] == a.json()["data"]["id"]
    assert count_rows(server, key) == 1


def test_same_key_other_body_conflicts(server):
    key = f"idem-{uuid.uuid4()}"
    with server.client() as c:
        original = c.post("/v1/events", json={"action": "a", "idempotency_key": key}).json()["data"]
        r = c.post("/v1/events", json={"action": "b", "idempotency_key": key})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert r.json()["error"]["details"]["event_id"] == original["id"]
    assert count_rows(server, key) == 1


def test_key_is_scoped_per_organization(server):
    key = f"idem-{uuid.uuid4()}"
    with server.client() as c:
        a = c.post("/v1/events", json={"action": "a", "organization": "org_1", "idempotency_key": key})
        b = c.post("/v1/events", json={"action": "a", "organization": "org_2", "idempotency_key": key})
    assert a.json()["deduplicated"] is False and b.json()["deduplicated"] is False
    assert a.json()["data"]["id"] != b.json()["data"]["id"]
    assert count_rows(server, key) == 2


def test_fifty_concurrent_identical_requests_store_one_row(server):
    key = f"idem-{uuid.uuid4()}"
    body = {"action": "race.won", "idempotency_key": key, "actor": {"id": "u1"}}

    async def fire():
        async with server.async_client() as c:
            return await asyncio.gather(*(c.post("/v1/events", json=body) for _ in range(50)))

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    ids = {r.json()["data"]["id"] for r in responses}
    assert len(ids) == 1
    assert sum(not r.json()["deduplicated"] for r in responses) == 1
    assert count_rows(server, key) == 1


def test_batch_idempotency(server):
    key = f"idem-{uuid.uuid4()}"
    with server.client() as c:
        stored = c.post("/v1/events", json={"action": "a", "idempotency_key": key}).json()["data"]
        r = c.post("/v1/events/batch", json={"events": [
            {"action": "fresh"}, {"action": "a", "idempotency_key": key},
            {"action": "c", "idempotency_key": key + "-2"}, {"action": "c", "idempotency_key": key + "-2"},
        ]})
        assert r.status_code == 200, r.text
        assert r.json()["deduplicated"] == [1, 3]
        data = r.json()["data"]
        assert data[1]["id"] == stored["id"]
        assert data[3]["id"] == data[2]["id"]
        conflict = c.post("/v1/events/batch", json={"events": [{"action": "zzz", "idempotency_key": key}]})
        assert conflict.status_code == 409
        assert conflict.json()["error"]["details"] == {"event_id": stored["id"], "index": 0}
        inner = c.post("/v1/events/batch", json={"events": [
            {"action": "p", "idempotency_key": key + "-3"}, {"action": "q", "idempotency_key": key + "-3"}]})
        assert inner.status_code == 400
        assert inner.json()["error"]["details"]["errors"][0]["index"] == 1
    assert count_rows(server, key + "-2") == 1
    assert count_rows(server, key + "-3") == 0
