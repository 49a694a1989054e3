"""POST /v1/events, /batch; GET /v1/events (list), /search, /verify, /{id} (SPEC §4.1-4.6)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.routing import Route

from ..errors import APIError, Forbidden, IdempotencyConflict, NotFound, ValidationError
from ..intake import error_entry, prepare_event
from ..limits import append_within_quota
from ..schemas import BatchCreated, BatchIn, EventCreated, EventIn, decode_batch, decode_event
from ..storage.base import ApiKeyRecord, IdempotencyKeyReused
from ..timefmt import now_ms
from ..wire import event_to_wire
from .common import (
    authorize, context, decode_json, describe_validation_error, int_param,
    json_response, read_body,
)
from .reading import cursor_param, list_page, search_page

_decode_event_raw = msgspec.json.Decoder(EventIn).decode


class _TypedBatch(msgspec.Struct):
    events: list[EventIn]


_decode_typed_batch = msgspec.json.Decoder(_TypedBatch).decode


def _conflict(exc: IdempotencyKeyReused, batch: bool) -> IdempotencyConflict:
    details = {"event_id": exc.event_id}
    if batch:
        details["index"] = exc.index
    return IdempotencyConflict(
        "this idempotency key was already used with a different payload", details
    )


async def create_event(request: Request):
    ctx = context(request)
    key = await authorize(request, "events:write")
    received_at = now_ms()
    body = await read_body(request, ctx.config.server.max_request_bytes)
    event = decode_json(body, decode_event, ctx.config.server.max_json_depth)
    prepared = prepare_event(
        event, key, ctx.config.events, received_at, request.headers.get("idempotency-key")
    )
    quotas = ctx.limits.quotas
    try:
        if quotas is None:
            (result,) = await ctx.store.append_events([prepared])
        else:
            (result,) = await append_within_quota(quotas, ctx.store, [prepared], received_at)
    except IdempotencyKeyReused as exc:
        raise _conflict(exc, batch=False) from None
    headers = {"Idempotent-Replayed": "true"} if result.deduplicated else None
    return json_response(
        EventCreated(event_to_wire(result.event, ctx.store.project_id), result.deduplicated),
        headers=headers,
    )


def _decode_batch_items(body: bytes, max_depth: int) -> tuple[list[EventIn | None], list[dict]]:
    """The batch's events (None where an item is undecodable) and per-index errors."""
    try:
        # Fast path: a valid batch decodes in one pass.
        return list(decode_json(body, _decode_typed_batch, max_depth).events), []
    except ValidationError:
        pass
    # Slow path, only for bad input: decode item by item to report every bad index.
    batch: BatchIn = decode_json(body, decode_batch, max_depth)
    errors: list[dict] = []
    items: list[EventIn | None] = []
    for index, raw in enumerate(batch.events):
        try:
            items.append(_decode_event_raw(raw))
        except msgspec.ValidationError as exc:
            field, message = describe_validation_error(exc)
            errors.append({"index": index, "field": field, "message": message})
            items.append(None)
        except (msgspec.DecodeError, ValueError) as exc:
            errors.append({"index": index, "field": "body", "message": str(exc)})
            items.append(None)
    return items, errors


async def create_batch(request: Request):
    ctx = context(request)
    key = await authorize(request, "events:write")
    received_at = now_ms()
    body = await read_body(request, ctx.config.server.max_request_bytes)
    items, errors = _decode_batch_items(body, ctx.config.server.max_json_depth)
    limit = ctx.config.events.max_batch
    if not items:
        raise ValidationError.field("events", "events must contain at least one event")
    if len(items) > limit:
        raise ValidationError.field("events", f"a batch holds at most {limit} events; got {len(items)}")

    prepared = []
    for index, item in enumerate(items):
        if item is None:
            continue
        try:
            prepared.append(prepare_event(item, key, ctx.config.events, received_at))
        except Forbidden:
            raise  # the tenant wall is not a per-item validation problem
        except APIError as exc:
            errors.append(error_entry(index, exc))
    errors.sort(key=lambda e: e["index"])
    # The same idempotency key twice in one batch: a repeat is deduplicated to
    # the first occurrence; a different payload under it is an error.
    first_by_scope: dict[tuple[str, str], int] = {}
    repeats: dict[int, int] = {}
    if not errors:
        for index, ev in enumerate(prepared):
            if ev.idempotency_key is None:
                continue
            scope = (ev.organization or "", ev.idempotency_key)
            first = first_by_scope.setdefault(scope, index)
            if first != index:
                if prepared[first].request_digest != ev.request_digest:
                    errors.append({"index": index, "field": "idempotency_key",
                                   "message": f"idempotency_key repeats item {first} with a different payload"})
                else:
                    repeats[index] = first
    if errors:
        raise ValidationError(f"{len(errors)} of {len(items)} events are invalid", {"errors": errors})

    unique = [ev for i, ev in enumerate(prepared) if i not in repeats]
    quotas = ctx.limits.quotas
    try:
        if quotas is None:
            stored = await ctx.store.append_events(unique)
        else:
            stored = await append_within_quota(quotas, ctx.store, unique, received_at)
    except IdempotencyKeyReused as exc:
        # Map the index back from the de-duplicated list to the request's.
        original = [i for i in range(len(prepared)) if i not in repeats][exc.index]
        raise _conflict(IdempotencyKeyReused(exc.event_id, original), batch=True) from None
    results, it = [], iter(stored)
    by_index = {}
    for index in range(len(prepared)):
        if index in repeats:
            continue
        by_index[index] = next(it)
    project_id = ctx.store.project_id
    deduplicated = []
    for index in range(len(prepared)):
        if index in repeats:
            result = by_index[repeats[index]]
            deduplicated.append(index)
        else:
            result = by_index[index]
            if result.deduplicated:
                deduplicated.append(index)
        results.append(event_to_wire(result.event, project_id))
    return json_response(BatchCreated(results, deduplicated))


def require_unbound_for_chain(key: ApiKeyRecord) -> None:
    if key.organization is not None:
        raise Forbidden(
            "the chain spans every organization; verify it with a key not bound to one",
            {"organization": key.organization},
        )


async def verify_chain_for(store: Any, key: ApiKeyRecord, from_seq: int | None, to_seq: int | None) -> dict:
    """Verify [from_seq, to_seq] (shared by the API and the console)."""
    require_unbound_for_chain(key)
    if from_seq is not None and to_seq is not None and to_seq < from_seq:
        raise ValidationError.field("to_seq", "to_seq must be >= from_seq")
    return await store.verify_chain(from_seq, to_seq)


async def verify_events(request: Request):
    ctx = context(request)
    key = await authorize(request, "events:read")
    require_unbound_for_chain(key)
    from_seq = int_param(request, "from_seq", minimum=1)
    to_seq = int_param(request, "to_seq", minimum=1)
    result = await verify_chain_for(ctx.store, key, from_seq, to_seq)
    return json_response({"data": result})


async def get_event(request: Request):
    ctx = context(request)
    key = await authorize(request, "events:read")
    record = await ctx.store.get_event(request.path_params["event_id"], key.organization)
    if record is None:
        raise NotFound("no event with that id")
    return json_response({"data": event_to_wire(record, ctx.store.project_id)})


async def list_events(request: Request):
    """GET /v1/events: newest first (occurredAt, then seq), or `after_seq` tailing (seq ascending)."""
    ctx = context(request)
    key = await authorize(request, "events:read")
    page = await list_page(request, ctx.store, key.organization, cursor_param(request, ("list", "tail")))
    return json_response(page)


async def search_events(request: Request):
    """GET /v1/events/search?q=: full text plus qualifiers (search_query.py), newest first."""
    ctx = context(request)
    key = await authorize(request, "events:read")
    page = await search_page(request, ctx.store, key.organization, cursor_param(request, ("search",)))
    return json_response(page)


# Intake: first in the app's route list (app.py). Starlette tries routes in order, and
# these two take nearly all the traffic.
intake_routes = [
    Route("/v1/events", create_event, methods=["POST"]),
    Route("/v1/events/batch", create_batch, methods=["POST"]),
]

# Literal paths (/search, /verify) come before /{event_id} so they are not taken for ids.
routes = [
    Route("/v1/events", list_events, methods=["GET"]),
    Route("/v1/events/search", search_events, methods=["GET"]),
    Route("/v1/events/verify", verify_events, methods=["GET"]),
    Route("/v1/events/{event_id}", get_event, methods=["GET"]),
]
