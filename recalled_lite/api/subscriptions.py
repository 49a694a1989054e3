"""/v1/event_subscriptions* and /v1/simulate/*: subscriptions, secrets, tests, examples,
recover and replay_missing jobs (spec §5.1, §5.3). Lithic's dialect: snake_case both ways.

The tenant wall: a key bound to an organization sees, changes and operates only that
organization's subscriptions; any other id is 404, exactly like an unknown one.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from msgspec import UNSET
from starlette.requests import Request
from starlette.routing import Route

from .. import audit
from ..actions import AuditAction
from ..auth import write_organization
from ..delivery.service import DeliveryService
from ..delivery.signing import SECRET_PREFIX, generate_secret, secret_key_bytes
from ..delivery.ssrf import DestinationRefused, validate_destination
from ..delivery.subscriptions import MAX_PATTERNS, STATES, SubscriptionInfo, validate_pattern
from ..errors import Forbidden, NotFound, Unavailable, ValidationError
from ..storage.base import ApiKeyRecord, RecordNotFound
from ..storage.webhook_base import InvalidWebhookOperation, NewSubscription, SubscriptionPatch
from ..timefmt import format_ms, parse_bound_ms
from ..webhook_schemas import (
    AttemptOut, JobOut, JobProgress, Page, RangeIn, SecretOut, SubscriptionCreateIn, SubscriptionOut,
    SubscriptionPatchIn, decode_create, decode_cursor, decode_example, decode_patch, decode_range,
    decode_rotate, encode_cursor,
)
from .common import admin_action, authorize, context, decode_json, int_param, json_response, read_body

SCOPE = "webhooks:manage"
BODY_LIMIT = 64 * 1024
RESOLVE_TIMEOUT = 5.0


# --------------------------------------------------------------------------------------------
# shared helpers (also used by api/attempts.py)
# --------------------------------------------------------------------------------------------


def delivery(request: Request) -> DeliveryService:
    for service in context(request).services:
        if isinstance(service, DeliveryService) and service.storage is not None:
            return service
    raise Unavailable("webhook delivery is not running", retry_after=5)


def visible_subscription(svc: DeliveryService, sub_id: str, key: ApiKeyRecord) -> SubscriptionInfo:
    sub = svc.subs.get(sub_id)
    if sub is None or not sub.visible_to(key.organization):
        raise NotFound("no event subscription with that id")
    return sub


def sub_to_wire(sub: SubscriptionInfo, *, with_secret: bool = False) -> SubscriptionOut:
    return SubscriptionOut(
        id=sub.id, url=sub.url, description=sub.description, event_types=list(sub.event_types),
        organization=sub.organization, disabled=sub.disabled, state=sub.state,
        state_reason=sub.state_reason, created_at=format_ms(sub.created_at),
        updated_at=format_ms(sub.updated_at), secret=sub.secret if with_secret else UNSET,
        invalid_since=_time_or_none(sub.invalid_since if sub.state in ("invalid", "new") else None),
        next_retest_at=_time_or_none(sub.retest_at if sub.state == "invalid" else None),
        secret_error=sub.secret_error,
    )


def _time_or_none(ms: int | None) -> str | None:
    return format_ms(ms) if ms is not None else None


def attempt_to_wire(row: tuple) -> AttemptOut:
    (aid, mid, event_id, sid, attempt, status, trigger, url, code, body, error, duration,
     created_at, next_at, warning) = row
    return AttemptOut(
        id=aid, message_id=mid, event_id=event_id, event_subscription_id=sid, attempt=attempt,
        status=status, trigger=trigger, url=url, response_status_code=code, response_body=body,
        error=error, warning=warning, duration_ms=duration, created_at=format_ms(created_at),
        next_attempt_at=format_ms(next_at) if next_at is not None else None,
    )


async def run_op(op: Callable[[], Any]) -> Any:
    """Map storage-level outcomes to the API's errors."""
    try:
        return await op()
    except RecordNotFound:
        raise NotFound("no event subscription with that id") from None
    except InvalidWebhookOperation as exc:
        raise ValidationError.field(exc.field, str(exc)) from None


def time_param(request: Request, name: str, *, upper: bool) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_bound_ms(raw, upper=upper)
    except ValueError as exc:
        raise ValidationError.field(name, f"{name} {exc}") from None


async def optional_json(request: Request, decode: Callable[[bytes], Any], default: Any) -> Any:
    body = await read_body(request, BODY_LIMIT)
    if not body.strip():
        return default
    return decode_json(body, decode, context(request).config.server.max_json_depth)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


async def checked_url(svc: DeliveryService, url: str) -> str:
    """Syntax always; unless private destinations are allowed, every address the host
    resolves to must be public (spec §5.2). Checked again at connect time."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            return await validate_destination(url, svc.allow_private)
    except DestinationRefused as exc:
        raise ValidationError.field("url", str(exc)) from None
    except TimeoutError:
        raise ValidationError.field("url", f"could not resolve the host within {RESOLVE_TIMEOUT:g} s") from None


def checked_patterns(patterns: list[str] | None) -> list[str]:
    result: list[str] = []
    for index, pattern in enumerate(patterns or []):
        problem = validate_pattern(pattern)
        if problem is not None:
            raise ValidationError(problem, {"field": f"event_types[{index}]"})
        if pattern not in result:
            result.append(pattern)
    if len(result) > MAX_PATTERNS:
        raise ValidationError.field("event_types", f"at most {MAX_PATTERNS} event types")
    return result


def checked_secret(secret: str) -> str:
    try:
        key = secret_key_bytes(secret)
    except ValueError as exc:
        raise ValidationError.field("secret", str(exc)) from None
    if not 24 <= len(key) <= 64:
        raise ValidationError.field("secret", "secret must decode to 24-64 bytes")
    import base64

    return SECRET_PREFIX + base64.b64encode(key).decode("ascii")


# --------------------------------------------------------------------------------------------
# subscriptions
# --------------------------------------------------------------------------------------------


async def create_subscription_for(svc: DeliveryService, key: ApiKeyRecord, payload: SubscriptionCreateIn, *,
                                  request: Request) -> SubscriptionInfo:
    """Validate and create (shared by the API and the console); the secret is in the result.
    `request` is the API's or the console's: the audit event names its key, address and id."""
    organization = write_organization(key, payload.organization)
    url = await checked_url(svc, payload.url)
    patterns = checked_patterns(payload.event_types)
    secret = checked_secret(payload.secret) if payload.secret is not None else generate_secret()
    assert svc.storage is not None
    audited = admin_action(request, key, AuditAction.SUBSCRIPTION_CREATED, audit.subscription_created)
    return await run_op(lambda: svc.storage.create_subscription(NewSubscription(
        url=url, description=payload.description, event_types=patterns, organization=organization,
        disabled=payload.disabled, secret=secret), audit=audited))


async def create_subscription(request: Request):
    key = await authorize(request, SCOPE)
    svc = delivery(request)
    body = await read_body(request, BODY_LIMIT)
    payload = decode_json(body, decode_create, context(request).config.server.max_json_depth)
    sub = await create_subscription_for(svc, key, payload, request=request)
    return json_response({"data": sub_to_wire(sub, with_secret=True)}, status=201)


async def list_subscriptions(request: Request):
    key = await authorize(request, SCOPE)
    svc = delivery(request)
    state = request.query_params.get("state") or None
    if state is not None and state not in STATES:
        raise ValidationError.field("state", f"state must be one of {', '.join(STATES)}")
    after = time_param(request, "created_after", upper=False)
    before = time_param(request, "created_before", upper=False)  # a bare date: before it began
    limit = int_param(request, "limit", minimum=1, maximum=200, default=50)
    assert limit is not None
    cursor = request.query_params.get("cursor") or None
    position = None
    if cursor is not None:
        try:
            position = decode_cursor("s", cursor)
        except ValueError:
            raise ValidationError.field("cursor", "cursor is not one this server issued") from None
    subs = [
        s for s in svc.subs.values()
        if s.visible_to(key.organization)
        and (s.state == state if state is not None else s.state != "deactivated")
        and (after is None or s.created_at > after)
        and (before is None or s.created_at < before)
        and (position is None or s.id < position)
    ]
    subs.sort(key=lambda s: s.id, reverse=True)  # newest first (ids are ULIDs)
    page, more = subs[:limit], len(subs) > limit
    return json_response(Page(
        [sub_to_wire(s) for s in page], more, encode_cursor("s", page[-1].id) if more else None))


async def get_subscription(request: Request):
    key = await authorize(request, SCOPE)
    svc = delivery(request)
    return json_response({"data": sub_to_wire(visible_subscription(svc, request.path_params["sub_id"], key))})


async def update_subscription_for(svc: DeliveryService, key: ApiKeyRecord, sub_id: str,
                                  payload: SubscriptionPatchIn, *, request: Request) -> SubscriptionInfo:
    visible_subscription(svc, sub_id, key)
    patch = SubscriptionPatch()
    if payload.state is not UNSET:
        if payload.state not in ("new", "deactivated"):
            raise ValidationError.field(
                "state", "state may only be set to \"new\" (re-test) or \"deactivated\"")
        if (payload.state == "new" and payload.disabled is True) or (
                payload.state == "deactivated" and payload.disabled is False):
            raise ValidationError.field("state", "state and disabled contradict each other")
        patch.state = payload.state
    if payload.disabled is not UNSET:
        patch.disabled = payload.disabled
    if payload.url is not UNSET:
        patch.url = await checked_url(svc, payload.url)
    if payload.description is not UNSET:
        patch.description = payload.description
    if payload.event_types is not UNSET:
        patch.event_types = checked_patterns(payload.event_types)
    if payload.organization is not UNSET:
        if key.organization is not None and payload.organization != key.organization:
            raise Forbidden("this API key is bound to another organization", {"field": "organization"})
        patch.organization, patch.set_organization = payload.organization, True
    assert svc.storage is not None
    storage = svc.storage
    # `before` reads the writer's own view, just before the update: exact, unlike svc.subs.
    audited = admin_action(request, key, AuditAction.SUBSCRIPTION_UPDATED, audit.subscription_updated,
                           before=lambda: storage.subs.get(sub_id))
    return await run_op(lambda: storage.update_subscription(sub_id, key.organization, patch, audit=audited))


async def update_subscription(request: Request):
    key = await authorize(request, SCOPE)
    svc = delivery(request)
    sub_id = request.path_params["sub_id"]
    visible_subscription(svc, sub_id, key)
    body = await read_body(request, BODY_LIMIT)
    payload = decode_json(body, decode_patch, context(request).config.server.max_json_depth)
    sub = await update_subscription_for(svc, key, sub_id, payload, request=request)
    return json_response({"data": sub_to_wire(sub)})


async def delete_subscription(request: Request):
    key = await authorize(request, SCOPE)
    svc = delivery(request)
    assert svc.storage is not None
    audited = admin_action(request, key, AuditAction.SUBSCRIPTION_DELETED, audit.subscription_deleted)
    sub = await run_op(lambda: svc.storage.delete_subscription(request.path_params["sub_id"], key.organization,
                                                               audit=audited))
    return json_response({"data": sub_to_wire(sub)})


async def test_subscription_for(svc: DeliveryService, key: ApiKeyRecord, sub_id: str) -> SubscriptionInfo:
    assert svc.storage is not None
    sub, _ = await run_op(lambda: svc.storage.test_subscription(sub_id, key.organization))
    return sub


async def test_subscription(request: Request):
    key = await authorize(request, SCOPE)
    sub = await test_subscription_for(delivery(request), key, request.path_params["sub_id"])
    return json_response({"data": sub_to_wire(sub)}, status=202)


# --------------------------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------------------------


def secret_to_wire(sub: SubscriptionInfo) -> SecretOut:
    expires = sub.previous_secret_expires_at if sub.previous_secret is not None else None
    return SecretOut(secret=sub.secret or None, previous_secret_expires_at=format_ms(expires) if expires else None,
                     secret_error=sub.secret_error)


async def get_secret(request: Request):
    key = await authorize(request, SCOPE)
    svc = delivery(request)
    return json_response({"data": secret_to_wire(visible_subscription(svc, request.path_params["sub_id"], key))})


async def rotate_secret_for(svc: DeliveryService, key: ApiKeyRecord, sub_id: str,
                            secret: str | None, *, request: Request) -> SubscriptionInfo:
    """A new signing secret (given, or generated); the old one keeps signing for the overlap."""
    visible_subscription(svc, sub_id, key)
    new_secret = checked_secret(secret) if secret else generate_secret()
    overlap_ms = int(svc.config.secret_rotation_overlap_seconds * 1000)
    assert svc.storage is not None
    audited = admin_action(request, key, AuditAction.SUBSCRIPTION_SECRET_ROTATED, audit.subscription_secret_rotated)
    return await run_op(lambda: svc.storage.rotate_secret(sub_id, key.organization, new_secret, overlap_ms,
                                                          audit=audited))


async def rotate_secret(request: Request):
    key = await authorize(request, SCOPE)
    svc = delivery(request)
    visible_subscription(svc, request.path_params["sub_id"], key)
    payload = await optional_json(request, decode_rotate, None)
    sub = await rotate_secret_for(svc, key, request.path_params["sub_id"], payload.secret if payload else None,
                                  request=request)
    return json_response({"data": secret_to_wire(sub)})


# --------------------------------------------------------------------------------------------
# jobs: recover and replay_missing
# --------------------------------------------------------------------------------------------


def job_to_wire(row: tuple) -> JobOut:
    (jid, sid, kind, status, begin, end, total, scanned, queued, skipped, error, created_at,
     updated_at, finished_at) = row
    if status == "completed":
        percent = 100.0
    else:
        percent = round(min(scanned / total, 1.0) * 100, 1) if total else 0.0
    return JobOut(
        id=jid, type=kind, event_subscription_id=sid, status=status, begin=format_ms(begin),
        end=format_ms(end) if end is not None else None,
        progress=JobProgress(total=total, scanned=scanned, queued=queued, skipped=skipped, percent=percent),
        error=error, created_at=format_ms(created_at), updated_at=format_ms(updated_at),
        finished_at=format_ms(finished_at) if finished_at is not None else None,
    )


def _range_value(text: str, name: str, *, upper: bool) -> int:
    try:
        return parse_bound_ms(text, upper=upper)
    except ValueError as exc:
        raise ValidationError.field(name, f"{name} {exc}") from None


def job_range(payload: RangeIn) -> tuple[int, int | None]:
    begin = _range_value(payload.begin, "begin", upper=False)
    end = _range_value(payload.end, "end", upper=True) if payload.end is not None else None
    if end is not None and end < begin:
        raise ValidationError.field("end", "end must not be before begin")
    return begin, end


async def start_job_for(svc: DeliveryService, key: ApiKeyRecord, sub_id: str, kind: str,
                        payload: RangeIn) -> tuple:
    """Start a recover / replay_missing job (shared by the API and the console): its row."""
    visible_subscription(svc, sub_id, key)
    begin, end = job_range(payload)
    assert svc.storage is not None
    row = await run_op(lambda: svc.storage.create_job(kind, sub_id, key.organization, begin, end))
    svc.add_job(row[0])
    return row


async def preview_job_for(svc: DeliveryService, store: Any, key: ApiKeyRecord, sub_id: str, kind: str,
                          payload: RangeIn) -> int:
    """How many messages `start_job_for` with the same arguments would send, were it run now."""
    sub = visible_subscription(svc, sub_id, key)
    begin, end = job_range(payload)
    if sub.state == "deactivated":
        raise ValidationError.field("state", "the subscription is deactivated; re-activate it first")
    return await store.preview_webhook_job(kind, sub, begin, end)


async def _start_job(request: Request, kind: str):
    key = await authorize(request, SCOPE)
    svc = delivery(request)
    sub_id = request.path_params["sub_id"]
    visible_subscription(svc, sub_id, key)
    body = await read_body(request, BODY_LIMIT)
    payload = decode_json(body, decode_range, context(request).config.server.max_json_depth)
    row = await start_job_for(svc, key, sub_id, kind, payload)
    return json_response({"data": job_to_wire(row)}, status=202)


async def recover(request: Request):
    return await _start_job(request, "recover")


async def replay_missing(request: Request):
    return await _start_job(request, "replay_missing")


async def list_jobs(request: Request):
    key = await authorize(request, SCOPE)
    svc = delivery(request)
    sub_id = request.path_params["sub_id"]
    visible_subscription(svc, sub_id, key)
    limit = int_param(request, "limit", minimum=1, maximum=200, default=50)
    assert limit is not None and svc.storage is not None
    cursor = request.query_params.get("cursor") or None
    before = None
    if cursor is not None:
        try:
            before = decode_cursor("j", cursor)
        except ValueError:
            raise ValidationError.field("cursor", "cursor is not one this server issued") from None
    rows = await svc.storage.list_jobs(sub_id, limit + 1, before)
    page, more = rows[:limit], len(rows) > limit
    return json_response(Page([job_to_wire(r) for r in page], more,
                              encode_cursor("j", page[-1][0]) if more else None))


async def job_for(svc: DeliveryService, key: ApiKeyRecord, sub_id: str, job_id: str) -> tuple:
    visible_subscription(svc, sub_id, key)
    assert svc.storage is not None
    row = await svc.storage.get_job(sub_id, job_id)
    if row is None:
        raise NotFound("no job with that id")
    return row


async def get_job(request: Request):
    key = await authorize(request, SCOPE)
    row = await job_for(delivery(request), key, request.path_params["sub_id"], request.path_params["job_id"])
    return json_response({"data": job_to_wire(row)})


# --------------------------------------------------------------------------------------------
# simulate
# --------------------------------------------------------------------------------------------


def _example_action(sub: SubscriptionInfo) -> str:
    for pattern in sub.event_types:
        if pattern != "*" and not pattern.endswith(".*"):
            return pattern
    for pattern in sub.event_types:
        if pattern.endswith(".*"):
            return pattern[:-1] + "example"
    return "example.created"


async def send_example(request: Request):
    key = await authorize(request, SCOPE)
    svc = delivery(request)
    sub_id = request.path_params["sub_id"]
    sub = visible_subscription(svc, sub_id, key)
    payload = await optional_json(request, decode_example, None)
    action = payload.event_type if payload is not None and payload.event_type else _example_action(sub)
    assert svc.storage is not None
    row = await run_op(lambda: svc.storage.send_example(sub_id, key.organization, action))
    return json_response({"data": attempt_to_wire(row)}, status=202)


routes = [
    Route("/v1/event_subscriptions", create_subscription, methods=["POST"]),
    Route("/v1/event_subscriptions", list_subscriptions, methods=["GET"]),
    Route("/v1/event_subscriptions/{sub_id}", get_subscription, methods=["GET"]),
    Route("/v1/event_subscriptions/{sub_id}", update_subscription, methods=["PATCH"]),
    Route("/v1/event_subscriptions/{sub_id}", delete_subscription, methods=["DELETE"]),
    Route("/v1/event_subscriptions/{sub_id}/test", test_subscription, methods=["POST"]),
    Route("/v1/event_subscriptions/{sub_id}/secret", get_secret, methods=["GET"]),
    Route("/v1/event_subscriptions/{sub_id}/secret/rotate", rotate_secret, methods=["POST"]),
    Route("/v1/event_subscriptions/{sub_id}/recover", recover, methods=["POST"]),
    Route("/v1/event_subscriptions/{sub_id}/replay_missing", replay_missing, methods=["POST"]),
    Route("/v1/event_subscriptions/{sub_id}/jobs", list_jobs, methods=["GET"]),
    Route("/v1/event_subscriptions/{sub_id}/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/simulate/event_subscriptions/{sub_id}/send_example", send_example, methods=["POST"]),
]
