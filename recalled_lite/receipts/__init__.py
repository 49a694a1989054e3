"""Public receipts: a page anyone with the link can open to check one event's inclusion proof.

The page (page.py, templates/receipt.html, static/receipt.js) shows the event's action,
occurredAt, hash, its inclusion proof and the signed checkpoint, and verifies them in the
browser; it never shows a personal field. The link is `/r/<receipt id>.<token>`, the token a
MAC of the id under a key derived from the server secret: it cannot be guessed, and the
database holds nothing that opens the page.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

_PURPOSE = "receipt view"


def receipt_token(store: Any, receipt_id: str) -> str:
    mac = hmac.new(store.derive_key(_PURPOSE), receipt_id.encode("ascii"), "sha256").digest()
    return base64.urlsafe_b64encode(mac[:18]).decode("ascii")  # 144 bits, 24 characters


def view_path(store: Any, receipt_id: str) -> str:
    return f"/r/{receipt_id}.{receipt_token(store, receipt_id)}"


def parse_reference(store: Any, reference: str) -> str | None:
    """The receipt id of a `<id>.<token>` path element, or None if the token is wrong."""
    receipt_id, dot, token = reference.partition(".")
    if not dot or not receipt_id.startswith("rcpt_") or len(receipt_id) > 64 or not receipt_id.isascii():
        return None
    if not hmac.compare_digest(token.encode("ascii", "replace"), receipt_token(store, receipt_id).encode("ascii")):
        return None
    return receipt_id
