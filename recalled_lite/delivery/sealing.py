"""Signing secrets at rest: sealed with an AEAD under a key derived from the server secret.

The server secret never lives in the database, so a copy of the database alone neither
reveals the signing secrets nor lets anyone plant one of their choosing: every stored
secret carries an authentication tag bound to its subscription and column, and anything
that does not verify is refused (``SealError``) instead of being used to sign.

    sealed:v2:<base64(nonce[12] || AES-256-GCM(key, secret bytes, aad))>
    key = HKDF-SHA256(server secret, info="recalled-lite webhook secret seal v2")
    aad = "recalled-lite webhook secret" NUL subscription id NUL column name

``sealed:v1:`` (an HMAC-SHA256 keystream XOR-ed onto the key, with no tag) and cleartext
``whsec_`` rows were written by earlier versions; ``upgrade`` turns them into v2 once, at
start, and from then on they are refused like any other tampered row.

Pure code: no storage, no I/O, so every backend seals the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .signing import SECRET_PREFIX, secret_key_bytes

__all__ = ["SealError", "Sealer", "V1_PREFIX", "V2_PREFIX"]

V1_PREFIX = "sealed:v1:"
V2_PREFIX = "sealed:v2:"
_NONCE_BYTES = 12
_AAD_LABEL = b"recalled-lite webhook secret\x00"
_V1_LABEL = b"recalled-lite webhook secret\x00"


class SealError(Exception):
    """A stored secret that cannot be used; the message says why and what to do."""


class Sealer:
    """Seals and unseals the signing secrets of one server (one server secret)."""

    __slots__ = ("_server_secret", "_aead")

    def __init__(self, server_secret: bytes) -> None:
        self._server_secret = server_secret
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"recalled-lite webhook secret seal v2").derive(server_secret)
        self._aead = AESGCM(key)

    def seal(self, sub_id: str, column: str, secret: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret_key_bytes(secret), _aad(sub_id, column))
        return V2_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, sub_id: str, column: str, stored: str) -> str:
        """The ``whsec_`` secret, or ``SealError``. Only ``sealed:v2:`` is accepted."""
        if not isinstance(stored, str):
            raise SealError(f"the stored {column} is not text; rotate the secret")
        if not stored.startswith(V2_PREFIX):
            if stored.startswith(V1_PREFIX):
                raise SealError(f"the stored {column} is in the old sealed:v1 form, which has no "
                                "integrity check and is no longer accepted; rotate the secret")
            if stored.startswith("sealed:"):
                raise SealError(f"the stored {column} is sealed in an unknown format "
                                f"({stored.split(':', 2)[1][:16]!r}); rotate the secret")
            raise SealError(f"the stored {column} is not sealed (written in clear?); cleartext "
                            "secrets are refused; rotate the secret")
        try:
            raw = base64.b64decode(stored[len(V2_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise SealError(f"the stored {column} is damaged (not base64); rotate the secret") from None
        if len(raw) <= _NONCE_BYTES + 16:
            raise SealError(f"the stored {column} is damaged (too short); rotate the secret")
        try:
            key = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(sub_id, column))
        except InvalidTag:
            raise SealError(
                f"the stored {column} failed its integrity check: it was altered, copied from "
                "another subscription, or sealed with another server secret; restore the "
                "original server secret, or rotate the secret") from None
        return SECRET_PREFIX + base64.b64encode(key).decode("ascii")

    def upgrade(self, sub_id: str, column: str, stored: str) -> str | None:
        """The v2 form of a v1 or cleartext value (None if it already is v2). Raises
        ``SealError`` for a value that is neither (damaged, unknown format)."""
        if stored.startswith(V2_PREFIX):
            return None
        if stored.startswith(V1_PREFIX):
            secret = self._unseal_v1(sub_id, stored)
        elif stored.startswith("sealed:"):
            raise SealError(f"the stored {column} is sealed in an unknown format; rotate the secret")
        else:
            try:
                secret_key_bytes(stored)  # cleartext, as an early version or a hand edit wrote it
            except ValueError:
                raise SealError(f"the stored {column} is neither sealed nor a valid secret; "
                                "rotate the secret") from None
            secret = stored
        return self.seal(sub_id, column, secret)

    def _unseal_v1(self, sub_id: str, stored: str) -> str:
        try:
            raw = base64.b64decode(stored[len(V1_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise SealError("the stored secret is a damaged sealed:v1 value (not base64); "
                            "rotate the secret") from None
        nonce, sealed = raw[:16], raw[16:]
        if len(nonce) < 16 or not sealed:
            raise SealError("the stored secret is a damaged sealed:v1 value (too short); rotate the secret")
        stream = bytearray()
        counter = 0
        while len(stream) < len(sealed):
            stream += hmac.new(self._server_secret, _V1_LABEL + sub_id.encode() + b"\x00" + nonce
                               + counter.to_bytes(4, "big"), hashlib.sha256).digest()
            counter += 1
        key = bytes(a ^ b for a, b in zip(sealed, stream))
        return SECRET_PREFIX + base64.b64encode(key).decode("ascii")


def _aad(sub_id: str, column: str) -> bytes:
    return _AAD_LABEL + sub_id.encode() + b"\x00" + column.encode()
