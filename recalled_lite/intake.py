"""Turn a decoded EventIn into a PreparedEvent, applying every rule of SPEC §4.1.

Pure and synchronous: no I/O. Everything that does not depend on the event's
place in the chain (salted digest, search text, idempotency fingerprint) is
computed here, so the single writer only numbers, hashes and inserts.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from .actions import SERVER_ACTION_PREFIX, is_server_action
from .auth import write_organization
from .config import EventsConfig
from .errors import APIError, EventTooLarge, ValidationError
from .integrity.canonical import may_hold_floats
from .integrity.chain import personal_digest, personal_document
from .randbuf import random_bytes
from .schemas import CAMEL_ALIASES, EventIn
from .storage.base import ApiKeyRecord, PreparedEvent
from .storage.fts import fts_columns_from_values
from .storage.keys import event_keys
from .timefmt import parse_rfc3339_ms

_encode = msgspec.json.encode
_fingerprint_encoder = msgspec.json.Encoder(order="sorted")
_urandom = random_bytes  # buffered os.urandom (randbuf.py)
_sha256 = hashlib.sha256


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _no_nul(value: str | None, field: str) -> None:
    if value is not None and "\x00" in value:
        raise ValidationError.field(field, f"{field} must not contain NUL characters")


def valid_idempotency_key(value: str, field: str = "idempotency_key") -> str:
    if not value or len(value) > 255 or not all(" " <= ch <= "~" for ch in value):
        raise ValidationError.field(field, "idempotency_key must be 1-255 printable ASCII characters")
    return value


def either(snake: Any, camel: Any, snake_name: str) -> Any:
    """One field sent in both spellings: the same value is fine, two values are a 400."""
    if snake is None or snake == camel:
        return camel
    camel_name = CAMEL_ALIASES[snake_name]
    raise ValidationError(
        f"{snake_name} and {camel_name} are two spellings of the same field and their values differ; "
        "send one of them",
        {"field": snake_name, "fields": [snake_name, camel_name]},
    )


def prepare_event(
    event: EventIn,
    key: ApiKeyRecord,
    limits: EventsConfig,
    received_at: int,
    header_idempotency_key: str | None = None,
) -> PreparedEvent:
    """A client's event: its action and organization checked against the key, then prepared."""
    action = event.action
    if action is None:
        action = event.event_type if event.event_type_camel is None else either(
            event.event_type, event.event_type_camel, "event_type")
        if action is None:
            raise ValidationError.field("action", "action is required")
    if is_server_action(action):
        raise ValidationError.field(
            "action", f"actions starting with {SERVER_ACTION_PREFIX!r} are reserved for the server's own audit events")
    organization = write_organization(key, event.organization)
    return prepare_resolved(event, action, organization, limits, received_at, header_idempotency_key)


def prepare_resolved(
    event: EventIn,
    action: str,
    organization: str | None,
    limits: EventsConfig,
    received_at: int,
    header_idempotency_key: str | None = None,
) -> PreparedEvent:
    """Every rule of an event whose action and organization are already decided (the
    server's own audit events come in here directly)."""
    _no_nul(action, "action")

    _no_nul(organization, "organization")

    actor = event.actor
    actor_type = actor_id = actor_name = actor_email = None
    if actor is not None:
        actor_type, actor_id, actor_name, actor_email = actor.type, actor.id, actor.name, actor.email
        # One scan of the four fields; the field names are built only for an error.
        if "\x00" in f"{actor_type}{actor_id}{actor_name}{actor_email}":
            for field, value in (("type", actor_type), ("id", actor_id), ("name", actor_name), ("email", actor_email)):
                _no_nul(value, f"actor.{field}")

    targets: list[dict[str, Any]] | None = None
    targets_json: str | None = None
    if event.targets is not None:
        targets = []
        for i, t in enumerate(event.targets):
            if "\x00" in f"{t.type}{t.id}{t.name}":
                for field, value in (("type", t.type), ("id", t.id), ("name", t.name)):
                    _no_nul(value, f"targets[{i}].{field}")
            if not t.type or not t.id:
                raise ValidationError.field(f"targets[{i}]", "targets need a non-empty type and id")
            targets.append({"type": t.type, "id": t.id, "name": t.name})
        targets_json = _encode(targets).decode()

    metadata = event.metadata if event.metadata is not None else event.data
    metadata_json: str | None = None
    floats = False
    if metadata is not None:
        encoded = _encode(metadata)
        if len(encoded) > limits.max_metadata_bytes:
            raise EventTooLarge(
                f"metadata is {len(encoded)} bytes encoded; the limit is {limits.max_metadata_bytes}",
                {"field": "metadata", "size": len(encoded), "limit": limits.max_metadata_bytes},
            )
        # Nesting depth is at most the number of opening brackets (those inside
        # strings only add to the count), so the walk runs only when it could fail.
        if (encoded.count(b"{") + encoded.count(b"[") > limits.max_metadata_depth
                and _depth(metadata) > limits.max_metadata_depth):
            raise ValidationError.field(
                "metadata", f"metadata is nested deeper than {limits.max_metadata_depth} levels"
            )
        metadata_json = encoded.decode()
        floats = may_hold_floats(encoded)

    # Each pair: the camelCase spelling is rare, so the common path is one `is None` test.
    occurred_given = event.occurred_at if event.occurred_at_camel is None else either(
        event.occurred_at, event.occurred_at_camel, "occurred_at")
    ip_address = event.ip_address if event.ip_address_camel is None else either(
        event.ip_address, event.ip_address_camel, "ip_address")
    user_agent = event.user_agent if event.user_agent_camel is None else either(
        event.user_agent, event.user_agent_camel, "user_agent")
    idempotency_key = event.idempotency_key if event.idempotency_key_camel is None else either(
        event.idempotency_key, event.idempotency_key_camel, "idempotency_key")

    if occurred_given is not None:
        try:
            occurred_at = parse_rfc3339_ms(occurred_given)
        except ValueError as exc:
            raise ValidationError.field("occurred_at", f"occurred_at {exc}") from None
        if occurred_at > received_at + limits.max_future_seconds * 1000:
            raise ValidationError.field(
                "occurred_at", f"occurred_at is more than {limits.max_future_seconds} s in the future"
            )
    else:
        occurred_at = received_at

    _no_nul(ip_address, "ip_address")
    _no_nul(user_agent, "user_agent")

    if header_idempotency_key is not None:
        if idempotency_key is not None and idempotency_key != header_idempotency_key:
            raise ValidationError.field(
                "idempotency_key", "the Idempotency-Key header and idempotency_key in the body differ"
            )
        idempotency_key = header_idempotency_key
    request_digest = None
    if idempotency_key is not None:
        valid_idempotency_key(idempotency_key)
        # What "the same payload" means: the fields as the client gave them
        # (occurred_at as given, not the defaulted receive time).
        request_digest = _sha256(_fingerprint_encoder.encode((
            action, organization, actor_type, actor_id, actor_name, actor_email,
            targets, metadata, occurred_given and occurred_at,
            ip_address, user_agent,
        ))).digest()

    salt = _urandom(16)
    # Only metadata can hold a number; the other personal fields are strings or null.
    digest = personal_digest(salt, personal_document(
        actor_id, actor_name, actor_email, metadata, ip_address, user_agent
    ), floats=floats)
    return PreparedEvent(
        organization=organization, action=action, actor_type=actor_type, actor_id=actor_id,
        actor_name=actor_name, actor_email=actor_email, targets=targets, targets_json=targets_json,
        metadata_json=metadata_json, ip_address=ip_address, user_agent=user_agent,
        occurred_at=occurred_at, received_at=received_at, idempotency_key=idempotency_key,
        request_digest=request_digest, personal_salt=salt, personal_digest=digest,
        fts=fts_columns_from_values(action, actor_id, actor_name, actor_email, organization, targets, metadata),
        keys=event_keys(organization, action, actor_id, targets),
    )


def error_entry(index: int, exc: APIError) -> dict[str, Any]:
    details = exc.details or {}
    entry = {"index": index, "field": details.get("field"), "message": exc.message}
    if "fields" in details:  # both spellings of one field
        entry["fields"] = details["fields"]
    return entry
