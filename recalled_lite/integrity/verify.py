"""Walk stored events in seq order and report the first one that does not verify.

Shared by `GET /v1/events/verify` and `recalled-lite verify`; the input is the
storage-neutral ExportRecord (an event plus its salt, digest and erasure mark).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import msgspec

from ..storage.base import ExportRecord
from ..timefmt import format_ms
from .chain import chain_hash, core_document, link, personal_digest, personal_document
from .retention import PurgedRanges

_decode = msgspec.json.decode


@dataclass(slots=True)
class Failure:
    seq: int
    id: str | None  # None for a purged seq (its tombstone has no event id)
    reason: str


class ChainVerifier:
    """Feed rows in ascending seq; the first failure sticks."""

    def __init__(self, project_id: str, secret: bytes | None, prev_hash: str | None = None, prev_seq: int = 0):
        # secret=None checks the hashes only (`verify --no-signatures`): tampering that
        # recomputes the hashes goes unseen, so the result says signatures were not checked.
        self.project_id = project_id
        self.secret = secret
        self.prev_hash = prev_hash
        self.prev_seq = prev_seq
        self.checked = 0
        self.failure: Failure | None = None
        # Seqs a retention purge removed: accounted for by their tombstone (seq, hash), which
        # the caller has checked against a verified retention checkpoint.
        self.purged = PurgedRanges()

    def feed_tombstone(self, seq: int, event_hash: str) -> bool:
        if self.failure is not None:
            return False
        if seq != self.prev_seq + 1:
            self.failure = Failure(seq, None, f"seq gap: expected {self.prev_seq + 1}, found {seq}")
            return False
        self.purged.add(seq)
        self.prev_hash, self.prev_seq = event_hash, seq
        return True

    def fail(self, seq: int, event_id: str | None, reason: str) -> None:
        if self.failure is None:
            self.failure = Failure(seq, event_id, reason)

    def feed(self, row: ExportRecord) -> bool:
        if self.failure is not None:
            return False
        reason = self._check(row)
        if reason is not None:
            self.failure = Failure(row.seq, row.id, reason)
            return False
        self.checked += 1
        self.prev_hash, self.prev_seq = row.hash, row.seq
        return True

    def _check(self, row: ExportRecord) -> str | None:
        if row.seq != self.prev_seq + 1:
            return f"seq gap: expected {self.prev_seq + 1}, found {row.seq}"
        if row.prev_hash != self.prev_hash:
            return "prevHash does not match the previous event's hash"
        if row.personal_salt is not None:
            document = personal_document(
                row.actor_id, row.actor_name, row.actor_email,
                _decode(row.metadata) if row.metadata is not None else None,
                row.ip_address, row.user_agent,
            )
            if personal_digest(row.personal_salt, document) != row.personal_digest:
                return "personal fields do not match personalDigest"
        elif row.erased_at is None:
            return "personal salt missing on an event that was not erased"
        core = core_document(
            event_id=row.id, seq=row.seq, project_id=self.project_id,
            organization=row.organization, action=row.action, actor_type=row.actor_type,
            targets=_decode(row.targets) if row.targets is not None else None,
            occurred_at=format_ms(row.occurred_at), received_at=format_ms(row.received_at),
            idempotency_key=row.idempotency_key, personal_digest=row.personal_digest,
        )
        if self.secret is None:
            return None if hmac.compare_digest(chain_hash(self.prev_hash, core), row.hash) else "hash mismatch"
        expected_hash, expected_signature = link(self.prev_hash, core, self.secret)
        if not hmac.compare_digest(expected_hash, row.hash):
            return "hash mismatch"
        if self.secret is not None and not hmac.compare_digest(expected_signature, row.signature):
            return "signature mismatch"
        return None

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "valid": self.failure is None,
            "checked": self.checked,
            "head": {"seq": self.prev_seq, "hash": self.prev_hash} if self.prev_seq else None,
            "firstInvalid": (
                {"seq": self.failure.seq, "id": self.failure.id, "reason": self.failure.reason}
                if self.failure else None
            ),
        }
        if self.purged.count:  # only then: a log never purged reports what it always did
            result["purged"] = self.purged.report()
        return result
