"""What a database keeps of its secret, the same on every backend: the `secret_check` meta
value (an HMAC, never the secret), and the keys derived from the secret per purpose. A copy
between backends, or a CLI command against either, must agree byte for byte."""

from __future__ import annotations

import hmac
from typing import Mapping

from ..errors import ConfigError

# The running server with the wrong server.secret: its signatures would not verify.
SERVER_MISMATCH = ("server.secret does not match the secret this database was created with; "
                   "restore the original secret file (or RECALLED_SECRET) — signatures would not verify")
# An offline command (verify) given the wrong secret.
OFFLINE_MISMATCH = ("this secret is not the one the database was created with; "
                    "pass the right one with --secret-file PATH or RECALLED_SECRET "
                    "(or check the hashes only with --no-signatures)")


def secret_check(secret: bytes) -> str:
    return hmac.new(secret, b"recalled-lite secret check", "sha256").hexdigest()


def matches(meta: Mapping[str, str], secret: bytes) -> bool:
    return hmac.compare_digest(meta.get("secret_check", ""), secret_check(secret))


def require_match(meta: Mapping[str, str], secret: bytes, message: str) -> None:
    if not matches(meta, secret):
        raise ConfigError(message)


def derive_key(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, b"recalled-lite key derivation\n" + purpose.encode(), "sha256").digest()
