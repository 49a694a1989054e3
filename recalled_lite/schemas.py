"""msgspec Structs for the wire types of the core API, with module-level codecs.

Input structs carry the length limits of SPEC §4.1 as constraints, so msgspec
rejects bad values while decoding. Output structs are camelCase on the recalled
surface and snake_case on our own (`/v1/keys`).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Raw, Struct

Str255 = Annotated[str, Meta(max_length=255)]
Str128 = Annotated[str, Meta(max_length=128)]
Email = Annotated[str, Meta(max_length=320)]

MAX_TARGETS = 50


# --- input ------------------------------------------------------------------


class ActorIn(Struct, forbid_unknown_fields=False):
    type: Str255 | None = None
    id: Str255 | None = None
    name: Str255 | None = None
    email: Email | None = None


class TargetIn(Struct):
    type: Str255
    id: Str255
    name: Str255 | None = None


Action = Annotated[str, Meta(min_length=1, max_length=255)]
UserAgent = Annotated[str, Meta(max_length=1024)]


class EventIn(Struct):
    # `action` is required, but its alias `event_type` may stand in for it, so
    # both are optional here and the intake checks that one is present.
    action: Action | None = None
    event_type: Action | None = None
    organization: Str128 | None = None
    actor: ActorIn | None = None
    targets: Annotated[list[TargetIn], Meta(max_length=MAX_TARGETS)] | None = None
    metadata: dict[str, Any] | None = None
    data: dict[str, Any] | None = None  # alias of metadata (quickstart shape)
    occurred_at: str | None = None
    ip_address: Str255 | None = None
    user_agent: UserAgent | None = None
    idempotency_key: str | None = None
    # The same fields spelled as the responses spell them. Plain fields, so msgspec decodes
    # both spellings in its one pass; intake.either() reconciles each pair (CAMEL_ALIASES).
    event_type_camel: Action | None = msgspec.field(default=None, name="eventType")
    occurred_at_camel: str | None = msgspec.field(default=None, name="occurredAt")
    ip_address_camel: Str255 | None = msgspec.field(default=None, name="ipAddress")
    user_agent_camel: UserAgent | None = msgspec.field(default=None, name="userAgent")
    idempotency_key_camel: str | None = msgspec.field(default=None, name="idempotencyKey")


# snake_case field -> its camelCase spelling, for every multi-word intake field.
CAMEL_ALIASES = {
    "event_type": "eventType",
    "occurred_at": "occurredAt",
    "ip_address": "ipAddress",
    "user_agent": "userAgent",
    "idempotency_key": "idempotencyKey",
}


class BatchIn(Struct):
    events: list[Raw]


class KeyCreateIn(Struct):
    name: Annotated[str, Meta(min_length=1, max_length=128)]
    scopes: Annotated[list[str], Meta(min_length=1, max_length=16)]
    organization: Str128 | None = None


# --- output -----------------------------------------------------------------


class ActorOut(Struct, omit_defaults=False):
    type: str | None
    id: str | None
    name: str | None
    email: str | None


class EventOut(Struct, rename="camel", omit_defaults=False):
    """The Event object of SPEC §4.3. `targets`/`metadata` are the stored JSON."""

    id: str
    project_id: str
    organization: str | None
    action: str
    actor: ActorOut
    targets: Raw | None
    metadata: Raw | None
    ip_address: str | None
    user_agent: str | None
    occurred_at: str
    received_at: str
    idempotency_key: str | None
    seq: int
    hash: str
    prev_hash: str | None
    signature: str


class EventCreated(Struct):
    data: EventOut
    deduplicated: bool


class BatchCreated(Struct):
    data: list[EventOut]
    deduplicated: list[int]


class KeyOut(Struct, omit_defaults=False):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    organization: str | None
    created_at: str
    revoked_at: str | None
    last_used_at: str | None = None  # updated at most once a minute
    key: str | None = None  # plaintext, only in the create response


class Envelope(Struct):
    data: Any


json_encoder = msgspec.json.Encoder()
decode_event = msgspec.json.Decoder(EventIn).decode
decode_batch = msgspec.json.Decoder(BatchIn).decode
decode_key_create = msgspec.json.Decoder(KeyCreateIn).decode
