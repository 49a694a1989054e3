"""Wire types of the webhook API (spec §5; Lithic's dialect: snake_case both ways)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

Str128 = Annotated[str, Meta(max_length=128)]
Description = Annotated[str, Meta(max_length=1000)]
Url = Annotated[str, Meta(min_length=1, max_length=2048)]
Patterns = Annotated[list[str], Meta(max_length=100)]
SecretIn = Annotated[str, Meta(min_length=1, max_length=200)]


# --- input ------------------------------------------------------------------------------


class SubscriptionCreateIn(Struct):
    url: Url
    description: Description = ""
    event_types: Patterns | None = None
    organization: Str128 | None = None
    disabled: bool = False
    secret: SecretIn | None = None  # optional: bring your own whsec_ secret (24-64 bytes)


class SubscriptionPatchIn(Struct):
    url: Url | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    event_types: Patterns | None | UnsetType = UNSET
    organization: Str128 | None | UnsetType = UNSET
    disabled: bool | UnsetType = UNSET
    state: str | UnsetType = UNSET


class RotateIn(Struct):
    secret: SecretIn | None = None


class RangeIn(Struct):
    begin: Annotated[str, Meta(max_length=64)]
    end: Annotated[str, Meta(max_length=64)] | None = None


class ExampleIn(Struct):
    event_type: Annotated[str, Meta(min_length=1, max_length=255)] | None = None


decode_create = msgspec.json.Decoder(SubscriptionCreateIn).decode
decode_patch = msgspec.json.Decoder(SubscriptionPatchIn).decode
decode_rotate = msgspec.json.Decoder(RotateIn).decode
decode_range = msgspec.json.Decoder(RangeIn).decode
decode_example = msgspec.json.Decoder(ExampleIn).decode


# --- output -----------------------------------------------------------------------------


class SubscriptionOut(Struct, omit_defaults=False):
    id: str
    url: str
    description: str
    event_types: list[str]
    organization: str | None
    disabled: bool
    state: str
    state_reason: str | None
    created_at: str
    updated_at: str
    secret: str | UnsetType = UNSET  # only in the create response
    # Since when it has been missing events (while invalid, and during the test that may heal it).
    invalid_since: str | None = None
    next_retest_at: str | None = None  # the next automatic re-test of an invalid subscription
    # Why its stored signing secret cannot be used (it signs nothing until rotated).
    secret_error: str | None = None


class AttemptOut(Struct, omit_defaults=False):
    id: str
    message_id: str
    event_id: str | None
    event_subscription_id: str
    attempt: int
    status: str
    trigger: str
    url: str
    response_status_code: int | None
    response_body: str | None
    error: str | None
    # A 2xx (or other status) whose response was sloppy: what was wrong, in plain words.
    warning: str | None
    duration_ms: int | None
    created_at: str
    next_attempt_at: str | None


class SecretOut(Struct, omit_defaults=False):
    secret: str | None  # None when the stored secret is unusable (see secret_error)
    previous_secret_expires_at: str | None
    secret_error: str | None = None


class JobProgress(Struct, omit_defaults=False):
    total: int
    scanned: int
    queued: int
    skipped: int
    percent: float


class JobOut(Struct, omit_defaults=False):
    id: str
    type: str
    event_subscription_id: str
    status: str
    begin: str
    end: str | None
    progress: JobProgress
    error: str | None
    created_at: str
    updated_at: str
    finished_at: str | None


class Page(Struct, omit_defaults=False):
    data: list
    has_more: bool
    next_cursor: str | None


# --- cursors ----------------------------------------------------------------------------
# Opaque to clients: URL-safe base64 of "<kind>:<position>". Every filter and the
# organization wall are applied again on each page.


def encode_cursor(kind: str, position: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, token: str) -> str:
    """The position, or ValueError for anything this module did not produce for ``kind``."""
    if not token or len(token) > 200:
        raise ValueError("bad cursor")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("bad cursor") from None
    prefix = kind + ":"
    if not text.startswith(prefix):
        raise ValueError("bad cursor")
    return text[len(prefix):]
