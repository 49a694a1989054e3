"""The wire form of a stored event (the Event object of §4.3), shared by the HTTP API
and the webhook payloads, so that neither delivery/ nor storage/ depends on api/."""

from __future__ import annotations

import msgspec

from .schemas import ActorOut, EventOut
from .storage.base import EventRecord
from .timefmt import format_ms

_Raw = msgspec.Raw


def event_to_wire(record: EventRecord, project_id: str) -> EventOut:
    return EventOut(
        id=record.id,
        project_id=project_id,
        organization=record.organization,
        action=record.action,
        actor=ActorOut(record.actor_type, record.actor_id, record.actor_name, record.actor_email),
        targets=_Raw(record.targets) if record.targets is not None else None,
        metadata=_Raw(record.metadata) if record.metadata is not None else None,
        ip_address=record.ip_address,
        user_agent=record.user_agent,
        occurred_at=format_ms(record.occurred_at),
        received_at=format_ms(record.received_at),
        idempotency_key=record.idempotency_key,
        seq=record.seq,
        hash=record.hash,
        prev_hash=record.prev_hash,
        signature=record.signature,
    )
