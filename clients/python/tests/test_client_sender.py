"""The sender's paths on a real spool file, with httpx.MockTransport scripting the server's
answers: splitting around a 413, the limit on unexpected answers, Retry-After surviving a
flush, exponential backoff on network errors, and a sender that survives its own errors.
The same behaviours against the real server are in test_client_spool.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import httpx

import recalled
from recalled._wire import dumps
from recalled.spool.config import SpoolConfig
from recalled.spool.sender import Sender, Signal
from recalled.spool.store import SpoolDB

KEY = "rec_live_aaaaaaaa_" + "b" * 32


def error_response(status: int, code: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": code}}, headers=headers)


def make_sender(tmp_path: Path, handler: Callable[[httpx.Request], httpx.Response],
                **config: Any) -> tuple[Sender, SpoolDB]:
    cfg = SpoolConfig(path=tmp_path / "spool.db", **config)
    db = SpoolDB(cfg.resolved_path())
    sender = Sender(config=cfg, db_path=cfg.resolved_path(), destination="dest", base_url="http://testserver",
                    api_key=KEY, signal=Signal())
    sender.db = db
    sender.http = httpx.Client(base_url="http://testserver", transport=httpx.MockTransport(handler))
    return sender, db


def fill(db: SpoolDB, n: int, **extra: Any) -> None:
    for i in range(n):
        db.enqueue("dest", dumps({"action": "u.x", "metadata": {"i": i}, **extra}), max_rows=10**6,
                   max_bytes=10**9, drop_oldest=False)


def stored_ok(request: httpx.Request) -> httpx.Response:
    events = json.loads(request.content)["events"]
    return httpx.Response(200, json={"data": [_fake_event(e, n) for n, e in enumerate(events)], "deduplicated": []})


def _fake_event(body: dict[str, Any], n: int) -> dict[str, Any]:
    return {"id": f"evt_{n}", "projectId": "proj_1", "organization": None, "action": body["action"],
            "actor": {}, "targets": None, "metadata": body.get("metadata"), "occurredAt": "2026-01-01T00:00:00.000Z",
            "seq": n + 1, "hash": "sha256:x"}


def test_request_too_large_is_split_until_it_fits_and_a_lone_giant_is_dead(tmp_path):
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        sizes.append(len(events))
        if len(request.content) > 600 or any(e["metadata"].get("giant") for e in events):
            return error_response(413, "REQUEST_TOO_LARGE")
        return stored_ok(request)

    sender, db = make_sender(tmp_path, handler)
    fill(db, 8)
    db.enqueue("dest", dumps({"action": "u.giant", "metadata": {"giant": "g" * 50}}), max_rows=100,
               max_bytes=10**6, drop_oldest=False)
    sender.deliver(db.claim("dest", "me", lease_seconds=60, max_events=100, max_bytes=10**6))
    assert db.pending() == 0
    assert [d.event["action"] for d in db.dead_letters()] == ["u.giant"]
    assert sizes[0] == 9 and 1 in sizes


def test_unexpected_answers_are_retried_then_dead_lettered(tmp_path):
    sender, db = make_sender(tmp_path, lambda r: error_response(500, "INTERNAL_ERROR"), max_unexpected_attempts=3)
    fill(db, 2)
    for attempt in range(3):
        db.conn.execute("UPDATE outbox SET next_attempt_at = 0")
        rows = db.claim("dest", "me", lease_seconds=60, max_events=10, max_bytes=10**6)
        assert len(rows) == 2, attempt
        sender.deliver(rows)
    assert db.pending() == 0
    letters = db.dead_letters()
    assert len(letters) == 2 and {d.code for d in letters} == {"INTERNAL_ERROR"} and letters[0].attempts == 3


def test_retry_after_holds_rows_even_through_a_flush(tmp_path):
    sender, db = make_sender(tmp_path, lambda r: error_response(503, "UNAVAILABLE", **{"retry-after": "120"}))
    fill(db, 3)
    sender.deliver(db.claim("dest", "me", lease_seconds=60, max_events=10, max_bytes=10**6))
    (next_at, hold, attempts, owner), = set(db.read("SELECT next_attempt_at, hold_until, attempts, lease_owner "
                                                    "FROM outbox"))
    assert 110 < next_at - time.time() <= 120 and hold == next_at and attempts == 1 and owner is None
    assert sender.signal.pause_until >= next_at - 1
    db.make_due("dest")  # what flush() does
    assert db.read("SELECT MIN(next_attempt_at) FROM outbox")[0][0] == hold


def test_network_errors_back_off_exponentially(tmp_path):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    sender, db = make_sender(tmp_path, refuse)
    fill(db, 1)
    waits = []
    for _ in range(6):
        db.conn.execute("UPDATE outbox SET next_attempt_at = 0")
        before = time.time()
        sender.deliver(db.claim("dest", "me", lease_seconds=60, max_events=10, max_bytes=10**6))
        waits.append(db.read("SELECT next_attempt_at FROM outbox")[0][0] - before)
    assert waits[0] < 1.5 and waits[-1] > 20  # 1 s, 2 s, ... 32 s (±25 %)
    assert all(b > a for a, b in zip(waits, waits[1:]))
    assert db.read("SELECT attempts, last_error FROM outbox")[0][0] == 6


def test_claims_are_leased_and_a_dead_owner_is_released(tmp_path):
    db = SpoolDB(tmp_path / "spool.db")
    fill(db, 5)
    first = db.claim("dest", "a", lease_seconds=60, max_events=3, max_bytes=10**6)
    second = db.claim("dest", "b", lease_seconds=60, max_events=10, max_bytes=10**6)
    assert [r.id for r in first] == [1, 2, 3] and [r.id for r in second] == [4, 5]
    assert db.claim("dest", "c", lease_seconds=60, max_events=10, max_bytes=10**6) == []
    assert db.claim("other", "c", lease_seconds=60, max_events=10, max_bytes=10**6) == []
    assert db.release_dead_owners(lambda owner: owner == "a") == 3
    assert [r.id for r in db.claim("dest", "c", lease_seconds=60, max_events=10, max_bytes=10**6)] == [1, 2, 3]
    # Byte bound: the first row always goes, then rows while they fit.
    db2 = SpoolDB(tmp_path / "bytes.db")
    for i in range(4):
        db2.enqueue("dest", b"x" * 100, max_rows=100, max_bytes=10**6, drop_oldest=False)
    assert len(db2.claim("dest", "a", lease_seconds=60, max_events=10, max_bytes=250)) == 2


def test_the_sender_survives_an_error_and_keeps_sending(tmp_path, monkeypatch):
    calls: list[int] = []
    sender, db = make_sender(tmp_path, stored_ok, poll_interval=0.01)
    fill(db, 2)
    real_claim = db.claim

    def flaky_claim(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise recalled.SpoolError("database is locked")
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(db, "claim", flaky_claim)
    monkeypatch.setattr(sender, "run", lambda: sender._loop())
    sender.start()
    try:
        deadline = time.monotonic() + 10
        while db.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert db.pending() == 0 and len(calls) >= 2 and sender.is_alive()
    finally:
        sender.signal.stopping = True
        sender.signal.ring()
        sender.join(5)
