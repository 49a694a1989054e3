"""Every console route, and every caller that must be turned away (the console's half of the
route auth matrix; tests/test_route_auth_matrix.py covers the API and sends console routes here).

Routes are enumerated from the application's router, with the access rule each endpoint
carries (guard.py tags it), so a new console route without a row fails
`test_every_console_route_has_a_row`, and a row cannot claim a scope the endpoint does not
check. For every route that needs a session:

    no session                         page -> 303 to /console/login; action, feed -> 401
    a session idle past its lifetime   the same
    a session whose key was revoked    the same, immediately (no wait for any cache)
    a key with every scope but the route's one -> 403 naming the missing scope
    an admin key of ANOTHER organization -> the row's expectation: 404 for an id owned by the
        first organization, 403 for a write naming it or for what spans every organization,
        200 without a trace of the first organization's data for lists
    an action without its CSRF token   -> 403, and nothing done

A positive control (the owning organization's own admin key) makes sure the ids are real,
so a 404 for the other organization means the wall and not a typo.
"""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import ServerProcess
from console_support import ConsoleSession, signed_in
from test_route_auth_matrix import fill
from recalled_lite.app import create_app
from recalled_lite.auth import SCOPES
from recalled_lite.config import Config

ORG_A, ORG_B = "org_cwall_a", "org_cwall_b"
ACTION_A, ACTOR_A = "wall.console_only_a", "actor_cwall_a"
PUBLIC = "public"

# (method, path) -> (scope, request, other-organization expectation)
#   request: {"path": {...}, "params": {...}, "form": {...}} with {placeholders} for world ids
#   expectation: ("absent", status) | ("status", code) | ("own", status): the caller's own business
ROUTES: dict[tuple[str, str], tuple] = {
    ("GET", "/"): (PUBLIC, {}, None),
    ("GET", "/console"): (PUBLIC, {}, None),
    ("GET", "/console/login"): (PUBLIC, {}, None),
    ("POST", "/console/login"): (PUBLIC, {}, None),
    ("GET", "/console/link"): (PUBLIC, {}, None),
    ("POST", "/console/link"): (PUBLIC, {}, None),
    ("GET", "/console/static/{name}"): (PUBLIC, {}, None),
    ("GET", "/console/{rest:path}"): (PUBLIC, {}, None),
    ("POST", "/console/{rest:path}"): (PUBLIC, {}, None),
    ("PUT", "/console/{rest:path}"): (PUBLIC, {}, None),
    ("PATCH", "/console/{rest:path}"): (PUBLIC, {}, None),
    ("DELETE", "/console/{rest:path}"): (PUBLIC, {}, None),
    ("OPTIONS", "/console/{rest:path}"): (PUBLIC, {}, None),
    ("GET", "/console/"): (None, {}, ("absent", 200)),
    ("POST", "/console/logout"): (None, {}, ("own", 303)),
    ("GET", "/console/events"): ("events:read", {"params": {"organization": ORG_A}}, ("absent", 200)),
    ("GET", "/console/events/tail"): ("events:read", {"params": {"after_seq": "0", "organization": ORG_A}},
                                      ("absent", 200)),
    ("GET", "/console/events/download"): ("exports:read", {"params": {"format": "ndjson", "organization": ORG_A}},
                                          ("absent", 200)),
    ("GET", "/console/events/{event_id}"): ("events:read", {"path": {"event_id": "{event_a}"}}, ("status", 404)),
    ("GET", "/console/chain"): ("events:read", {}, ("status", 403)),
    ("POST", "/console/chain/verify"): ("events:read", {}, ("status", 403)),
    ("GET", "/console/chain/progress"): ("events:read", {}, ("status", 403)),
    ("GET", "/console/webhooks"): ("webhooks:manage", {}, ("absent", 200)),
    ("POST", "/console/webhooks"): ("webhooks:manage",
                                    {"form": {"url": "http://127.0.0.1:9/hook", "organization": ORG_A}},
                                    ("status", 403)),
    ("GET", "/console/webhooks/new"): ("webhooks:manage", {}, ("absent", 200)),
    ("GET", "/console/webhooks/{sub_id}"): ("webhooks:manage", {"path": {"sub_id": "{sub_a}"}}, ("status", 404)),
    ("POST", "/console/webhooks/{sub_id}"): ("webhooks:manage",
                                             {"path": {"sub_id": "{sub_a}"},
                                              "form": {"url": "http://127.0.0.1:9/x", "description": "x"}},
                                             ("status", 404)),
    ("POST", "/console/webhooks/{sub_id}/enabled"): ("webhooks:manage",
                                                     {"path": {"sub_id": "{sub_a}"}, "form": {"disabled": "true"}},
                                                     ("status", 404)),
    ("POST", "/console/webhooks/{sub_id}/test"): ("webhooks:manage", {"path": {"sub_id": "{sub_a}"}},
                                                  ("status", 404)),
    ("POST", "/console/webhooks/{sub_id}/rotate"): ("webhooks:manage", {"path": {"sub_id": "{sub_a}"}},
                                                    ("status", 404)),
    ("POST", "/console/webhooks/{sub_id}/resend"): ("webhooks:manage",
                                                    {"path": {"sub_id": "{sub_a}"}, "form": {"event_id": "{event_a}"}},
                                                    ("status", 404)),
    ("POST", "/console/webhooks/{sub_id}/jobs/preview"): ("webhooks:manage",
                                                          {"path": {"sub_id": "{sub_a}"},
                                                           "form": {"kind": "replay_missing", "begin": "2020-01-01"}},
                                                          ("status", 404)),
    ("POST", "/console/webhooks/{sub_id}/jobs"): ("webhooks:manage",
                                                  {"path": {"sub_id": "{sub_a}"},
                                                   "form": {"kind": "recover", "begin": "2020-01-01"}},
                                                  ("status", 404)),
    ("GET", "/console/webhooks/{sub_id}/jobs/{job_id}"): ("webhooks:manage",
                                                          {"path": {"sub_id": "{sub_a}", "job_id": "{job_a}"}},
                                                          ("status", 404)),
    ("GET", "/console/webhooks/{sub_id}/jobs/{job_id}/progress"): (
        "webhooks:manage", {"path": {"sub_id": "{sub_a}", "job_id": "{job_a}"}}, ("status", 404)),
    ("GET", "/console/keys"): ("keys:manage", {}, ("absent", 200)),
    ("POST", "/console/keys"): ("keys:manage",
                                {"form": {"name": "x", "scopes": "events:read", "organization": ORG_A}},
                                ("status", 403)),
    ("POST", "/console/keys/{key_id}/revoke"): ("keys:manage", {"path": {"key_id": "{key_a}"}}, ("status", 404)),
    ("GET", "/console/actors"): ("actors:delete", {}, ("absent", 200)),
    ("POST", "/console/actors/erase"): ("actors:delete",
                                       {"form": {"actor_id": ACTOR_A, "confirm": ACTOR_A, "organization": ORG_A}},
                                       ("status", 403)),
}


# What the owning organization must see on a GET (the positive control).
PROOF = {
    "/console/events": "event_a", "/console/events/tail": "event_a", "/console/events/download": "event_a",
    "/console/events/{event_id}": "event_a", "/console/webhooks": "sub_a", "/console/webhooks/{sub_id}": "sub_a",
    "/console/webhooks/{sub_id}/jobs/{job_id}": "job_a", "/console/webhooks/{sub_id}/jobs/{job_id}/progress": "job_a",
    "/console/keys": "key_a", "/console/": "sub_a",
}


def console_routes() -> dict[tuple[str, str], object]:
    """(method, path) -> endpoint, for every console route of the real application."""
    app = create_app(Config(), store=None)
    while not hasattr(app, "routes"):  # unwrap the ASGI middleware around Starlette
        app = app.app
    found = {}
    for route in app.routes:
        if route.path == "/" or route.path.startswith("/console"):
            for method in route.methods or ():
                if method != "HEAD":
                    found[(method, route.path)] = route.endpoint
    return found


def test_every_console_route_has_a_row():
    routes = console_routes()
    assert not set(routes) - set(ROUTES), f"console routes without a row: {sorted(set(routes) - set(ROUTES))}"
    assert not set(ROUTES) - set(routes), f"rows for routes that do not exist: {sorted(set(ROUTES) - set(routes))}"


def test_rows_match_what_each_endpoint_enforces():
    for (method, path), endpoint in console_routes().items():
        scope = ROUTES[(method, path)][0]
        kind = getattr(endpoint, "console_kind", None)
        assert kind is not None, f"{method} {path}: the endpoint is not wrapped by console.guard"
        if scope == PUBLIC:
            assert kind == "public", (method, path, kind)
        else:
            assert kind in ("page", "feed", "action"), (method, path, kind)
            assert getattr(endpoint, "console_scope") == scope, (method, path)
            assert (kind == "action") == (method == "POST"), (method, path, kind)


SESSION_ROUTES = sorted(k for k, v in ROUTES.items() if v[0] != PUBLIC)
KINDS = {key: getattr(endpoint, "console_kind") for key, endpoint in console_routes().items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # Hundreds of requests without a live session from one address, on purpose: the
    # per-address budget (tests/test_abuse.py tests it) is off, so every row sees its refusal.
    srv = ServerProcess(tmp_path_factory.mktemp("console-matrix"), args=["--dev"],
                        config_text="[abuse]\nper_second = 0.0\n").start()
    ids: dict[str, str] = {}
    with srv.client() as c:
        event = c.post("/v1/events", json={"action": ACTION_A, "organization": ORG_A, "actor": {"id": ACTOR_A}})
        assert event.status_code == 200, event.text
        ids["event_a"] = event.json()["data"]["id"]
        sub = c.post("/v1/event_subscriptions", json={"url": "http://127.0.0.1:9/hook", "organization": ORG_A,
                                                      "description": "sub of org a"})
        assert sub.status_code == 201, sub.text
        ids["sub_a"] = sub.json()["data"]["id"]
        job = c.post(f"/v1/event_subscriptions/{ids['sub_a']}/recover", json={"begin": "2020-01-01T00:00:00Z"})
        assert job.status_code == 202, job.text
        ids["job_a"] = job.json()["data"]["id"]
        key_a = c.post("/v1/keys", json={"name": "key of org a", "scopes": ["events:read"], "organization": ORG_A})
        ids["key_a"] = key_a.json()["data"]["id"]
    keys = {
        "owner": srv.create_key(["admin"], organization=ORG_A, name="owner"),
        "other": srv.create_key(["admin"], organization=ORG_B, name="other"),
    }
    for scope in SCOPES:  # every scope but one
        keys[f"without:{scope}"] = srv.create_key(sorted(SCOPES - {scope}), name=f"no-{scope}")
    yield srv, ids, keys
    srv.kill()


@pytest.fixture(scope="module")
def revoked_sessions(world):
    """One session per route, all of one admin key, which is then revoked."""
    srv, _, _ = world
    with srv.client() as c:
        made = c.post("/v1/keys", json={"name": "to revoke", "scopes": ["admin"]}).json()["data"]
    sessions = {route: signed_in(srv.url, made["key"]) for route in SESSION_ROUTES}
    with srv.client() as c:
        assert c.delete(f"/v1/keys/{made['id']}").status_code == 200
    yield sessions
    for s in sessions.values():
        s.close()


@pytest.fixture(scope="module")
def expired_sessions(tmp_path_factory, world):
    """A server whose sessions end after 1.8 s unused; one session per route, left idle."""
    srv = ServerProcess(tmp_path_factory.mktemp("console-expiry"), args=["--dev"],
                        config_text="[console]\nsession_idle_hours = 0.0005\n").start()
    sessions = {route: signed_in(srv.url, srv.key) for route in SESSION_ROUTES}
    time.sleep(2.5)
    yield srv, sessions
    for s in sessions.values():
        s.close()
    srv.kill()


def call(session: ConsoleSession, method: str, path: str, spec: dict, ids: dict, *, csrf: bool = True) -> httpx.Response:
    spec = fill(spec, ids)
    url = path.format(**spec.get("path", {}))
    if method == "POST":
        form = dict(spec.get("form", {}))
        if csrf:
            form["csrf"] = session.csrf
        return session.http.post(url, data=form)
    return session.http.request(method, url, params=spec.get("params"))


def assert_refused(response: httpx.Response, kind: str, ids: dict) -> None:
    if kind == "page":
        assert response.status_code == 303, response.text[:300]
        assert response.headers["location"].startswith("/console/login?next="), response.headers["location"]
    else:
        assert response.status_code == 401, response.text[:300]
    assert_nothing_of_org_a(response, ids)


def assert_nothing_of_org_a(response: httpx.Response, ids: dict, sent: dict | None = None) -> None:
    """No id, action, actor or name of the first organization, beyond what the request itself
    sent (a form shown again with its own values is not a leak)."""
    echoed = repr(fill(sent or {}, ids))
    for marker in (ids["event_a"], ids["sub_a"], ids["key_a"], ACTION_A, ACTOR_A, "sub of org a", "key of org a"):
        if marker not in echoed:
            assert marker not in response.text, f"{marker} leaked"


@pytest.mark.parametrize("method,path", SESSION_ROUTES, ids=[f"{m} {p}" for m, p in SESSION_ROUTES])
def test_console_route_refuses_the_wrong_callers(world, revoked_sessions, expired_sessions, method, path):
    srv, ids, keys = world
    scope, spec, other = ROUTES[(method, path)]
    kind = KINDS[(method, path)]

    anonymous = ConsoleSession(srv.url)
    assert_refused(call(anonymous, method, path, spec, ids), kind, ids)

    expired_srv, expired = expired_sessions
    assert_refused(call(expired[(method, path)], method, path, spec, ids), kind, ids)

    assert_refused(call(revoked_sessions[(method, path)], method, path, spec, ids), kind, ids)

    if scope is not None:
        lacking = signed_in(srv.url, keys[f"without:{scope}"])
        r = call(lacking, method, path, spec, ids)
        assert r.status_code == 403, r.text[:300]
        assert scope in r.text, "the refusal should name the missing scope"
        assert_nothing_of_org_a(r, ids, spec)

    if kind == "action":
        session = signed_in(srv.url, keys["owner"])
        r = call(session, method, path, spec, ids, csrf=False)
        assert r.status_code == 403, r.text[:300]
        assert "did not come from this console" in r.text
        r = session.http.post(path.format(**fill(spec, ids).get("path", {})),
                              data={**fill(spec.get("form", {}), ids), "csrf": "forged" + session.csrf[6:]})
        assert r.status_code == 403, r.text[:300]

    other_session = signed_in(srv.url, keys["other"])
    r = call(other_session, method, path, spec, ids)
    expectation, status = other
    assert r.status_code == status, r.text[:400]
    if expectation != "own":
        assert_nothing_of_org_a(r, ids, spec)
    if expectation == "absent" and not spec.get("params", {}).get("organization"):
        assert ORG_A not in r.text

    if method == "GET" and (expectation == "absent" or status == 404):
        # positive control: the owning organization sees what the other one may not
        owner = signed_in(srv.url, keys["owner"])
        r = call(owner, method, path, spec, ids)
        assert r.status_code == 200, r.text[:300]
        proof = PROOF.get(path)
        if proof is not None:
            assert ids[proof] in r.text, f"the owner should see {proof}"


def test_actions_without_a_csrf_token_change_nothing(world):
    srv, ids, keys = world
    session = signed_in(srv.url, srv.key)
    with srv.client() as c:
        victim = c.post("/v1/keys", json={"name": "csrf victim", "scopes": ["events:read"]}).json()["data"]
    r = session.post(f"/console/keys/{victim['id']}/revoke", csrf=False)
    assert r.status_code == 403
    with srv.client(key=victim["key"]) as c:
        assert c.get("/v1/events").status_code == 200, "the key must still work"
    r = session.post(f"/console/keys/{victim['id']}/revoke")
    assert r.status_code == 303
    with srv.client(key=victim["key"]) as c:
        assert c.get("/v1/events").status_code == 401


def test_a_token_from_another_session_is_refused(world):
    srv, ids, keys = world
    mine = signed_in(srv.url, srv.key)
    theirs = signed_in(srv.url, srv.key)
    assert mine.csrf != theirs.csrf
    r = mine.http.post("/console/keys", data={"csrf": theirs.csrf, "name": "x", "scopes": "events:read"})
    assert r.status_code == 403


def test_the_sign_in_form_needs_its_own_token(world):
    srv, ids, keys = world
    fresh = ConsoleSession(srv.url)
    r = fresh.http.post("/console/login", data={"key": srv.key})
    assert r.status_code == 403
    assert "recalled_console=" not in r.headers.get("set-cookie", "")
    # a token minted for another browser's login cookie does not work either
    other = ConsoleSession(srv.url)
    token = other.http.get("/console/login").text.split('name="csrf" value="')[1].split('"')[0]
    fresh.http.get("/console/login")
    r = fresh.http.post("/console/login", data={"key": srv.key, "csrf": token})
    assert r.status_code == 403


def test_other_organization_sees_an_empty_list_not_the_first_ones_events(world):
    srv, ids, keys = world
    other = signed_in(srv.url, keys["other"])
    page = other.get("/console/events")
    assert page.status_code == 200
    assert ids["event_a"] not in page.text and ACTION_A not in page.text
    search = other.get("/console/events", params={"q": "wall"})
    assert search.status_code == 200 and ids["event_a"] not in search.text
    owner = signed_in(srv.url, keys["owner"])
    assert ids["event_a"] in owner.get("/console/events", params={"q": "wall"}).text
