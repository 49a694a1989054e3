"""The engine-neutral half of a chain append: idempotency, numbering, chaining.

Both backends' AppendEvents run one write group's intake requests through `plan_group`
(which requests replay a stored event, which conflict, which events are new), then
`chain_events` (seq, id, prev_hash, hash and signature for each new event, in order), then
write the rows their own way, then `settle` (repeats of keys first seen in this same group,
and conflicts with them, once those have their records). Only the SQL differs per backend.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from ..ids import UlidGenerator
from ..integrity.chain import core_document, link
from ..timefmt import format_ms
from .base import AppendResult, EventRecord, IdempotencyKeyReused, PreparedEvent

# (organization or "", idempotency key) -> (the stored record, its request digest) or None.
FindStored = Callable[[tuple[str, str]], "tuple[EventRecord, bytes | None] | None"]


class GroupPlan:
    __slots__ = ("outcomes", "fresh", "repeats", "late_conflicts")

    def __init__(self) -> None:
        # One slot per request: its results list, or the exception it fails with.
        self.outcomes: list[Any] = []
        # (results list, index, event) of every event to store, in request order.
        self.fresh: list[tuple[list, int, PreparedEvent]] = []
        # (results, index, origin results, origin index): a key first seen earlier in the group.
        self.repeats: list[tuple[list, int, list, int]] = []
        # (request slot, origin results, origin index, index): a conflict with such a key.
        self.late_conflicts: list[tuple[int, list, int, int]] = []


def keyed_scopes(requests: list[list[PreparedEvent]]) -> list[tuple[str, str]]:
    """Every (organization, key) the group's requests name: for a backend that looks them
    all up in one query before planning."""
    return list(dict.fromkeys((ev.organization or "", ev.idempotency_key)
                              for events in requests for ev in events if ev.idempotency_key is not None))


def plan_group(requests: list[list[PreparedEvent]], find_stored: FindStored) -> GroupPlan:
    """Business errors (an idempotency conflict) land in that request's slot before anything
    is written, so the other requests are unaffected."""
    plan = GroupPlan()
    # Keyed events of earlier requests in this group are not numbered yet:
    # (organization, key) -> (request digest, their results list, index).
    pending: dict[tuple[str, str], tuple[bytes | None, list, int]] = {}
    for events in requests:
        results: list[AppendResult | None] = [None] * len(events)
        op_fresh: list[tuple[list, int, PreparedEvent]] = []
        op_repeats: list[tuple[list, int, list, int]] = []
        added: list[tuple[str, str]] = []
        failure: Exception | tuple[list, int, int] | None = None
        for index, event in enumerate(events):
            if event.idempotency_key is None:
                op_fresh.append((results, index, event))
                continue
            scope = (event.organization or "", event.idempotency_key)
            earlier = pending.get(scope)
            if earlier is not None:
                if earlier[0] != event.request_digest:
                    failure = (earlier[1], earlier[2], index)
                    break
                op_repeats.append((results, index, earlier[1], earlier[2]))
                continue
            stored = find_stored(scope)
            if stored is not None:
                record, digest = stored
                # A NULL digest: the event was erased, and with it the fingerprint
                # that told payloads apart; a repeat is replayed, never stored again.
                if digest is not None and digest != event.request_digest:
                    failure = IdempotencyKeyReused(record.id, index)
                    break
                results[index] = AppendResult(record, True)
                continue
            # (The same key twice in one request is resolved by the API layer.)
            pending[scope] = (event.request_digest, results, index)
            added.append(scope)
            op_fresh.append((results, index, event))
        if failure is not None:
            for scope in added:
                del pending[scope]
            if isinstance(failure, Exception):
                plan.outcomes.append(failure)
            else:
                plan.late_conflicts.append((len(plan.outcomes), *failure))
                plan.outcomes.append(None)
            continue
        plan.fresh.extend(op_fresh)
        plan.repeats.extend(op_repeats)
        plan.outcomes.append(results)
    return plan


def chain_events(plan: GroupPlan, *, project_id: str, secret: bytes, ulids: UlidGenerator,
                 head_seq: int, head_hash: str | None) -> Iterator[tuple[PreparedEvent, EventRecord]]:
    """Number and chain the plan's new events after (head_seq, head_hash), filling their
    results; yields (event, record) in seq order for the backend to store."""
    seq, prev_hash = head_seq, head_hash
    for (results, index, ev), ulid in zip(plan.fresh, ulids.batch(len(plan.fresh))):
        seq += 1
        event_id = "evt_" + ulid
        core = core_document(
            event_id=event_id, seq=seq, project_id=project_id,
            organization=ev.organization, action=ev.action, actor_type=ev.actor_type,
            targets=ev.targets, occurred_at=format_ms(ev.occurred_at),
            received_at=format_ms(ev.received_at), idempotency_key=ev.idempotency_key,
            personal_digest=ev.personal_digest,
        )
        event_hash, signature = link(prev_hash, core, secret)
        record = EventRecord(
            seq, event_id, ev.organization, ev.action, ev.actor_type, ev.actor_id,
            ev.actor_name, ev.actor_email, ev.targets_json, ev.metadata_json,
            ev.ip_address, ev.user_agent, ev.occurred_at, ev.received_at,
            ev.idempotency_key, prev_hash, event_hash, signature,
        )
        results[index] = AppendResult(record, False)
        prev_hash = event_hash
        yield ev, record


def settle(plan: GroupPlan) -> list[Any]:
    """The outcomes, once every new event has its record."""
    for results, index, origin, origin_index in plan.repeats:
        results[index] = AppendResult(origin[origin_index].event, True)
    for slot, origin, origin_index, index in plan.late_conflicts:
        plan.outcomes[slot] = IdempotencyKeyReused(origin[origin_index].event.id, index)
    return plan.outcomes
