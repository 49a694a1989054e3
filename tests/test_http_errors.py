"""HTTP errors, the same on every route: 405 + Allow, `details` always, 415, trailing slashes.

The routes are enumerated from the application's own router (as in test_route_auth_matrix.py),
so a route added later is covered without editing this file.
"""

from __future__ import annotations

import re

import httpx
import pytest

from recalled_lite import errors
from recalled_lite.app import _as_api_error, create_app
from recalled_lite.config import Config
from recalled_lite.openapi import OPERATIONS

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# The web console's pages (when it is enabled) answer a bad form or sign-in with an HTML page;
# every other route, and every 405 and unknown path, answers with the JSON error.
BROWSER_PAGES = "/console"


def is_console(path: str) -> bool:
    # The console's routes answer with pages, 405 included (tests/test_console_*.py check them).
    return path == "/" or path == BROWSER_PAGES or path.startswith(BROWSER_PAGES + "/")


def router_routes() -> list:
    """The JSON API's routes, from the app's router."""
    app = create_app(Config(), store=None)
    while not hasattr(app, "routes"):  # unwrap the ASGI middleware around Starlette
        app = app.app
    return [route for route in app.routes if getattr(route, "methods", None) and not is_console(route.path)]


def route_paths() -> dict[str, frozenset[str]]:
    """path template -> every method it serves (HEAD included where GET is)."""
    table: dict[str, set[str]] = {}
    for route in router_routes():
        table.setdefault(route.path, set()).update(route.methods)
    return {path: frozenset(methods) for path, methods in table.items()}


def sample(path: str, values: dict[str, str] | None = None) -> str:
    values = values or {}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), f"x_{m.group(1)}"), path)


def assert_error_shape(r: httpx.Response, where: str) -> dict:
    assert r.headers.get("content-type", "").startswith("application/json"), (where, r.status_code, r.text[:200])
    body = r.json()
    assert set(body) == {"error"}, (where, body)
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, (where, error)
    assert isinstance(error["code"], str) and error["code"].isupper(), (where, error)
    assert isinstance(error["message"], str) and error["message"], (where, error)
    assert isinstance(error["details"], dict), (where, error)
    assert r.headers.get("x-request-id"), where
    return error


# -- unit --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [c for c in vars(errors).values()
                                 if isinstance(c, type) and issubclass(c, errors.APIError)])
def test_every_api_error_body_has_details(cls):
    error = cls("something went wrong")
    assert error.body() == {"error": {"code": error.code, "message": "something went wrong", "details": {}}}
    assert cls("x", details={"field": "a"}).body()["error"]["details"] == {"field": "a"}


def test_unsupported_media_type_is_415():
    assert (errors.UnsupportedMediaType.status, errors.UnsupportedMediaType.code) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert "UnsupportedMediaType 415 UNSUPPORTED_MEDIA_TYPE" in errors.__doc__


def test_starlette_http_exceptions_keep_their_headers():
    from starlette.exceptions import HTTPException

    mapped = _as_api_error(HTTPException(405, headers={"Allow": "GET"}))
    assert mapped.status == 405 and mapped.headers == {"Allow": "GET"}
    assert mapped.body()["error"]["details"] == {}


def test_the_first_pattern_matching_a_path_is_its_own_route():
    """One route per path, and no route is shadowed by an earlier pattern: a wrong method
    gets the 405 of the path the client meant (GET /v1/events/batch), never a later one."""
    from starlette.routing import Match

    routes = router_routes()
    paths = [route.path for route in routes]
    assert len(paths) == len(set(paths)), "a path is served by two routes: merge them"
    for route in routes:
        url = sample(route.path)
        scope = {"type": "http", "path": url, "method": "PUT", "root_path": ""}
        owner = next(r for r in routes if r.matches(scope)[0] is Match.FULL)
        assert owner is route, f"{url} is taken by {owner.path}, not {route.path}"


# -- against the real server -------------------------------------------------------------------


def test_every_route_answers_a_method_it_does_not_allow_with_405_and_allow(server):
    table = route_paths()
    assert len(table) > 20
    checked = 0
    with server.client() as c:
        for path, allowed in sorted(table.items()):
            assert "HEAD" in allowed if "GET" in allowed else True, path
            for method in METHODS:
                if method in allowed:
                    continue
                r = c.request(method, sample(path))
                where = f"{method} {path}"
                assert r.status_code == 405, (where, r.status_code, r.text[:200])
                if method != "HEAD":  # a response to HEAD has no body
                    assert assert_error_shape(r, where)["code"] == "METHOD_NOT_ALLOWED"
                assert {m.strip() for m in r.headers["allow"].split(",")} == set(allowed), where
                checked += 1
    assert checked > 100


def test_head_is_served_wherever_get_is(server):
    r = httpx.head(server.url + "/healthz")
    assert r.status_code == 200 and r.content == b""
    with server.client() as c:
        assert c.head("/v1/events").status_code == 200


def test_get_on_the_batch_route_is_405_not_an_event_lookup(server):
    with server.client() as c:
        r = c.get("/v1/events/batch")
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_every_error_on_every_route_has_code_message_and_details(server):
    """No key, a wrong key, fake ids, bad parameters and a broken body, on every route."""
    seen: dict[int, int] = {}
    bad_key = "rec_live_nokey000_" + "x" * 32
    with server.client(key=None) as anon, server.client() as admin, server.client(key=bad_key) as wrong:
        for path, allowed in sorted(route_paths().items()):
            for method in sorted(allowed - {"HEAD", "OPTIONS"}):
                url = sample(path)
                attempts = [
                    (anon, {}),
                    (wrong, {}),
                    (admin, {"params": {"limit": "-1", "cursor": "zz", "from_seq": "x", "format": "x",
                                        "token": "forged"}}),
                ]
                if method in ("POST", "PATCH"):
                    attempts.append((admin, {"content": b'{"events": [', "headers": {"content-type": "application/json"}}))
                for client, kwargs in attempts:
                    r = client.request(method, url, **kwargs)
                    if r.status_code >= 400:
                        if path.startswith(BROWSER_PAGES) and r.headers.get("content-type", "").startswith("text/html"):
                            continue  # a page for people: its error is a page too
                        assert_error_shape(r, f"{method} {path} {r.status_code}")
                        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        for url in ("/nope", "/v1/nope/", "/v1/events/x/y/z"):
            r = admin.get(url)
            assert r.status_code == 404
            assert_error_shape(r, url)
        r = admin.post("/v1/events", content=b"x" * (5 * 1024 * 1024 + 1))
        assert r.status_code == 413
        assert_error_shape(r, "413")
    # Refused by the protocol layer, before the application sees the request.
    for status, kwargs in ((414, {"params": {"q": "x" * 20000}}), (431, {"headers": {"x-big": "y" * 70000}})):
        with server.client() as c:
            r = c.get("/v1/events", **kwargs)
        assert r.status_code == status, r.text[:200]
        assert_error_shape(r, str(status))
    assert {400, 401, 404} <= set(seen), seen


# -- 415 --------------------------------------------------------------------------------------

JSON_ROUTES = sorted((method, path) for (method, path), spec in OPERATIONS.items() if spec[4] is not None)


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory):
    from conftest import ServerProcess

    srv = ServerProcess(tmp_path_factory.mktemp("http415"), args=["--dev"]).start()
    yield srv
    srv.kill()


def test_the_json_routes_are_the_ones_with_a_request_body():
    assert ("POST", "/v1/events") in JSON_ROUTES and ("PATCH", "/v1/event_subscriptions/{sub_id}") in JSON_ROUTES
    assert len(JSON_ROUTES) >= 9


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain",
                                          "multipart/form-data; boundary=x", "application/jsonp"])
def test_a_non_json_content_type_on_every_json_route_is_415(dev_server, content_type):
    with dev_server.client() as c:
        sub = c.post("/v1/event_subscriptions", json={"url": "http://127.0.0.1:9/hook"})
        assert sub.status_code == 201, sub.text
        values = {"sub_id": sub.json()["data"]["id"]}
        for method, path in JSON_ROUTES:
            r = c.request(method, sample(path, values), content=b'{"action": "form.x"}',
                          headers={"content-type": content_type})
            where = f"{method} {path} {content_type}"
            assert r.status_code == 415, (where, r.status_code, r.text[:200])
            error = assert_error_shape(r, where)
            assert error["code"] == "UNSUPPORTED_MEDIA_TYPE"
            assert "application/json" in error["message"]
        assert c.get("/v1/events", params={"action": "form.x"}).json()["data"] == []


@pytest.mark.parametrize("headers", [{}, {"content-type": "application/json"},
                                     {"content-type": "application/json; charset=utf-8"},
                                     {"content-type": "Application/JSON;charset=UTF-8"},
                                     {"content-type": "application/vnd.recalled+json"}])
def test_json_and_a_missing_content_type_are_accepted(server, headers):
    with server.client() as c:
        r = c.post("/v1/events", content=b'{"action": "ctype.ok"}', headers=headers)
    assert r.status_code == 200, (headers, r.text)
    assert r.json()["data"]["action"] == "ctype.ok"


# -- trailing slash ---------------------------------------------------------------------------


def test_a_trailing_slash_serves_the_same_route(server):
    with server.client(follow_redirects=False) as c:
        created = c.post("/v1/events/", json={"action": "slash.created", "organization": "org_slash"})
        assert created.status_code == 200, (created.status_code, created.headers, created.text)
        event_id = created.json()["data"]["id"]
        listed = c.get("/v1/events/", params={"organization": "org_slash"})
        assert listed.status_code == 200 and [e["id"] for e in listed.json()["data"]] == [event_id]
        one = c.get(f"/v1/events/{event_id}/")
        assert one.status_code == 200 and one.json()["data"]["id"] == event_id
        keys = c.get("/v1/keys/")
        assert keys.status_code == 200 and keys.json()["has_more"] is False
        wrong = c.delete("/v1/events/")
        assert wrong.status_code == 405 and "POST" in wrong.headers["allow"]
        missing = c.get("/v1/nothing/")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
        assert "location" not in missing.headers
