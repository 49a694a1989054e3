"""SPEC §4.8: POST /v1/embed/token and GET /v1/embed/events (the React widget's feed): no API key,
read-only, narrowed to the token's organization, CORS-enabled; expired, forged or revoked → 401."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import datetime, timezone

import httpx
import pytest


@pytest.fixture(scope="module")
def feed(server):
    tag = uuid.uuid4().hex[:8]
    orgs = {"a": f"org_embed_a_{tag}", "b": f"org_embed_b_{tag}"}
    with server.client() as c:
        for i in range(7):
            body = {"action": f"widget.{'shown' if i % 2 else 'clicked'}", "organization": orgs["a" if i < 5 else "b"],
                    "actor": {"id": f"u{i}", "name": f"Widget User {i}", "email": f"w{i}@example.com"},
                    "targets": [{"type": "panel", "id": f"p{i}"}], "metadata": {"tag": tag, "i": i}}
            assert c.post("/v1/events", json=body).status_code == 200
    return tag, orgs


def mint(server, key="admin", **body) -> dict:
    with server.client(key=key) as c:
        r = c.post("/v1/embed/token", json=body)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def get_feed(server, **params) -> httpx.Response:
    return httpx.get(server.url + "/v1/embed/events", params=params, headers={"Accept": "application/json"})


def test_token_shape_and_validation(server, feed):
    _, orgs = feed
    before = datetime.now(timezone.utc).timestamp()
    data = mint(server)
    assert set(data) == {"token", "expiresAt", "scopes", "organization"}
    assert data["token"].startswith("emb_") and data["scopes"] == ["events:read"] and data["organization"] is None
    expires = datetime.strptime(data["expiresAt"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    assert 3590 < expires - before < 3610
    assert mint(server, organization=orgs["a"], ttl_seconds=900, scopes=["events:read"])["organization"] == orgs["a"]
    with server.client() as c:
        assert c.post("/v1/embed/token").status_code == 200  # no body: the defaults
        for body, field in (({"ttl_seconds": 0}, "ttl_seconds"), ({"ttl_seconds": 86401}, "ttl_seconds"),
                            ({"ttl_seconds": "60"}, "ttl_seconds"), ({"scopes": ["events:write"]}, "scopes"),
                            ({"organization": "o" * 129}, "organization"), ({"organization": ""}, "organization")):
            r = c.post("/v1/embed/token", json=body)
            assert r.status_code == 400 and r.json()["error"]["details"]["field"] == field, body
        r = c.post("/v1/embed/token", content=b"{nope", headers={"Content-Type": "application/json"})
        assert r.status_code == 400


def test_feed_pages_like_the_widget_and_searches(server, feed):
    tag, orgs = feed
    token = mint(server, organization=orgs["a"])["token"]
    r = get_feed(server, token=token, limit=2)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    events, body = [], r.json()
    for _ in range(10):  # the widget's "load more": token, limit and the cursor
        events.extend(body["data"])
        if not body["nextCursor"]:
            break
        body = get_feed(server, token=token, limit=2, cursor=body["nextCursor"]).json()
    assert len(events) == 5 and {e["organization"] for e in events} == {orgs["a"]}
    keys = [(e["occurredAt"], e["seq"]) for e in events]
    assert keys == sorted(keys, reverse=True)
    first = events[0]  # what the widget renders
    assert {"id", "occurredAt", "action", "actor", "organization", "targets", "metadata"} <= set(first)
    assert first["actor"]["name"].startswith("Widget User") and first["targets"][0]["type"] == "panel"
    found = get_feed(server, token=token, q=f"{tag} action:widget.shown").json()["data"]
    assert {e["action"] for e in found} == {"widget.shown"} and len(found) == 2
    paged = get_feed(server, token=token, q=tag, limit=1).json()
    more = get_feed(server, token=token, q=tag, limit=10, cursor=paged["nextCursor"]).json()
    assert len(paged["data"]) + len(more["data"]) == 5
    bad = get_feed(server, token=token, q='"unterminated')
    assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == "*"


def test_feed_is_narrowed_to_the_token_organization(server, feed):
    tag, orgs = feed
    token = mint(server, organization=orgs["a"])["token"]
    assert get_feed(server, token=token, organization=orgs["b"]).json() == {"data": [], "nextCursor": None}
    assert get_feed(server, token=token, q=f"org:{orgs['b']}").json()["data"] == []
    assert get_feed(server, token=token, q=f"{tag} -org:{orgs['a']}").json()["data"] == []
    wide = mint(server)["token"]  # minted by an unbound key without organization: every organization
    orgs_seen = {e["organization"] for e in get_feed(server, token=wide, q=tag).json()["data"]}
    assert orgs_seen == {orgs["a"], orgs["b"]}

    bound = server.create_key(["embed:write"], organization=orgs["b"])
    data = mint(server, key=bound)
    assert data["organization"] == orgs["b"]  # forced to the key's organization
    assert {e["organization"] for e in get_feed(server, token=data["token"], q=tag).json()["data"]} == {orgs["b"]}
    with server.client(key=bound) as c:
        r = c.post("/v1/embed/token", json={"organization": orgs["a"]})
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"


def test_cors_preflight_and_read_only(server, feed):
    r = httpx.options(server.url + "/v1/embed/events", headers={
        "Origin": "https://admin.example.com", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "accept"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert "GET" in r.headers["access-control-allow-methods"]
    assert "accept" in r.headers["access-control-allow-headers"].lower()
    token = mint(server)["token"]
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert httpx.request(method, server.url + "/v1/embed/events", params={"token": token}).status_code == 405
    # An embed token is not an API key.
    r = httpx.get(server.url + "/v1/events", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def _tamper(token: str, **changes) -> str:
    body, signature = token[4:].split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"emb_{forged}.{signature}"


def test_expired_forged_and_revoked_tokens_get_401(server, feed, make_server):
    _, orgs = feed
    token = mint(server, organization=orgs["a"])["token"]
    far_future = int(time.time() * 1000) + 10**9
    for bad in (None, "", "nope", token + "x", token[:-2], _tamper(token, org=orgs["b"]), _tamper(token, exp=far_future),
                token.replace("emb_", "emb_x"), "emb_." + token.split(".")[1], "emb_" + "A" * 2000):
        params = {} if bad is None else {"token": bad}
        r = get_feed(server, **params)
        assert r.status_code == 401, bad
        assert r.json()["error"]["code"] == "UNAUTHORIZED"
        assert r.headers["access-control-allow-origin"] == "*"  # so the widget can show why

    other = make_server("embed_other")  # another server, another secret: its tokens are forgeries here
    with other.client() as c:
        foreign = c.post("/v1/embed/token", json={}).json()["data"]["token"]
    assert get_feed(server, token=foreign).status_code == 401

    short = mint(server, ttl_seconds=1)["token"]
    assert get_feed(server, token=short).status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = get_feed(server, token=short)
        if r.status_code == 401:
            break
        time.sleep(0.1)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]

    minting_key = server.create_key(["embed:write"])
    revocable = mint(server, key=minting_key)["token"]
    assert get_feed(server, token=revocable).status_code == 200
    with server.client() as c:
        key_id = next(k["id"] for k in c.get("/v1/keys").json()["data"] if minting_key.split("_")[2] == k["prefix"])
        assert c.delete(f"/v1/keys/{key_id}").status_code == 200
    r = get_feed(server, token=revocable)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
