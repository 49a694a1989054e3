"""The server's own audit events (recalled.*) as a test sees them.

Every server in the tests writes at least one (the bootstrap key at the first start), and
creating keys, subscriptions or erasing writes more: tests that count every event of a
database add exactly these, tests that look at their own events filter them out.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

SERVER_PREFIX = "recalled."


def audit_events(client: Any, **params: Any) -> list[dict]:
    """Every recalled.* event the client's key may see, newest first (all pages)."""
    events: list[dict] = []
    cursor = None
    while True:
        query = {"action": "recalled.*", "limit": 200, **params}
        if cursor:
            query["cursor"] = cursor
        page = client.get("/v1/events", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        events += body["data"]
        cursor = body["nextCursor"]
        if not cursor:
            return events


def is_audit(event: dict) -> bool:
    return event["action"].startswith(SERVER_PREFIX)


def without_audit(events: list[dict]) -> list[dict]:
    return [e for e in events if not is_audit(e)]


def erased_reference(server_secret: str, actor_id: str) -> str:
    """How docs/api.md says an erased actor is named in its audit event, written out independently."""
    key = hmac.new(server_secret.encode(), b"recalled-lite key derivation\naudit: erased actor", hashlib.sha256).digest()
    return "hmac-sha256:" + hmac.new(key, actor_id.encode(), hashlib.sha256).hexdigest()
