"""Python values to the server's wire form: timestamps, query strings, intake bodies."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from typing import Any, Iterable, Mapping

from .types import Actor, Target

TimeLike = datetime | date | str


def format_time(value: TimeLike) -> str:
    """RFC 3339 for the server. A naive datetime is refused: it has no offset, and guessing
    (local time? UTC?) would silently move an audit event by hours."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: give it a timezone (datetime.now(timezone.utc))")
        text = value.astimezone(timezone.utc).isoformat(timespec="milliseconds")
        return text.replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()  # a bare date: the server reads it as that UTC day
    raise TypeError(f"expected a datetime, a date or a string, not {type(value).__name__}")


def now_rfc3339() -> str:
    return format_time(datetime.now(timezone.utc))


def query(params: Mapping[str, Any]) -> dict[str, str]:
    """Drop unset values and format the rest (the server treats empty as absent anyway)."""
    out: dict[str, str] = {}
    for name, value in params.items():
        if value is None or value == "":
            continue
        if isinstance(value, (datetime, date)):
            out[name] = format_time(value)
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = str(value)
    return out


def _actor(value: Actor | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Actor):
        return value.to_wire()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"actor must be a mapping or recalled.Actor, not {type(value).__name__}")


def _targets(values: Iterable[Target | Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    if values is None:
        return None
    out = []
    for value in values:
        if isinstance(value, Target):
            out.append(value.to_wire())
        elif isinstance(value, Mapping):
            out.append(dict(value))
        else:
            raise TypeError(f"each target must be a mapping or recalled.Target, not {type(value).__name__}")
    return out


def event_body(*, action: str, organization: str | None = None,
               actor: Actor | Mapping[str, Any] | None = None,
               targets: Iterable[Target | Mapping[str, Any]] | None = None,
               metadata: Mapping[str, Any] | None = None, occurred_at: TimeLike | None = None,
               ip_address: str | None = None, user_agent: str | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
    """The ``POST /v1/events`` body (snake_case), without the fields left unset.

    Only what the client can tell locally is checked here (types, a missing action, JSON
    that cannot be encoded); the server owns every other rule and answers 400 for them.
    """
    if not isinstance(action, str) or not action:
        raise ValueError("action is required (a non-empty string)")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
    body: dict[str, Any] = {"action": action}
    for name, value in (("organization", organization), ("actor", _actor(actor)),
                        ("targets", _targets(targets)),
                        ("metadata", dict(metadata) if metadata is not None else None),
                        ("occurred_at", format_time(occurred_at) if occurred_at is not None else None),
                        ("ip_address", ip_address), ("user_agent", user_agent),
                        ("idempotency_key", idempotency_key)):
        if value is not None:
            body[name] = value
    return body


def dumps(value: Any) -> bytes:
    """Compact JSON; NaN and infinities are refused (they are not JSON, the server says 400)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except ValueError as exc:
        raise ValueError(f"the event cannot be sent as JSON: {exc}") from None

