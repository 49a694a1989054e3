"""SPEC §4.5 on the real server: GET /v1/events (every filter, cursors, tailing), GET /v1/events/{id},
route order, scopes and the organization wall on every read route."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

MAX_PAGES = 500


def uid() -> str:
    return uuid.uuid4().hex[:10]


def post(c, body: dict) -> dict:
    r = c.post("/v1/events", json=body)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def walk(c, path: str, params: dict, *, cursor_only: bool = True) -> list[dict]:
    """Every page of a list; later pages send only the cursor (it remembers the filters)."""
    seen: list[dict] = []
    r = c.get(path, params=params)
    for _ in range(MAX_PAGES):
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"data", "nextCursor"}
        seen.extend(body["data"])
        if body["nextCursor"] is None:
            return seen
        nxt = {"cursor": body["nextCursor"]} if cursor_only else {**params, "cursor": body["nextCursor"]}
        if "limit" in params:
            nxt["limit"] = params["limit"]
        r = c.get(path, params=nxt)
    raise AssertionError("too many pages")


def seqs(events: list[dict]) -> list[int]:
    return [e["seq"] for e in events]


@pytest.fixture(scope="module")
def corpus(server):
    """A small, known set of events in an organization of its own."""
    org = "org_list_" + uid()
    other = "org_other_" + uid()
    specs = [
        # (action, actor, targets, occurred_at)
        ("invoice.paid", "u_ada", [("invoice", "inv_1")], "2026-01-05T10:00:00Z"),
        ("invoice.sent", "u_ada", [("invoice", "inv_2")], "2026-01-05T10:00:00Z"),  # same time as above
        ("invoice.paid", "u_bob", [("invoice", "inv_2"), ("customer", "cus_9")], "2026-01-06T23:59:59.999Z"),
        ("user.login", "u_bob", None, "2026-01-07T00:00:00Z"),
        ("invoicex.other", "u_cy", [("doc", "inv_1")], "2026-01-03T08:00:00+02:00"),  # back-dated
        ("user.login", None, None, "2026-01-06T00:00:00Z"),
    ]
    created = []
    with server.client() as c:
        for action, actor, targets, occurred in specs:
            body = {"action": action, "organization": org, "occurred_at": occurred}
            if actor:
                body["actor"] = {"id": actor, "name": actor.upper()}
            if targets:
                body["targets"] = [{"type": t, "id": i} for t, i in targets]
            created.append(post(c, body))
        post(c, {"action": "invoice.paid", "organization": other, "actor": {"id": "u_ada"}})
    return {"org": org, "other": other, "events": created}


def expected(corpus, pred) -> list[int]:
    events = [e for e in corpus["events"] if pred(e)]
    events.sort(key=lambda e: (e["occurredAt"], e["seq"]), reverse=True)
    return seqs(events)


def targets_of(e):
    return [(t["type"], t["id"]) for t in e["targets"] or []]


@pytest.mark.parametrize("params,pred", [
    ({}, lambda e: True),
    ({"actor_id": "u_ada"}, lambda e: e["actor"]["id"] == "u_ada"),
    ({"action": "invoice.paid"}, lambda e: e["action"] == "invoice.paid"),
    ({"action": "invoice.*"}, lambda e: e["action"].startswith("invoice.")),
    ({"action": "invoice*"}, lambda e: e["action"].startswith("invoice")),
    ({"target_type": "invoice"}, lambda e: any(t == "invoice" for t, _ in targets_of(e))),
    ({"target_id": "inv_1"}, lambda e: any(i == "inv_1" for _, i in targets_of(e))),
    ({"target_type": "invoice", "target_id": "inv_2"}, lambda e: ("invoice", "inv_2") in targets_of(e)),
    ({"date_from": "2026-01-06"}, lambda e: e["occurredAt"] >= "2026-01-06"),
    ({"date_to": "2026-01-06"}, lambda e: e["occurredAt"] < "2026-01-07"),  # a bare date_to: the whole day
    ({"date_from": "2026-01-05T10:00:00Z", "date_to": "2026-01-06T23:59:59.999Z"},
     lambda e: "2026-01-05T10:00:00.000Z" <= e["occurredAt"] <= "2026-01-06T23:59:59.999Z"),
    ({"date_from": "2026-01-03T07:00:00+01:00", "date_to": "2026-01-05T09:59:59.999Z"},
     lambda e: "2026-01-03T06:00:00.000Z" <= e["occurredAt"] <= "2026-01-05T09:59:59.999Z"),
    ({"actor_id": "u_bob", "action": "user.*"}, lambda e: e["actor"]["id"] == "u_bob" and e["action"] == "user.login"),
])
def test_each_filter_returns_exactly_the_matching_events_newest_first(server, corpus, params, pred):
    with server.client() as c:
        for limit in (1, 2, 50):
            got = walk(c, "/v1/events", {"organization": corpus["org"], "limit": limit, **params})
            assert seqs(got) == expected(corpus, pred), (params, limit)
            # The same walk, repeating the filters with every cursor.
            again = walk(c, "/v1/events", {"organization": corpus["org"], "limit": limit, **params}, cursor_only=False)
            assert seqs(again) == seqs(got)


def test_order_ties_and_back_dated_events(server, corpus):
    with server.client() as c:
        got = walk(c, "/v1/events", {"organization": corpus["org"], "limit": 1})
    keys = [(e["occurredAt"], e["seq"]) for e in got]
    assert keys == sorted(keys, reverse=True)
    tied = [e for e in got if e["occurredAt"] == "2026-01-05T10:00:00.000Z"]
    assert len(tied) == 2 and tied[0]["seq"] > tied[1]["seq"]
    assert got[-1]["action"] == "invoicex.other"  # back-dated: last, although not the oldest seq


def test_default_and_max_limit_and_validation(server, corpus):
    with server.client() as c:
        assert len(c.get("/v1/events", params={"limit": 200}).json()["data"]) <= 200
        for bad in ("0", "201", "x", "-1", "1.5"):
            r = c.get("/v1/events", params={"limit": bad})
            assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "limit", bad
        for field, bad in (("date_from", "yesterday"), ("date_to", "2026-13-01"), ("date_from", "2026-01-01T00:00:00"),
                           ("after_seq", "-1")):
            r = c.get("/v1/events", params={field: bad})
            assert r.status_code == 400 and r.json()["error"]["details"]["field"] == field, (field, bad)
        r = c.get("/v1/events", params={"date_from": "2026-02-01", "date_to": "2026-01-01"})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "date_to"
        r = c.get("/v1/events", params={"organization": "o" * 129})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "organization"


def test_cursor_remembers_its_filters_and_refuses_another_query(server, corpus):
    with server.client() as c:
        first = c.get("/v1/events", params={"organization": corpus["org"], "action": "invoice.*", "limit": 1}).json()
        cursor = first["nextCursor"]
        assert cursor
        alone = c.get("/v1/events", params={"cursor": cursor, "limit": 10}).json()
        assert all(e["organization"] == corpus["org"] and e["action"].startswith("invoice.") for e in alone["data"])
        assert seqs(first["data"]) + seqs(alone["data"]) == expected(corpus, lambda e: e["action"].startswith("invoice."))
        same = c.get("/v1/events", params={"cursor": cursor, "organization": corpus["org"], "limit": 10}).json()
        assert seqs(same["data"]) == seqs(alone["data"])
        for params in ({"organization": corpus["other"]}, {"actor_id": "u_ada"}, {"action": "invoice.paid"},
                       {"date_from": "2026-01-01"}):
            r = c.get("/v1/events", params={"cursor": cursor, **params})
            assert r.status_code == 400, params
            assert r.json()["error"]["details"]["field"] == "cursor"
        for junk in ("x", "AAAA", cursor + "x", cursor.split(".")[0] + ".!!", "a.b.c", cursor + ".e30"):
            r = c.get("/v1/events", params={"cursor": junk})
            assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "cursor", junk
        # Hand-made filter parts: refused (or harmless), never a 500.
        position = cursor.split(".")[0]
        for crafted, status in (({"df": 2**70}, 400), ({"o": "x" * 200}, 400), ({"zz": 1}, 400), ({"a": 5}, 400),
                                ({"df": 2**61}, 200)):
            part = base64.urlsafe_b64encode(json.dumps(crafted).encode()).rstrip(b"=").decode()
            assert c.get("/v1/events", params={"cursor": f"{position}.{part}"}).status_code == status, crafted
        # A search cursor is not a list cursor and vice versa.
        s = c.get("/v1/events/search", params={"q": f"org:{corpus['org']}", "limit": 1}).json()
        assert c.get("/v1/events", params={"cursor": s["nextCursor"]}).status_code == 400
        assert c.get("/v1/events/search", params={"cursor": cursor}).status_code == 400


def test_after_seq_tails_in_ascending_seq(server, corpus):
    org = corpus["org"]
    all_seqs = sorted(e["seq"] for e in corpus["events"])
    with server.client() as c:
        start = all_seqs[1]
        got = walk(c, "/v1/events", {"organization": org, "after_seq": start, "limit": 2})
        assert seqs(got) == [s for s in all_seqs if s > start]
        r = c.get("/v1/events", params={"organization": org, "after_seq": all_seqs[-1]}).json()
        assert r == {"data": [], "nextCursor": None}
        page = c.get("/v1/events", params={"organization": org, "after_seq": 0, "limit": 1}).json()
        r = c.get("/v1/events", params={"cursor": page["nextCursor"], "after_seq": 3})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "after_seq"
        # New events show up to a tailer that resumes from the last seq it saw.
        new = post(c, {"action": "tail.new", "organization": org, "occurred_at": "2020-01-01T00:00:00Z"})
        assert seqs(c.get("/v1/events", params={"organization": org, "after_seq": all_seqs[-1]}).json()["data"]) == [new["seq"]]
        corpus["events"].append(new)


def test_get_one_event_route_order_and_404s(server, corpus):
    one = corpus["events"][0]
    with server.client() as c:
        got = c.get(f"/v1/events/{one['id']}").json()["data"]
        assert got == one
        for path in ("/v1/events/search", "/v1/events/verify"):
            r = c.get(path)
            assert r.status_code == 200 and "data" in r.json(), path
        r = c.get("/v1/events/evt_01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    bound = server.create_key(["events:read"], organization=corpus["other"])
    with server.client(key=bound) as c:
        r = c.get(f"/v1/events/{one['id']}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


def test_tenant_wall_on_list_and_search(server, corpus):
    bound = server.create_key(["events:read"], organization=corpus["other"])
    with server.client(key=bound) as c:
        mine = walk(c, "/v1/events", {"limit": 200})
        assert mine and all(e["organization"] == corpus["other"] for e in mine)
        assert c.get("/v1/events", params={"organization": corpus["org"]}).json() == {"data": [], "nextCursor": None}
        assert seqs(c.get("/v1/events", params={"organization": corpus["other"]}).json()["data"]) == seqs(mine)
        assert c.get("/v1/events", params={"organization": corpus["org"], "after_seq": 0}).json()["data"] == []
        found = c.get("/v1/events/search", params={"q": "u_ada"}).json()["data"]
        assert found and all(e["organization"] == corpus["other"] for e in found)
        assert c.get("/v1/events/search", params={"q": f"org:{corpus['org']}"}).json()["data"] == []
        # A cursor cannot carry a bound key past its wall.
        with server.client() as admin:
            cursor = admin.get("/v1/events", params={"organization": corpus["org"], "limit": 1}).json()["nextCursor"]
        assert c.get("/v1/events", params={"cursor": cursor}).json() == {"data": [], "nextCursor": None}


@pytest.mark.parametrize("method,path,scope", [
    ("GET", "/v1/events", "events:read"),
    ("GET", "/v1/events/search?q=x", "events:read"),
    ("GET", "/v1/events/evt_01ARZ3NDEKTSV4RRFFQ69G5FAV", "events:read"),
    ("GET", "/v1/exports", "exports:read"),
    ("DELETE", "/v1/actors/someone", "actors:delete"),
    ("POST", "/v1/embed/token", "embed:write"),
])
def test_every_read_route_enforces_its_scope(server, method, path, scope):
    others = [s for s in ("events:write", "events:read", "exports:read", "actors:delete", "embed:write",
                          "webhooks:manage", "keys:manage") if s != scope]
    lacking = server.create_key(others)
    with server.client(key=lacking) as c:
        r = c.request(method, path, json={} if method == "POST" else None)
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN", r.text
        assert r.json()["error"]["details"]["scope"] == scope
    with server.client(key=None) as c:
        r = c.request(method, path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    holder = server.create_key([scope])
    with server.client(key=holder) as c:
        r = c.request(method, path, json={} if method == "POST" else None)
        assert r.status_code in (200, 404), r.text
