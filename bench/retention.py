"""The `retention` scenario of bench/run.py: intake while a purge job runs.

Back-dated events (400 days old) are loaded in batches, a 365-day rule makes every one of
them expired, and wrk measures single-event intake p99 first without a purge, then while
`POST /v1/retention/run` deletes them in batches of `retention.batch_size`. The purge's
batches are write ops queued behind intake like any other, so the bar is that intake p99
stays within 2x of its value without the purge.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import msgspec

from .procs import json_or_none, request, short

RULE = msgspec.json.encode({"days": 365})


def _body(start: int, count: int, occurred_at: str) -> bytes:
    return msgspec.json.encode({"events": [
        {"action": f"bench.old.{i % 7}", "organization": f"org_{i % 13}", "occurred_at": occurred_at,
         "actor": {"type": "user", "id": f"user_{i % 1000}", "email": f"u{i % 1000}@example.com"},
         "targets": [{"type": "invoice", "id": f"inv_{i}"}], "metadata": {"i": i, "note": "retention bench"}}
        for i in range(start, start + count)]})


def load_expired(port: int, key: str, events: int) -> None:
    """`events` events with occurredAt 400 days ago, and the rule that expires them."""
    occurred_at = (datetime.now(timezone.utc) - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for start in range(0, events, 1000):
        status, _, body = request(port, "POST", "/v1/events/batch", _body(start, min(1000, events - start),
                                                                           occurred_at), key=key, timeout=120)
        if status != 200:
            raise RuntimeError(f"loading expired events: {status} {short(body)}")
    status, _, body = request(port, "PUT", "/v1/retention/rules", RULE, key=key)
    if status != 200:
        raise RuntimeError(f"setting the rule: {status} {short(body)}")


def start_purge(port: int, key: str) -> str:
    status, _, body = request(port, "POST", "/v1/retention/run", b'{"reason": "bench"}', key=key)
    if status != 202:
        raise RuntimeError(f"starting the purge: {status} {short(body)}")
    return json_or_none(body)["data"]["id"]


def job(port: int, key: str, job_id: str) -> dict:
    status, _, body = request(port, "GET", f"/v1/retention/jobs/{job_id}", key=key)
    return (json_or_none(body) or {}).get("data") or {} if status == 200 else {}


def wait(port: int, key: str, job_id: str, timeout: float = 1800.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job(port, key, job_id)
        if state.get("status") != "running":
            return state
        time.sleep(0.2)
    return job(port, key, job_id)
