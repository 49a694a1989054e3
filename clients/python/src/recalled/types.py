"""What the API returns, as frozen dataclasses with snake_case attributes.

The recalled surface (events, exports, actors, embed) answers in camelCase; the webhook and
key surfaces in snake_case. Either way Python code reads ``event.occurred_at``,
``subscription.event_types``. Times are timezone-aware ``datetime`` objects (UTC). Every
object keeps the server's JSON as ``raw``, so nothing the server sends is out of reach
(``event.raw["hash"]`` is byte-for-byte what the chain covers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

__all__ = [
    "Actor", "Target", "Event", "ChainHead", "Export", "ErasureResult", "EmbedToken",
    "ChainVerification", "InvalidLink", "Subscription", "SubscriptionSecret", "Attempt",
    "Job", "JobProgress", "ApiKey", "parse_time",
]


def parse_time(value: Any) -> datetime | None:
    """The server's RFC 3339 UTC millisecond timestamps (``...T18:05:09.176Z``)."""
    if value is None:
        return None
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def _req_time(value: Any) -> datetime:
    parsed = parse_time(value)
    if parsed is None:
        raise ValueError("the server sent no timestamp where one is required")
    return parsed


@dataclass(frozen=True)
class Actor:
    type: str | None = None
    id: str | None = None
    name: str | None = None
    email: str | None = None

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any] | None) -> "Actor":
        raw = raw or {}
        return cls(type=raw.get("type"), id=raw.get("id"), name=raw.get("name"), email=raw.get("email"))

    def to_wire(self) -> dict[str, Any]:
        return {k: v for k, v in (("type", self.type), ("id", self.id), ("name", self.name),
                                  ("email", self.email)) if v is not None}


@dataclass(frozen=True)
class Target:
    type: str
    id: str
    name: str | None = None

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "Target":
        return cls(type=raw["type"], id=raw["id"], name=raw.get("name"))

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": self.type, "id": self.id}
        if self.name is not None:
            wire["name"] = self.name
        return wire


@dataclass(frozen=True)
class Event:
    """The stored Event object (``GET /v1/events/{id}``), camelCase fields made snake_case.

    ``personal_salt``, ``personal_digest`` and ``erased_at`` are filled only in exports.
    """

    id: str
    project_id: str
    organization: str | None
    action: str
    actor: Actor
    targets: list[Target] | None
    metadata: dict[str, Any] | None
    ip_address: str | None
    user_agent: str | None
    occurred_at: datetime
    received_at: datetime | None
    idempotency_key: str | None
    seq: int
    hash: str
    prev_hash: str | None
    signature: str | None
    personal_salt: str | None = None
    personal_digest: str | None = None
    erased_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "Event":
        targets = raw.get("targets")
        return cls(
            id=raw["id"], project_id=raw.get("projectId", ""), organization=raw.get("organization"),
            action=raw["action"], actor=Actor.from_wire(raw.get("actor")),
            targets=[Target.from_wire(t) for t in targets] if targets is not None else None,
            metadata=raw.get("metadata"), ip_address=raw.get("ipAddress"),
            user_agent=raw.get("userAgent"), occurred_at=_req_time(raw.get("occurredAt")),
            received_at=parse_time(raw.get("receivedAt")), idempotency_key=raw.get("idempotencyKey"),
            seq=int(raw.get("seq", 0)), hash=raw.get("hash", ""), prev_hash=raw.get("prevHash"),
            signature=raw.get("signature"), personal_salt=raw.get("personalSalt"),
            personal_digest=raw.get("personalDigest"), erased_at=parse_time(raw.get("erasedAt")),
            raw=dict(raw),
        )


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str | None

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "ChainHead":
        return cls(seq=int(raw.get("seq") or 0), hash=raw.get("hash"))


@dataclass(frozen=True)
class Export:
    """A whole export: its events in chain (``seq``) order and the head it ends with."""

    data: list[Event]
    head: ChainHead


@dataclass(frozen=True)
class ErasureResult:
    actor_id: str
    anonymized_events: int
    erased_at: datetime

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "ErasureResult":
        return cls(actor_id=raw["actor_id"], anonymized_events=int(raw["anonymized_events"]),
                   erased_at=_req_time(raw["erased_at"]))


@dataclass(frozen=True)
class EmbedToken:
    token: str
    expires_at: datetime
    scopes: list[str]
    organization: str | None

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "EmbedToken":
        return cls(token=raw["token"], expires_at=_req_time(raw["expiresAt"]),
                   scopes=list(raw.get("scopes") or []), organization=raw.get("organization"))


@dataclass(frozen=True)
class InvalidLink:
    seq: int
    id: str | None
    reason: str

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "InvalidLink":
        return cls(seq=int(raw["seq"]), id=raw.get("id"), reason=str(raw.get("reason", "")))


@dataclass(frozen=True)
class ChainVerification:
    valid: bool
    checked: int
    head: ChainHead | None
    first_invalid: InvalidLink | None

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "ChainVerification":
        head, bad = raw.get("head"), raw.get("firstInvalid")
        return cls(valid=bool(raw["valid"]), checked=int(raw.get("checked", 0)),
                   head=ChainHead.from_wire(head) if head else None,
                   first_invalid=InvalidLink.from_wire(bad) if bad else None)


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    description: str
    event_types: list[str]
    organization: str | None
    disabled: bool
    state: str
    state_reason: str | None
    created_at: datetime
    updated_at: datetime
    # Only in the answer to create(): afterwards use event_subscriptions.secret(id).
    secret: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "Subscription":
        return cls(id=raw["id"], url=raw["url"], description=raw.get("description", ""),
                   event_types=list(raw.get("event_types") or []), organization=raw.get("organization"),
                   disabled=bool(raw.get("disabled")), state=raw.get("state", ""),
                   state_reason=raw.get("state_reason"), created_at=_req_time(raw["created_at"]),
                   updated_at=_req_time(raw["updated_at"]), secret=raw.get("secret"), raw=dict(raw))


@dataclass(frozen=True)
class SubscriptionSecret:
    secret: str
    previous_secret_expires_at: datetime | None

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "SubscriptionSecret":
        return cls(secret=raw["secret"],
                   previous_secret_expires_at=parse_time(raw.get("previous_secret_expires_at")))


@dataclass(frozen=True)
class Attempt:
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
    duration_ms: int | None
    created_at: datetime
    next_attempt_at: datetime | None

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "Attempt":
        return cls(id=raw["id"], message_id=raw["message_id"], event_id=raw.get("event_id"),
                   event_subscription_id=raw["event_subscription_id"], attempt=int(raw["attempt"]),
                   status=raw["status"], trigger=raw["trigger"], url=raw["url"],
                   response_status_code=raw.get("response_status_code"),
                   response_body=raw.get("response_body"), error=raw.get("error"),
                   duration_ms=raw.get("duration_ms"), created_at=_req_time(raw["created_at"]),
                   next_attempt_at=parse_time(raw.get("next_attempt_at")))


@dataclass(frozen=True)
class JobProgress:
    total: int
    scanned: int
    queued: int
    skipped: int
    percent: float


@dataclass(frozen=True)
class Job:
    """A ``recover`` or ``replay_missing`` job; poll ``event_subscriptions.retrieve_job``."""

    id: str
    type: str
    event_subscription_id: str
    status: str
    begin: datetime
    end: datetime | None
    progress: JobProgress
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "Job":
        p = raw.get("progress") or {}
        return cls(id=raw["id"], type=raw["type"], event_subscription_id=raw["event_subscription_id"],
                   status=raw["status"], begin=_req_time(raw["begin"]), end=parse_time(raw.get("end")),
                   progress=JobProgress(total=int(p.get("total", 0)), scanned=int(p.get("scanned", 0)),
                                        queued=int(p.get("queued", 0)), skipped=int(p.get("skipped", 0)),
                                        percent=float(p.get("percent", 0.0))),
                   error=raw.get("error"), created_at=_req_time(raw["created_at"]),
                   updated_at=_req_time(raw["updated_at"]), finished_at=parse_time(raw.get("finished_at")))


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    scopes: list[str]
    organization: str | None
    created_at: datetime
    revoked_at: datetime | None
    # The plaintext key: only in the answer to keys.create(), never again.
    key: str | None = None

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> "ApiKey":
        return cls(id=raw["id"], name=raw["name"], prefix=raw["prefix"], scopes=list(raw.get("scopes") or []),
                   organization=raw.get("organization"), created_at=_req_time(raw["created_at"]),
                   revoked_at=parse_time(raw.get("revoked_at")), key=raw.get("key"))
