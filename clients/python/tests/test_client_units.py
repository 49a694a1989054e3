"""Unit tests: retry rules, error mapping, direct-call retries, the spool file, leases,
fork resets and the operator CLI. httpx.MockTransport stands in for the server here only;
everything the brief asks to see against the real server is in the other modules."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

import httpx
import pytest

import recalled
from recalled import errors
from recalled._http import _NO_BODY, Call, SyncTransport, data_of
from recalled._wire import dumps, event_body, format_time
from recalled.spool.config import SpoolConfig
from recalled.spool.policy import Decision, backoff, judge, retry_after_delay
from recalled.spool.sender import owner_is_dead
from recalled.spool.store import SpoolDB

KEY = "rec_live_aaaaaaaa_" + "b" * 32


def err(status: int, code: str, details: Any = None, retry_after: float | None = None) -> errors.RecalledError:
    return errors.RecalledError("x", code=code, status=status, details=details, retry_after=retry_after)


# --- policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status,code,details,size,decision", [
    (0, "NETWORK_ERROR", None, 10, Decision.RETRY),
    (0, "TIMEOUT", None, 10, Decision.RETRY),
    (408, "REQUEST_TIMEOUT", None, 10, Decision.RETRY),
    (429, "RATE_LIMITED", None, 10, Decision.RETRY),
    (502, "INTERNAL_ERROR", None, 10, Decision.RETRY),
    (503, "UNAVAILABLE", None, 10, Decision.RETRY),
    (504, "INTERNAL_ERROR", None, 10, Decision.RETRY),
    (429, "PLAN_LIMIT_REACHED", {"limit": 3}, 10, Decision.DEAD),
    (401, "INVALID_API_KEY", None, 10, Decision.DEAD),
    (401, "REVOKED_API_KEY", None, 10, Decision.DEAD),
    (403, "FORBIDDEN", {"scope": "events:write"}, 10, Decision.DEAD),
    (404, "NOT_FOUND", None, 10, Decision.DEAD),
    (403, "FORBIDDEN", {"field": "organization"}, 10, Decision.SPLIT_BY_ORGANIZATION),
    (403, "FORBIDDEN", {"field": "organization"}, 1, Decision.DEAD),
    (400, "VALIDATION_ERROR", {"errors": [{"index": 3, "field": "action", "message": "m"}]}, 10,
     Decision.DEAD_INDEXES),
    (400, "VALIDATION_ERROR", {"field": "body"}, 10, Decision.SPLIT),
    (400, "VALIDATION_ERROR", {"field": "body"}, 1, Decision.DEAD),
    (409, "IDEMPOTENCY_CONFLICT", {"event_id": "evt_1", "index": 2}, 10, Decision.DEAD_INDEXES),
    (413, "REQUEST_TOO_LARGE", None, 10, Decision.SPLIT),
    (413, "REQUEST_TOO_LARGE", None, 1, Decision.DEAD),
    (413, "EVENT_TOO_LARGE", {"field": "metadata"}, 1, Decision.DEAD),
    (500, "INTERNAL_ERROR", None, 10, Decision.UNEXPECTED),
    (405, "METHOD_NOT_ALLOWED", None, 10, Decision.UNEXPECTED),
])
def test_judge(status, code, details, size, decision):
    assert judge(err(status, code, details), size).decision is decision


def test_judge_keeps_only_valid_indexes():
    details = {"errors": [{"index": 7}, {"index": 7}, {"index": 99}, {"index": "2"}, {"index": 0}]}
    assert judge(err(400, "VALIDATION_ERROR", details), 10).indexes == [0, 7]
    assert judge(err(400, "VALIDATION_ERROR", {"errors": [{"index": 99}]}), 10).decision is Decision.SPLIT


def test_backoff_grows_from_one_second_to_ten_minutes_with_jitter():
    rng = random.Random(7)
    for n in range(1, 40):
        delay = backoff(n, rng=rng)
        assert 1.0 <= delay <= 600.0
        base = min(600.0, 2.0 ** (n - 1))
        assert base * 0.75 - 1e-9 <= delay or delay == 1.0
        assert delay <= base * 1.25 + 1e-9
    assert backoff(30, rng=rng) >= 450.0  # at the cap (600 ± 25 %, cut at 600)
    delays = {round(backoff(5, rng=rng), 3) for _ in range(20)}
    assert len(delays) > 10  # jittered, not one fixed value
    assert retry_after_delay(None) is None
    assert retry_after_delay(7.0) == 7.0
    assert retry_after_delay(86400.0) == 600.0


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status,code,cls", [
    (400, "VALIDATION_ERROR", errors.ValidationError),
    (401, "UNAUTHORIZED", errors.AuthenticationError),
    (401, "INVALID_API_KEY", errors.AuthenticationError),
    (401, "REVOKED_API_KEY", errors.AuthenticationError),
    (403, "FORBIDDEN", errors.PermissionDeniedError),
    (404, "NOT_FOUND", errors.NotFoundError),
    (409, "IDEMPOTENCY_CONFLICT", errors.ConflictError),
    (413, "EVENT_TOO_LARGE", errors.PayloadTooLargeError),
    (413, "REQUEST_TOO_LARGE", errors.PayloadTooLargeError),
    (429, "RATE_LIMITED", errors.RateLimitError),
    (429, "PLAN_LIMIT_REACHED", errors.PlanLimitError),
    (500, "INTERNAL_ERROR", errors.ServerError),
    (500, "DATABASE_ERROR", errors.ServerError),
    (503, "UNAVAILABLE", errors.UnavailableError),
    (405, "METHOD_NOT_ALLOWED", errors.RecalledError),
])
def test_error_classes_follow_status_and_code(status, code, cls):
    body = json.dumps({"error": {"code": code, "message": "said the server", "details": {"k": 1}}}).encode()
    e = errors.error_from_response(status, body, httpx.Headers({"x-request-id": "req_1", "retry-after": "3"}))
    assert type(e) is cls
    assert (e.code, e.status, e.message, e.details, e.request_id, e.retry_after) == \
        (code, status, "said the server", {"k": 1}, "req_1", 3.0)
    assert isinstance(e, errors.RecalledError)


def test_errors_from_a_body_that_is_not_the_servers():
    e = errors.error_from_response(502, b"<html>bad gateway</html>", httpx.Headers({}))
    assert type(e) is errors.ServerError and e.code == "INTERNAL_ERROR" and "bad gateway" in e.message
    when = (datetime.now(timezone.utc) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    e = errors.error_from_response(429, b"", httpx.Headers({"retry-after": when}))
    assert type(e) is errors.RateLimitError and 25 <= (e.retry_after or 0) <= 31
    assert isinstance(errors.APITimeoutError("t"), TimeoutError)
    assert isinstance(errors.SpoolFullError("f"), errors.SpoolError)


# --- direct calls: what is retried ----------------------------------------------------------


def transport_with(handler: Callable[[httpx.Request], httpx.Response], max_retries: int = 2) -> SyncTransport:
    transport = SyncTransport("http://testserver", KEY, 5.0, max_retries)
    transport._http = httpx.Client(base_url="http://testserver", transport=httpx.MockTransport(handler))
    return transport


def scripted(*responses: httpx.Response | Exception) -> tuple[Callable[[httpx.Request], httpx.Response], list]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


def error_response(status: int, code: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": code}}, headers=headers)


OK = httpx.Response(200, json={"data": {"ok": True}})


def call(method: str = "GET", idempotent: bool = True) -> Call[Any]:
    return Call(method, "/v1/x", data_of, body={"a": 1} if method == "POST" else _NO_BODY, idempotent=idempotent)


def test_unavailable_and_rate_limited_are_retried_after_retry_after():
    handler, seen = scripted(error_response(503, "UNAVAILABLE", **{"retry-after": "0"}),
                             error_response(429, "RATE_LIMITED", **{"retry-after": "0"}), OK)
    assert transport_with(handler).request(call("POST", idempotent=False)) == {"ok": True}
    assert len(seen) == 3


def test_a_post_that_may_have_been_processed_is_not_retried():
    handler, seen = scripted(error_response(502, "INTERNAL_ERROR"), OK)
    with pytest.raises(errors.ServerError):
        transport_with(handler).request(call("POST", idempotent=False))
    assert len(seen) == 1
    handler, seen = scripted(httpx.ReadTimeout("slow"), OK)
    with pytest.raises(errors.APITimeoutError):
        transport_with(handler).request(call("POST", idempotent=False))
    assert len(seen) == 1


def test_idempotent_calls_are_retried_on_server_errors_and_timeouts(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    handler, seen = scripted(error_response(502, "INTERNAL_ERROR"), httpx.ReadTimeout("slow"), OK)
    assert transport_with(handler).request(call("GET")) == {"ok": True}
    assert len(seen) == 3
    handler, seen = scripted(httpx.ConnectError("refused"), OK)  # never reached the server
    assert transport_with(handler).request(call("POST", idempotent=False)) == {"ok": True}


def test_never_retried_and_long_waits_are_the_callers(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    for status, code in [(400, "VALIDATION_ERROR"), (401, "INVALID_API_KEY"), (404, "NOT_FOUND"),
                         (429, "PLAN_LIMIT_REACHED")]:
        handler, seen = scripted(error_response(status, code), OK)
        with pytest.raises(errors.RecalledError) as raised:
            transport_with(handler).request(call("GET"))
        assert raised.value.code == code and len(seen) == 1
    handler, seen = scripted(error_response(429, "RATE_LIMITED", **{"retry-after": "3600"}), OK)
    with pytest.raises(errors.RateLimitError) as limited:
        transport_with(handler).request(call("GET"))
    assert limited.value.retry_after == 3600 and len(seen) == 1
    handler, seen = scripted(error_response(503, "UNAVAILABLE"), error_response(503, "UNAVAILABLE"),
                             error_response(503, "UNAVAILABLE"), OK)
    with pytest.raises(errors.UnavailableError):
        transport_with(handler, max_retries=2).request(call("GET"))
    assert len(seen) == 3


def test_requests_carry_the_key_and_json():
    handler, seen = scripted(OK)
    transport = SyncTransport("http://testserver", KEY, 5.0, 0)
    transport._http = httpx.Client(base_url="http://testserver", transport=httpx.MockTransport(handler),
                                   headers={"Authorization": f"Bearer {KEY}"})
    transport.request(Call("POST", "/v1/events", data_of, body={"action": "a"}))
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["content-type"] == "application/json"
    assert json.loads(seen[0].content) == {"action": "a"}


# --- wire -----------------------------------------------------------------------------------


def test_times_and_bodies():
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.678Z"
    assert format_time(datetime(2026, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))) == "2026-01-02T03:00:00.000Z"
    assert format_time(date(2026, 1, 2)) == "2026-01-02"
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2026, 1, 2))
    body = event_body(action="a.b", actor=recalled.Actor(id="u"), targets=[recalled.Target("t", "1", "n")],
                      idempotency_key="k")
    assert body == {"action": "a.b", "actor": {"id": "u"}, "targets": [{"type": "t", "id": "1", "name": "n"}],
                    "idempotency_key": "k"}
    with pytest.raises(ValueError):
        event_body(action="")
    with pytest.raises(ValueError, match="JSON"):
        dumps({"metadata": {"x": float("nan")}})
    with pytest.raises(TypeError):
        dumps({"metadata": {"x": object()}})


def fill(db: SpoolDB, n: int, **extra: Any) -> None:
    for i in range(n):
        db.enqueue("dest", dumps({"action": "u.x", "metadata": {"i": i}, **extra}), max_rows=10**6,
                   max_bytes=10**9, drop_oldest=False)


def test_owner_liveness():
    from recalled.spool.sender import HOSTNAME

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(done.stdout)
    assert owner_is_dead(f"{HOSTNAME}:{gone}:abc")
    assert not owner_is_dead(f"{HOSTNAME}:{os.getpid()}:abc")  # this process: alive
    assert not owner_is_dead(f"{HOSTNAME}:{os.getppid()}:abc")
    assert not owner_is_dead(f"another-host:{gone}:abc")        # cannot tell: let the lease run out


def test_spool_file_is_private_and_counts_its_bounds(tmp_path):
    path = tmp_path / "new" / "dir" / "spool.db"
    db = SpoolDB(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert db.read("PRAGMA journal_mode")[0][0] == "wal"
    assert db.read("PRAGMA synchronous")[0][0] == 2  # FULL
    fill(db, 3)
    db.dead_letter([1], {"status": 400, "code": "VALIDATION_ERROR", "message": "m"})
    (rows, used), = db.read("SELECT rows, bytes FROM totals")
    (real,), = db.read("SELECT (SELECT SUM(size) FROM outbox) + (SELECT SUM(size) FROM dead_letters)")
    assert rows == 3 and used == real
    assert db.retry_dead() == 1 and db.read("SELECT rows FROM totals")[0][0] == 3 and db.pending() == 3


def test_config_is_checked():
    with pytest.raises(ValueError):
        SpoolConfig(when_full="block").check()  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SpoolConfig(max_batch_events=5000).check()
    with pytest.raises(ValueError):
        SpoolConfig(send_timeout=100, lease_seconds=60).check()


# --- fork -----------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_fresh_connections_and_its_own_sender(tmp_path):
    client = recalled.Recalled(api_key=KEY, base_url="http://127.0.0.1:9",
                               spool=SpoolConfig(path=tmp_path / "spool.db"))
    client.events.emit(action="fork.parent")  # the parent's sender and connection exist now
    client._transport.client()
    outbox = client._outbox()
    parent = (id(outbox._db), outbox._sender.ident, id(client._transport._http))  # type: ignore[union-attr]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            fresh = (outbox._db is None, outbox._sender is None, client._transport._http is None)
            client.events.emit(action="fork.child")
            started = outbox._sender is not None and outbox._sender.is_alive()
            owner_pid = int(outbox._sender.owner.split(":")[1]) if outbox._sender else -1
            os.write(write, json.dumps([*fresh, started, owner_pid == os.getpid(),
                                        id(outbox._db) != parent[0]]).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    report = json.loads(os.read(read, 4096))
    os.close(read)
    assert report == [True, True, True, True, True, True]
    assert (id(outbox._db), outbox._sender.ident) == parent[:2]  # type: ignore[union-attr]
    assert client.events.queue_size() == 2
    client.close(timeout=0)


# --- operator CLI ---------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
    return subprocess.run([sys.executable, "-m", "recalled", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_cli_status_retry_and_purge(tmp_path):
    path = tmp_path / "spool.db"
    db = SpoolDB(path)
    fill(db, 4)
    db.dead_letter([1, 2], {"status": 400, "code": "VALIDATION_ERROR", "message": "action is required",
                            "details": {"field": "action"}, "request_id": "req_9"})
    done = cli("spool", "status", "--path", str(path), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"]["pending"] == 2 and report["status"]["dead"] == 2
    assert [d["code"] for d in report["dead_letters"]] == ["VALIDATION_ERROR"] * 2
    assert report["dead_letters"][0]["details"] == {"field": "action"}
    human = cli("spool", "status", "--path", str(path))
    assert "dead letters 2" in human.stdout and "action is required" in human.stdout and "retry-dead" in human.stdout
    assert "requeued 1" in cli("spool", "retry-dead", "--path", str(path), "--id", "1").stdout
    assert db.pending() == 3
    assert "deleted 1" in cli("spool", "purge-dead", "--path", str(path)).stdout
    assert db.dead_letters() == []
    missing = cli("spool", "status", "--path", str(tmp_path / "nope.db"))
    assert missing.returncode != 0 and "no spool at" in missing.stderr
    assert not (tmp_path / "nope.db").exists()


def test_a_clients_dead_letter_calls_stay_within_its_server_and_key(tmp_path):
    from recalled._settings import destination_fingerprint

    path = tmp_path / "spool.db"
    other_key = "rec_live_cccccccc_" + "d" * 32
    mine = destination_fingerprint("http://127.0.0.1:9", KEY)
    theirs = destination_fingerprint("http://127.0.0.1:9", other_key)
    db = SpoolDB(path)
    for destination in (mine, theirs):
        db.enqueue(destination, dumps({"action": "d.x"}), max_rows=100, max_bytes=10**6, drop_oldest=False)
    db.dead_letter([1, 2], {"status": 401, "code": "INVALID_API_KEY", "message": "m"})
    client = recalled.Recalled(api_key=KEY, base_url="http://127.0.0.1:9", spool=SpoolConfig(path=path))
    try:
        assert [d.id for d in client.spool.dead_letters()] == [1]
        assert client.spool.purge_dead() == 1
        assert [d.id for d in db.dead_letters()] == [2]
        # By id, another key's dead letter is taken over (after a key was replaced).
        assert client.spool.retry_dead([2]) == 1
        assert db.read("SELECT id, destination FROM outbox") == [(2, mine)]
        assert client.spool.status().destinations[mine].pending == 1
    finally:
        client.close(timeout=0)
