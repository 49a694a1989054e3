"""Standard Webhooks signing (spec §5.2).

Every delivery carries three headers defined by the Standard Webhooks spec
(https://www.standardwebhooks.com/):

* ``webhook-id``        - the message id (the body's ``id``), stable across retries so that
  receivers can de-duplicate;
* ``webhook-timestamp`` - integer unix seconds of *this* attempt (receivers reject stale ones);
* ``webhook-signature`` - ``v1,<base64(HMAC-SHA256(key, f"{id}.{timestamp}." + body))>``; during a
  secret rotation overlap there is one ``v1,...`` entry per valid secret, separated by single
  spaces, so a receiver holding either the old or the new secret verifies the message.

Secrets are ``whsec_`` + standard base64 of 24 random bytes. The HMAC key is the *decoded* bytes,
not the text of the secret.

This module is pure (no I/O) and is on the hot path of the sender, so it avoids re-decoding
secrets on every message (see :func:`_key_for`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Sequence

__all__ = [
    "SECRET_PREFIX",
    "SECRET_BYTES",
    "generate_secret",
    "secret_key_bytes",
    "sign",
    "headers",
]

SECRET_PREFIX = "whsec_"
#: Size of the random key behind a generated secret (spec §5.2: 24 random bytes).
SECRET_BYTES = 24

_sha256 = hashlib.sha256
_b64encode = base64.b64encode


def generate_secret() -> str:
    """Return a new signing secret: ``"whsec_"`` + standard base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key_bytes(secret: str) -> bytes:
    """Decode a ``whsec_...`` secret into the raw HMAC key bytes.

    The ``whsec_`` prefix is optional (the reference libraries accept both). Raises
    :class:`ValueError` with a message saying what is wrong when the secret is not a string, is
    not valid standard base64, or decodes to an empty key. The secret itself is never echoed in
    the message, since error messages end up in logs.
    """
    if not isinstance(secret, str):
        raise ValueError(f"webhook secret must be a str, not {type(secret).__name__}")
    encoded = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    if not encoded:
        raise ValueError("webhook secret is empty (expected 'whsec_' followed by base64)")
    try:
        # validate=True: refuse characters outside the standard alphabet instead of silently
        # skipping them, which would turn a typo into a different (wrong) key.
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "webhook secret is malformed: expected 'whsec_' followed by standard base64"
        ) from None
    if not key:
        raise ValueError("webhook secret decodes to an empty key")
    return key


# Secrets are few (one or two per subscription) and re-used for every message, so decoding each
# one once and keeping the bytes is the main saving available: HMAC itself is already C code.
# The cache holds the same secrets the process already holds in memory, so it adds no exposure.
@functools.lru_cache(maxsize=4096)
def _key_for(secret: str) -> bytes:
    return secret_key_bytes(secret)


def _key(secret: str | bytes) -> bytes:
    # Raw key bytes are accepted too, for callers that keep decoded keys around.
    if isinstance(secret, (bytes, bytearray, memoryview)):
        key = bytes(secret)
        if not key:
            raise ValueError("webhook secret key is empty")
        return key
    return _key_for(secret)


def sign(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str | bytes]) -> str:
    """Return the ``webhook-signature`` header value for one message.

    Signed content is ``f"{msg_id}.{timestamp}.".encode() + body`` - exactly the bytes sent, so
    the body must not be re-serialised after signing. One ``v1,<base64 signature>`` per secret,
    in the order given, joined by single spaces (several secrets = rotation overlap).

    ``secrets`` items are ``whsec_...`` strings or already-decoded key bytes. Raises
    :class:`ValueError` if there is no secret, a secret is malformed, ``msg_id`` is empty or
    ``timestamp`` is not a whole number of seconds.
    """
    if isinstance(secrets, (str, bytes)):
        # A bare string is a Sequence too; signing with each *character* would be a silent bug.
        raise ValueError("secrets must be a sequence of secrets, not a single secret")
    if not secrets:
        raise ValueError("at least one webhook secret is required to sign a message")
    if not msg_id:
        raise ValueError("msg_id must not be empty")
    ts = int(timestamp)
    if ts != timestamp:
        raise ValueError("timestamp must be an integer number of unix seconds")
    prefix = f"{msg_id}.{ts}.".encode()
    # Build the HMAC state over the prefix once per secret; body is fed separately so that a
    # large body is not copied just to concatenate it.
    parts = []
    for secret in secrets:
        mac = hmac.new(_key(secret), prefix, _sha256)
        mac.update(body)
        parts.append("v1," + _b64encode(mac.digest()).decode("ascii"))
    return " ".join(parts)


def headers(
    msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str | bytes]
) -> dict[str, str]:
    """Return the full set of delivery headers for one attempt.

    ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (see :func:`sign`) and
    ``content-type: application/json`` (delivery bodies are always JSON, spec §5.2).
    """
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": sign(msg_id, timestamp, body, secrets),
        "content-type": "application/json",
    }
