"""The intake routes' short way past Starlette (routing.HotRoutes) answers as Starlette would.

In-process (TestClient): these compare the two paths to one app, request by request. The
real server's intake is covered end to end by test_intake.py and the rest of the suite,
which all go through the short way.
"""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient

from recalled_lite.app import create_app
from recalled_lite.auth import ADMIN
from recalled_lite.config import Config
from recalled_lite.errors import StorageError, StorageUnavailable
from recalled_lite.auth import new_key_record
from recalled_lite.routing import HotRoutes
from recalled_lite.storage.sqlite.store import SqliteStore

pytestmark = pytest.mark.sqlite_only("an in-process SqliteStore: the short way is the same code on either backend")

EVENT = {"action": "user.login", "actor": {"id": "user_1"}, "organization": "org_1"}


@pytest.fixture
def served(tmp_path):
    store = SqliteStore(tmp_path / "r.db", secret=b"s" * 32)
    plaintext, key = new_key_record("admin", frozenset({ADMIN}), None)
    store.create_key_sync(key)
    app = create_app(Config(), store)
    hot = app.app
    assert isinstance(hot, HotRoutes)
    starlette_calls = []
    inner = hot.app

    async def counting(scope, receive, send):
        if scope["type"] == "http":
            starlette_calls.append(scope["path"])
        await inner(scope, receive, send)

    hot.app = counting
    with TestClient(app, base_url="http://testserver", raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {plaintext}"
        yield client, store, starlette_calls


# Differ from one request to the next whichever way they go: ids, lengths, a budget counting down.
_PER_REQUEST = {"x-request-id", "content-length", "date", "ratelimit"}


def comparable(response) -> tuple:
    body = response.json()
    headers = {k: v for k, v in response.headers.items() if k not in _PER_REQUEST}
    return response.status_code, headers, body.get("error") or sorted(body)


@pytest.mark.parametrize("body, headers", [
    (EVENT, {}),
    ({"action": "user.login"}, {}),                                    # 400: no actor
    (b"{not json", {"content-type": "application/json"}),             # 400: not JSON
    (EVENT, {"content-type": "text/plain"}),                          # 415
    (EVENT, {"authorization": "Bearer rec_live_nosuchkey_" + "x" * 32}),  # 401
    (EVENT, {"authorization": ""}),                                   # 401: no key
])
def test_intake_answers_the_same_by_either_way(served, body, headers):
    client, _, starlette_calls = served
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    hot = client.post("/v1/events", headers=headers, **kwargs)
    assert starlette_calls == []  # the exact path never reached Starlette
    # A trailing slash is not in the table: the same route, through Starlette's router.
    slow = client.post("/v1/events/", headers=headers, **kwargs)
    assert starlette_calls == ["/v1/events/"]
    assert comparable(hot) == comparable(slow)
    assert hot.headers["x-request-id"]


def test_batch_takes_the_short_way_and_other_methods_do_not(served):
    client, _, starlette_calls = served
    r = client.post("/v1/events/batch", json={"events": [EVENT, EVENT]})
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    assert starlette_calls == []
    wrong = client.get("/v1/events/batch")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in wrong.headers["allow"]
    listed = client.get("/v1/events")
    assert listed.status_code == 200 and len(listed.json()["data"]) == 2
    assert starlette_calls == ["/v1/events/batch", "/v1/events"]


@pytest.mark.parametrize("raised, status, code", [
    (StorageUnavailable("the database is locked by another process", retry_after=1), 503, "UNAVAILABLE"),
    (StorageError("database error: disk I/O error"), 500, "DATABASE_ERROR"),
    (RuntimeError("a bug"), 500, "INTERNAL_ERROR"),
])
def test_a_failing_store_is_answered_in_the_error_shape(served, monkeypatch, caplog, raised, status, code):
    client, store, _ = served

    async def failing(events):
        raise raised

    monkeypatch.setattr(store, "append_events", failing)
    with caplog.at_level(logging.INFO, logger="recalled_lite"):
        r = client.post("/v1/events", json=EVENT)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and set(error) == {"code", "message", "details"}
    request_id = r.headers["x-request-id"]
    if isinstance(raised, StorageUnavailable):
        assert r.headers["retry-after"] == "1"
    # A bug is logged once, with its traceback and the request id, by the outer middleware.
    unhandled = [rec for rec in caplog.records if rec.getMessage() == "unhandled error"]
    if isinstance(raised, RuntimeError):
        assert len(unhandled) == 1 and unhandled[0].exc_info is not None
        assert unhandled[0].fields["request_id"] == request_id
    else:
        assert unhandled == []


def test_the_metrics_label_intake_by_its_route(served):
    client, _, _ = served
    assert client.post("/v1/events", json=EVENT).status_code == 200
    text = client.get("/metrics").text
    assert 'recalled_http_request_duration_seconds_count{route="/v1/events",status_class="2xx"} 1.0' in text
