"""Verify webhook deliveries (Standard Webhooks, https://www.standardwebhooks.com/).

A delivery carries ``webhook-id``, ``webhook-timestamp`` (unix seconds) and
``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` entries over
``"{id}.{timestamp}.{raw body}"``, keyed with the base64-decoded part of the subscription's
``whsec_...`` secret (two entries during a secret rotation). ::

    from recalled import webhooks

    message = webhooks.verify(raw_body, request.headers, secret)   # or a list of secrets
    if message["type"] == "event.created": ...

:func:`verify` is a pure function (no I/O, no clock but ``now``), so it is equally at home
in a sync view and in an ``async def`` handler. Verify the raw body bytes as received:
parsing and re-serialising the JSON changes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, Iterable, Mapping

__all__ = ["WebhookVerificationError", "Webhook", "verify", "sign", "DEFAULT_TOLERANCE"]

#: Seconds a timestamp may be off (either way), as in the reference libraries.
DEFAULT_TOLERANCE = 300
SECRET_PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """The delivery is not authentic, or too old or too new to be trusted."""


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, (bytes, bytearray)):
        return bytes(secret)
    encoded = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the webhook secret is not 'whsec_' followed by standard base64") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive, and the ``svix-`` spelling too (Svix senders use it)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for candidate in (f"webhook-{name}", f"svix-{name}"):
        if candidate in lowered:
            return lowered[candidate]
    return None


def _signature(key: bytes, msg_id: str, timestamp: str, payload: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + payload, hashlib.sha256).digest()


def verify(payload: bytes | str, headers: Mapping[str, str], secret: str | bytes | Iterable[str | bytes],
           *, tolerance: int = DEFAULT_TOLERANCE, now: float | None = None) -> dict[str, Any]:
    """Check a delivery and return its parsed JSON body.

    ``secret`` is a ``whsec_...`` secret, or several (the old and the new during a rotation):
    a signature by any of them is accepted. Raises :class:`WebhookVerificationError` when a
    header is missing, the timestamp is more than ``tolerance`` seconds from ``now``, or no
    signature matches.
    """
    body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    msg_id = _header(headers, "id")
    timestamp = _header(headers, "timestamp")
    signatures = _header(headers, "signature")
    if not msg_id or not timestamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not unix seconds") from None
    current = time.time() if now is None else now
    if sent_at < current - tolerance:
        raise WebhookVerificationError("the message timestamp is too old")
    if sent_at > current + tolerance:
        raise WebhookVerificationError("the message timestamp is too far in the future")
    secrets = [secret] if isinstance(secret, (str, bytes, bytearray)) else list(secret)
    if not secrets:
        raise ValueError("at least one webhook secret is required")
    expected = [_signature(_key(s), msg_id, timestamp, body) for s in secrets]
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version != "v1":
            continue  # other schemes (v1a: asymmetric) are not ours
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(given, e) for e in expected):
            try:
                parsed = json.loads(body)
            except ValueError:
                raise WebhookVerificationError("the signed body is not JSON") from None
            if not isinstance(parsed, dict):
                raise WebhookVerificationError("the signed body is not a JSON object")
            return parsed
    raise WebhookVerificationError("no signature matches")


def sign(payload: bytes | str, secret: str | bytes, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers a sender would attach (for receivers' own tests)."""
    body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    ts = str(int(time.time()) if timestamp is None else int(timestamp))
    digest = base64.b64encode(_signature(_key(secret), msg_id, ts, body)).decode("ascii")
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{digest}"}


class Webhook:
    """``Webhook(secret).verify(payload, headers)``: the shape of the reference libraries."""

    def __init__(self, secret: str | bytes | Iterable[str | bytes], *, tolerance: int = DEFAULT_TOLERANCE) -> None:
        self.secrets = [secret] if isinstance(secret, (str, bytes, bytearray)) else list(secret)
        for s in self.secrets:
            _key(s)  # fail early on a malformed secret
        self.tolerance = tolerance

    def verify(self, payload: bytes | str, headers: Mapping[str, str], *, now: float | None = None) -> dict[str, Any]:
        return verify(payload, headers, self.secrets, tolerance=self.tolerance, now=now)
