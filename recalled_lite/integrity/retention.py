"""Proof of purge: retention checkpoints and tombstones (docs/integrity.md, "Purged events").

Every purge batch keeps a tombstone (seq, hash, signature) per purged event and writes one
retention checkpoint, chained to the previous one and signed with the server secret the way
events are (HMAC-SHA256 over prevHash + "\\n" + the canonical document). The document names
the seq range, the count, the last purged hash, a digest over the batch's tombstones, the
rules applied, the time and the reason: a tombstone is accounted for only when a checkpoint
that verifies covers it. A seq with neither an event nor such a tombstone is tampering.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Iterable, NamedTuple

from .canonical import canonical_without_floats
from .chain import hmac_sha256_hex


class Tombstone(NamedTuple):
    seq: int
    hash: str
    signature: str
    checkpoint_id: int


class RetentionCheckpoint(NamedTuple):
    id: int
    job_id: str
    first_seq: int
    last_seq: int
    count: int
    last_hash: str
    tombstones_digest: str
    rules: str        # JSON text, as stored and as signed
    reason: str
    created_at: int
    prev_hash: str | None
    hash: str
    signature: str


def tombstones_digest(tombstones: Iterable[tuple[int, str]]) -> str:
    """sha256 over "seq hash\\n" per tombstone, in seq order."""
    h = hashlib.sha256()
    for seq, event_hash in tombstones:
        h.update(f"{seq} {event_hash}\n".encode("ascii"))
    return "sha256:" + h.hexdigest()


def checkpoint_document(project_id: str, cp_id: int, job_id: str, first_seq: int, last_seq: int,
                        count: int, last_hash: str, digest: str, rules: str, reason: str,
                        created_at: int) -> dict[str, Any]:
    return {
        "count": count, "createdAt": created_at, "firstSeq": first_seq, "id": cp_id, "jobId": job_id,
        "lastHash": last_hash, "lastSeq": last_seq, "projectId": project_id, "reason": reason,
        "rules": rules, "tombstonesDigest": digest, "type": "recalled-lite retention checkpoint",
    }


def sign_checkpoint(prev_hash: str | None, document: dict[str, Any], secret: bytes) -> tuple[str, str]:
    message = (prev_hash or "").encode("ascii") + b"\n" + canonical_without_floats(document)
    return ("sha256:" + hashlib.sha256(message).hexdigest(),
            "hmac-sha256:" + hmac_sha256_hex(secret, message))


def check_checkpoint(project_id: str, cp: RetentionCheckpoint, tombstones: list[tuple[int, str]],
                     secret: bytes | None, prev_hash: str | None) -> str | None:
    """Why `cp` (with the tombstones stored under it, in seq order) does not verify, or None."""
    if cp.prev_hash != prev_hash:
        return f"retention checkpoint {cp.id}: prevHash is not the previous checkpoint's hash"
    if len(tombstones) != cp.count or not tombstones:
        return f"retention checkpoint {cp.id}: it covers {cp.count} events but {len(tombstones)} tombstones are stored"
    if tombstones[0][0] != cp.first_seq or tombstones[-1][0] != cp.last_seq or tombstones[-1][1] != cp.last_hash:
        return f"retention checkpoint {cp.id}: its tombstones do not span seq {cp.first_seq}..{cp.last_seq}"
    if tombstones_digest(tombstones) != cp.tombstones_digest:
        return f"retention checkpoint {cp.id}: its tombstones do not match its digest"
    document = checkpoint_document(project_id, cp.id, cp.job_id, cp.first_seq, cp.last_seq, cp.count,
                                   cp.last_hash, cp.tombstones_digest, cp.rules, cp.reason, cp.created_at)
    expected_hash, expected_signature = sign_checkpoint(cp.prev_hash, document, secret or b"")
    if not hmac.compare_digest(expected_hash, cp.hash):
        return f"retention checkpoint {cp.id}: hash mismatch"
    if secret is not None and not hmac.compare_digest(expected_signature, cp.signature):
        return f"retention checkpoint {cp.id}: signature mismatch"
    return None


class PurgedRanges:
    """Purged seqs as ranges [first, last], for verification reports (at most `limit` listed)."""

    def __init__(self, limit: int = 1000) -> None:
        self.count = 0
        self.ranges: list[list[int]] = []
        self.limit = limit
        self.truncated = False

    def add(self, seq: int) -> None:
        self.count += 1
        if self.ranges and self.ranges[-1][1] == seq - 1:
            self.ranges[-1][1] = seq
        elif len(self.ranges) < self.limit:
            self.ranges.append([seq, seq])
        else:
            self.truncated = True

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "ranges": self.ranges}
        if self.truncated:
            out["rangesTruncated"] = True
        return out
