"""API keys: format, hashing, lookup, scopes and the organization wall (SPEC §3)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Iterable

from .errors import Forbidden, Unauthorized, ValidationError
from .ids import new_id, random_alnum
from .storage.base import ApiKeyRecord
from .timefmt import now_ms

SCOPES = frozenset({
    "events:write", "events:read", "exports:read", "actors:delete",
    "embed:write", "webhooks:manage", "keys:manage", "retention:manage",
})
ADMIN = "admin"

KEY_PATTERN = re.compile(r"^rec_(live|test)_([A-Za-z0-9]{8})_([A-Za-z0-9]{32,128})$")


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("ascii")).hexdigest()


def generate_key(mode: str = "live") -> tuple[str, str]:
    """A new plaintext key and its prefix."""
    prefix = random_alnum(8)
    return f"rec_{mode}_{prefix}_{random_alnum(40)}", prefix


def normalize_scopes(scopes: Iterable[str]) -> frozenset[str]:
    result = set()
    for scope in scopes:
        scope = scope.strip()
        if scope == ADMIN:
            result.add(ADMIN)
        elif scope in SCOPES:
            result.add(scope)
        else:
            raise ValidationError(
                f"unknown scope {scope!r}; valid scopes: admin, {', '.join(sorted(SCOPES))}",
                {"field": "scopes"},
            )
    if not result:
        raise ValidationError("at least one scope is required", {"field": "scopes"})
    return frozenset(result)


def new_key_record(name: str, scopes: frozenset[str], organization: str | None,
                   plaintext: str | None = None) -> tuple[str, ApiKeyRecord]:
    if plaintext is None:
        plaintext, prefix = generate_key()
    else:
        match = KEY_PATTERN.match(plaintext)
        if match is None:
            raise ValueError("a key must look like rec_live_<8 letters/digits>_<32+ letters/digits>")
        prefix = match.group(2)
    record = ApiKeyRecord(
        id=new_id("key"), name=name, prefix=prefix, secret_hash=hash_key(plaintext),
        scopes=scopes, organization=organization, created_at=now_ms(), revoked_at=None,
    )
    return plaintext, record


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <api key>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed Authorization header; expected 'Bearer <api key>'")
    return token.strip()


def parse_key(authorization: str | None) -> tuple[str, str]:
    """(key, prefix) from the Authorization header, or 401 UNAUTHORIZED."""
    token = bearer_token(authorization)
    return token, key_prefix(token)


def key_prefix(token: str) -> str:
    match = KEY_PATTERN.match(token)
    if match is None:
        raise Unauthorized("malformed API key; expected rec_live_<prefix>_<secret>")
    return match.group(2)


def check_key(token: str, record: ApiKeyRecord | None) -> ApiKeyRecord:
    # Compare against a dummy hash when the prefix is unknown, so the response
    # time does not tell which prefixes exist.
    expected = record.secret_hash if record is not None else _DUMMY_HASH
    if not hmac.compare_digest(hash_key(token), expected) or record is None:
        raise Unauthorized("API key not recognised", code="INVALID_API_KEY")
    if record.revoked_at is not None:
        raise Unauthorized("API key has been revoked", code="REVOKED_API_KEY")
    return record


_DUMMY_HASH = hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def require_scope(key: ApiKeyRecord, scope: str) -> None:
    if ADMIN not in key.scopes and scope not in key.scopes:
        raise Forbidden(f"this API key lacks the {scope!r} scope", {"scope": scope})


def write_organization(key: ApiKeyRecord, requested: str | None) -> str | None:
    """The organization an event is written under, enforcing the key's binding."""
    if key.organization is None:
        return requested
    if requested is None or requested == key.organization:
        return key.organization
    raise Forbidden(
        "this API key is bound to another organization",
        {"field": "organization"},
    )


def read_organization(key: ApiKeyRecord, requested: str | None) -> tuple[str | None, bool]:
    """(organization filter, visible). A bound key asking for another org sees nothing."""
    if key.organization is None:
        return requested, True
    if requested is not None and requested != key.organization:
        return key.organization, False
    return key.organization, True
