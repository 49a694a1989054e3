"""Embed tokens (§4.8): short-lived, read-only, browser-safe credentials for the feed widget.

A token is stateless and signed:

    emb_<base64url(payload JSON)>.<base64url(HMAC-SHA256(key, "emb_" + payload part))>

`key` is derived from the server secret (`Store.derive_key("embed-token")`), so a
token cannot be forged without it, and rotating the secret is impossible anyway
(the chain is signed with it). The payload is readable, not secret:

    {"v": 1, "kid": key id, "kp": key prefix, "org": organization | null,
     "scp": ["events:read"], "iat": ms, "exp": ms}

Besides the signature and `exp`, the API checks on every use that the key which
minted the token still exists and is not revoked: revoking a key revokes its tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

PREFIX = "emb_"
PURPOSE = "embed-token"
SCOPES = ("events:read",)
DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 86400
MAX_TOKEN_CHARS = 1024


class TokenError(ValueError):
    """Malformed, forged or expired; the message says which (safe to show)."""


class EmbedClaims(Struct, forbid_unknown_fields=True):
    v: int
    kid: Annotated[str, Meta(max_length=64)]
    kp: Annotated[str, Meta(max_length=16)]
    org: Annotated[str, Meta(max_length=128)] | None
    scp: Annotated[list[str], Meta(max_length=8)]
    iat: int
    exp: int


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(EmbedClaims).decode


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:  # only the canonical spelling
        raise ValueError("non-canonical base64")
    return raw


def _sign(key: bytes, signed_part: str) -> str:
    return _b64(hmac.new(key, signed_part.encode("ascii"), hashlib.sha256).digest())


def mint(key: bytes, claims: EmbedClaims) -> str:
    signed_part = PREFIX + _b64(_encode(claims))
    return signed_part + "." + _sign(key, signed_part)


def verify(key: bytes, token: str | None, now_ms: int) -> EmbedClaims:
    """The claims of a genuine, unexpired token; TokenError otherwise."""
    if not token:
        raise TokenError("an embed token is required: pass ?token=<token from POST /v1/embed/token>")
    if len(token) > MAX_TOKEN_CHARS or not token.startswith(PREFIX) or token.count(".") != 1:
        raise TokenError("malformed embed token")
    signed_part, _, signature = token.rpartition(".")
    if not hmac.compare_digest(_sign(key, signed_part).encode(), signature.encode("ascii", "replace")):
        raise TokenError("invalid embed token")
    try:
        claims = _decode(_unb64(signed_part[len(PREFIX):]))
    except (ValueError, binascii.Error, msgspec.DecodeError, msgspec.ValidationError):
        raise TokenError("malformed embed token") from None
    if claims.v != 1:
        raise TokenError("unsupported embed token version")
    if now_ms >= claims.exp:
        raise TokenError("embed token expired; mint a new one with POST /v1/embed/token")
    return claims
