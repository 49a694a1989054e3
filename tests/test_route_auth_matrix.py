"""SPEC §1/§3: every route, four callers that must be turned away, each with the spec's status and code.

The routes are enumerated from the application's own router, so a new route without a row in
ROUTES fails `test_every_route_has_a_row`. For each authenticated route:

    no key                       -> 401 UNAUTHORIZED
    a revoked key (admin scope)  -> 401 REVOKED_API_KEY
    a key holding every scope but the route's one -> 403 FORBIDDEN
    an admin key of ANOTHER organization -> the row's `other_org` expectation:
        404 NOT_FOUND for an id owned by the first organization (never 403),
        403 FORBIDDEN for a write naming the first organization,
        200 without a trace of the first organization for lists/searches/exports.

A positive control (the owning organization's key) makes sure the ids in the table are real,
so a 404 for the other organization means the wall and not a typo.
"""

from __future__ import annotations

import httpx
import pytest

from conftest import ServerProcess
from recalled_lite.app import create_app
from recalled_lite.auth import SCOPES
from recalled_lite.config import Config

ORG_A, ORG_B = "org_wall_a", "org_wall_b"
PUBLIC = "public"
PUBLIC_WITH_PARAMS = "public (path parameters: tested in tests/test_proofs_api.py)"

# (method, path template) -> (scope, request builder name, other-org expectation)
# other_org: ("status", code) or ("absent", None) meaning 200 without ORG_A's resource in the body.
ROUTES: dict[tuple[str, str], tuple[str, dict, tuple]] = {
    ("GET", "/healthz"): (PUBLIC, {}, ()),
    ("GET", "/readyz"): (PUBLIC, {}, ()),
    ("GET", "/metrics"): (PUBLIC, {}, ()),
    ("GET", "/openapi.json"): (PUBLIC, {}, ()),
    ("GET", "/docs"): (PUBLIC, {}, ()),
    ("OPTIONS", "/v1/embed/events"): (PUBLIC, {}, ()),
    ("GET", "/v1/embed/events"): ("embed-token", {}, ()),
    ("POST", "/v1/keys"): ("keys:manage",
                           {"json": {"name": "x", "scopes": ["events:read"], "organization": ORG_A}},
                           (403, "FORBIDDEN")),
    ("GET", "/v1/keys"): ("keys:manage", {}, ("absent", "{key_a}")),
    ("DELETE", "/v1/keys/{key_id}"): ("keys:manage", {"path": {"key_id": "{key_a}"}}, (404, "NOT_FOUND")),
    ("POST", "/v1/events"): ("events:write", {"json": {"action": "wall.x", "organization": ORG_A}},
                             (403, "FORBIDDEN")),
    ("GET", "/v1/events"): ("events:read", {"params": {"organization": ORG_A}}, ("absent", "{event_a}")),
    ("POST", "/v1/events/batch"): ("events:write",
                                   {"json": {"events": [{"action": "wall.x", "organization": ORG_A}]}},
                                   (403, "FORBIDDEN")),
    ("GET", "/v1/events/search"): ("events:read", {"params": {"q": "wall"}}, ("absent", "{event_a}")),
    ("GET", "/v1/events/verify"): ("events:read", {}, (403, "FORBIDDEN")),
    ("GET", "/v1/events/{event_id}"): ("events:read", {"path": {"event_id": "{event_a}"}}, (404, "NOT_FOUND")),
    ("GET", "/v1/exports"): ("exports:read", {"params": {"organization": ORG_A, "format": "ndjson"}},
                             ("absent", "{event_a}")),
    ("DELETE", "/v1/actors/{actor_id:path}"): ("actors:delete",
                                                {"path": {"actor_id": "actor_wall_a"}, "params": {"organization": ORG_A}},
                                                (403, "FORBIDDEN")),
    ("POST", "/v1/embed/token"): ("embed:write", {"json": {"organization": ORG_A}}, (403, "FORBIDDEN")),
    ("POST", "/v1/event_subscriptions"): ("webhooks:manage",
                                          {"json": {"url": "http://127.0.0.1:9/hook", "organization": ORG_A}},
                                          (403, "FORBIDDEN")),
    ("GET", "/v1/event_subscriptions"): ("webhooks:manage", {}, ("absent", "{sub_a}")),
    ("GET", "/v1/event_subscriptions/{sub_id}"): ("webhooks:manage", {"path": {"sub_id": "{sub_a}"}},
                                                  (404, "NOT_FOUND")),
    ("PATCH", "/v1/event_subscriptions/{sub_id}"): ("webhooks:manage",
                                                    {"path": {"sub_id": "{sub_a}"}, "json": {"description": "x"}},
                                                    (404, "NOT_FOUND")),
    ("DELETE", "/v1/event_subscriptions/{sub_id}"): ("webhooks:manage", {"path": {"sub_id": "{sub_a}"}},
                                                     (404, "NOT_FOUND")),
    ("POST", "/v1/event_subscriptions/{sub_id}/test"): ("webhooks:manage", {"path": {"sub_id": "{sub_a}"}},
                                                        (404, "NOT_FOUND")),
    ("GET", "/v1/event_subscriptions/{sub_id}/secret"): ("webhooks:manage", {"path": {"sub_id": "{sub_a}"}},
                                                         (404, "NOT_FOUND")),
    ("POST", "/v1/event_subscriptions/{sub_id}/secret/rotate"): ("webhooks:manage",
                                                                 {"path": {"sub_id": "{sub_a}"}},
                                                                 (404, "NOT_FOUND")),
    ("GET", "/v1/event_subscriptions/{sub_id}/attempts"): ("webhooks:manage", {"path": {"sub_id": "{sub_a}"}},
                                                           (404, "NOT_FOUND")),
    ("POST", "/v1/event_subscriptions/{sub_id}/recover"): ("webhooks:manage",
                                                           {"path": {"sub_id": "{sub_a}"},
                                                            "json": {"begin": "2020-01-01T00:00:00Z"}},
                                                           (404, "NOT_FOUND")),
    ("POST", "/v1/event_subscriptions/{sub_id}/replay_missing"): ("webhooks:manage",
                                                                  {"path": {"sub_id": "{sub_a}"},
                                                                   "json": {"begin": "2020-01-01T00:00:00Z"}},
                                                                  (404, "NOT_FOUND")),
    ("GET", "/v1/event_subscriptions/{sub_id}/jobs"): ("webhooks:manage", {"path": {"sub_id": "{sub_a}"}},
                                                       (404, "NOT_FOUND")),
    ("GET", "/v1/event_subscriptions/{sub_id}/jobs/{job_id}"): ("webhooks:manage",
                                                                {"path": {"sub_id": "{sub_a}", "job_id": "{job_a}"}},
                                                                (404, "NOT_FOUND")),
    ("GET", "/v1/events/{event_id}/attempts"): ("webhooks:manage", {"path": {"event_id": "{event_a}"}},
                                                (404, "NOT_FOUND")),
    ("POST", "/v1/events/{event_id}/event_subscriptions/{sub_id}/resend"): (
        "webhooks:manage", {"path": {"event_id": "{event_a}", "sub_id": "{sub_a}"}}, (404, "NOT_FOUND")),
    ("POST", "/v1/simulate/event_subscriptions/{sub_id}/send_example"): ("webhooks:manage",
                                                                         {"path": {"sub_id": "{sub_a}"}},
                                                                         (404, "NOT_FOUND")),
    ("GET", "/v1/checkpoint"): (PUBLIC, {}, ()),
    ("GET", "/checkpoint"): (PUBLIC, {}, ()),
    ("GET", "/v1/checkpoint/key"): (PUBLIC, {}, ()),
    ("GET", "/v1/checkpoints"): (PUBLIC, {}, ()),
    ("GET", "/v1/checkpoint/consistency"): (PUBLIC_WITH_PARAMS, {}, ()),
    ("GET", "/tile/{tile_path:path}"): (PUBLIC_WITH_PARAMS, {}, ()),
    ("GET", "/r/{reference}"): (PUBLIC_WITH_PARAMS, {}, ()),
    ("GET", "/r/static/{name}"): (PUBLIC_WITH_PARAMS, {}, ()),
    # A checkpoint spans every organization and names none: a bound key may sign one.
    ("POST", "/v1/checkpoint"): ("events:write", {}, ("absent", "{event_a}")),
    ("GET", "/v1/events/{event_id}/proof"): ("events:read", {"path": {"event_id": "{event_a}"}},
                                             (404, "NOT_FOUND")),
    ("GET", "/v1/events/{event_id}/receipt"): ("events:read", {"path": {"event_id": "{event_a}"}},
                                               (404, "NOT_FOUND")),
    ("DELETE", "/v1/events/{event_id}/receipt"): ("events:read", {"path": {"event_id": "{event_a}"}},
                                                  (404, "NOT_FOUND")),
    # Retention (docs/retention.md): rules and holds stay behind the organization wall; a purge
    # spans every organization, so only an unbound key starts one or reads a job.
    ("GET", "/v1/retention/rules"): ("retention:manage", {}, ("absent", "{rule_a}")),
    ("PUT", "/v1/retention/rules"): ("retention:manage", {"json": {"organization": ORG_A, "days": 400}},
                                     (403, "FORBIDDEN")),
    ("DELETE", "/v1/retention/rules/{rule_id}"): ("retention:manage", {"path": {"rule_id": "{rule_a}"}},
                                                  (404, "NOT_FOUND")),
    ("POST", "/v1/retention/run"): ("retention:manage", {"json": {}}, (403, "FORBIDDEN")),
    ("GET", "/v1/retention/jobs/{job_id}"): ("retention:manage", {"path": {"job_id": "{rjob_a}"}},
                                             (403, "FORBIDDEN")),
    ("GET", "/v1/retention/status"): ("retention:manage", {}, ("absent", "{rule_a}")),
    ("POST", "/v1/legal_holds"): ("retention:manage", {"json": {"organization": ORG_A, "reason": "x"}},
                                  (403, "FORBIDDEN")),
    ("GET", "/v1/legal_holds"): ("retention:manage", {}, ("absent", "{hold_a}")),
    ("DELETE", "/v1/legal_holds/{hold_id}"): ("retention:manage", {"path": {"hold_id": "{hold_a}"}},
                                              (404, "NOT_FOUND")),
}


def app_routes() -> set[tuple[str, str]]:
    app = create_app(Config(), store=None)
    while not hasattr(app, "routes"):  # unwrap the ASGI middleware around Starlette
        app = app.app
    found = set()
    for route in app.routes:
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


def test_every_route_has_a_row():
    from test_console_auth_matrix import ROUTES as CONSOLE_ROUTES  # session-based: its own matrix

    routes = app_routes() - set(CONSOLE_ROUTES)
    missing = routes - set(ROUTES)
    stale = set(ROUTES) - routes
    assert not missing, f"routes without a row in the auth matrix: {sorted(missing)}"
    assert not stale, f"rows for routes that no longer exist: {sorted(stale)}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("authmatrix"), args=["--dev"]).start()
    ids: dict[str, str] = {}
    with srv.client() as c:
        event = c.post("/v1/events", json={"action": "wall.created", "organization": ORG_A,
                                           "actor": {"id": "actor_wall_a"}})
        assert event.status_code == 200, event.text
        ids["event_a"] = event.json()["data"]["id"]
        sub = c.post("/v1/event_subscriptions", json={"url": "http://127.0.0.1:9/hook", "organization": ORG_A})
        assert sub.status_code == 201, sub.text
        ids["sub_a"] = sub.json()["data"]["id"]
        job = c.post(f"/v1/event_subscriptions/{ids['sub_a']}/recover", json={"begin": "2020-01-01T00:00:00Z"})
        assert job.status_code == 202, job.text
        ids["job_a"] = job.json()["data"]["id"]
        rule = c.put("/v1/retention/rules", json={"organization": ORG_A, "days": 3650})
        assert rule.status_code == 200, rule.text
        ids["rule_a"] = rule.json()["data"]["id"]
        hold = c.post("/v1/legal_holds", json={"organization": ORG_A, "reason": "wall"})
        assert hold.status_code == 201, hold.text
        ids["hold_a"] = hold.json()["data"]["id"]
        purge = c.post("/v1/retention/run", json={})
        assert purge.status_code == 202, purge.text
        ids["rjob_a"] = purge.json()["data"]["id"]
        key_a = c.post("/v1/keys", json={"name": "a", "scopes": ["events:read"], "organization": ORG_A})
        ids["key_a"] = key_a.json()["data"]["id"]
        revoked = c.post("/v1/keys", json={"name": "revoked", "scopes": ["admin"]}).json()["data"]
        assert c.delete(f"/v1/keys/{revoked['id']}").status_code == 200
    keys = {
        "revoked": revoked["key"],
        "owner": srv.create_key(["admin"], organization=ORG_A, name="owner"),
        "other": srv.create_key(["admin"], organization=ORG_B, name="other"),
    }
    for scope in SCOPES:  # every scope but one
        keys[f"without:{scope}"] = srv.create_key(sorted(SCOPES - {scope}), name=f"no-{scope}")
    yield srv, ids, keys
    srv.kill()


def fill(value, ids):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


def call(srv: ServerProcess, key: str | None, method: str, path: str, spec: dict, ids: dict) -> httpx.Response:
    spec = fill(spec, ids)
    url = path.replace(":path}", "}").format(**spec.get("path", {}))
    with srv.client(key=key) as c:
        return c.request(method, url, params=spec.get("params"), json=spec.get("json"))


def error_of(r: httpx.Response):
    try:
        return r.status_code, r.json()["error"]["code"]
    except Exception:
        return r.status_code, r.text[:200]


AUTH_ROUTES = sorted(k for k, v in ROUTES.items() if v[0] not in (PUBLIC, PUBLIC_WITH_PARAMS, "embed-token"))


@pytest.mark.parametrize("method,path", AUTH_ROUTES, ids=[f"{m} {p}" for m, p in AUTH_ROUTES])
def test_route_refuses_the_wrong_callers(world, method, path):
    srv, ids, keys = world
    scope, spec, other = ROUTES[(method, path)]
    assert error_of(call(srv, None, method, path, spec, ids)) == (401, "UNAUTHORIZED")
    assert error_of(call(srv, keys["revoked"], method, path, spec, ids)) == (401, "REVOKED_API_KEY")
    assert error_of(call(srv, keys[f"without:{scope}"], method, path, spec, ids)) == (403, "FORBIDDEN")
    r = call(srv, keys["other"], method, path, spec, ids)
    if other[0] == "absent":
        assert r.status_code == 200, r.text
        assert fill(other[1], ids) not in r.text
        assert ORG_A not in r.text
    else:
        assert error_of(r) == other
    if method == "GET" and other[0] in ("absent", 404):  # positive control: the owner sees what the other organization may not
        r = call(srv, keys["owner"], method, path, spec, ids)
        assert r.status_code == 200, r.text
        if other[0] == "absent":
            assert fill(other[1], ids) in r.text


def test_public_routes_need_no_key(world):
    srv, ids, keys = world
    for (method, path), (scope, _spec, _other) in ROUTES.items():
        if scope == PUBLIC and (method, path) in app_routes():
            with srv.client(key=None) as c:
                r = c.request(method, path)
            assert r.status_code in (200, 204), (method, path, r.status_code)


def test_embed_feed_is_walled_by_its_token(world):
    srv, ids, keys = world
    with srv.client(key=None) as anon:
        assert error_of(anon.get("/v1/embed/events")) == (401, "UNAUTHORIZED")
        assert error_of(anon.get("/v1/embed/events", params={"token": "forged.token"})) == (401, "UNAUTHORIZED")
    with srv.client(key=keys["other"]) as other:
        token_b = other.post("/v1/embed/token", json={}).json()["data"]["token"]
    with srv.client(key=keys["owner"]) as owner:
        token_a = owner.post("/v1/embed/token", json={}).json()["data"]["token"]
    with srv.client(key=None) as anon:
        seen_b = anon.get("/v1/embed/events", params={"token": token_b})
        assert seen_b.status_code == 200 and ids["event_a"] not in seen_b.text
        seen_b_org = anon.get("/v1/embed/events", params={"token": token_b, "organization": ORG_A})
        assert seen_b_org.status_code == 200 and ids["event_a"] not in seen_b_org.text
        seen_a = anon.get("/v1/embed/events", params={"token": token_a})
        assert seen_a.status_code == 200 and ids["event_a"] in seen_a.text
