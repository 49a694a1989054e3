"""/v1/keys: create, list, revoke API keys (SPEC §3). snake_case dialect."""

from __future__ import annotations

from typing import Any, Iterable

from starlette.requests import Request
from starlette.routing import Route

from .. import audit
from ..actions import AuditAction
from ..auth import ADMIN, new_key_record, normalize_scopes
from ..errors import Forbidden, NotFound
from ..schemas import KeyOut, decode_key_create
from ..storage.base import ApiKeyRecord, RecordNotFound
from ..timefmt import format_ms
from .common import admin_action, authorize, context, decode_json, json_response, read_body


def key_to_wire(record: ApiKeyRecord, plaintext: str | None = None, last_used_at: int | None = None) -> KeyOut:
    used = last_used_at if last_used_at is not None else record.last_used_at
    return KeyOut(
        id=record.id, name=record.name, prefix=record.prefix, scopes=sorted(record.scopes),
        organization=record.organization, created_at=format_ms(record.created_at),
        revoked_at=format_ms(record.revoked_at) if record.revoked_at is not None else None,
        last_used_at=format_ms(used) if used is not None else None,
        key=plaintext,
    )


async def create_key_for(store: Any, caller: ApiKeyRecord, name: str, scopes: Iterable[str],
                         organization: str | None, *, request: Request) -> tuple[str, ApiKeyRecord]:
    """Mint a key as `caller` may (shared by the API and the console): (plaintext, record).
    `request` is the API's or the console's: the audit event names its key, address and id."""
    granted = normalize_scopes(scopes)
    if caller.organization is not None:
        # A bound key can only mint keys for its own organization, and never
        # more power than it has itself.
        if organization not in (None, caller.organization):
            raise Forbidden("this API key is bound to another organization", {"field": "organization"})
        organization = caller.organization
    if ADMIN not in caller.scopes and not granted <= caller.scopes:
        raise Forbidden("a key cannot grant scopes it does not hold", {"field": "scopes"})
    plaintext, record = new_key_record(name, granted, organization)
    await store.create_key(record, audit=admin_action(
        request, caller, AuditAction.KEY_CREATED, audit.key_created(record)))
    return plaintext, record


def keys_visible_to(store: Any, caller: ApiKeyRecord) -> list[ApiKeyRecord]:
    return [k for k in store.list_keys() if caller.organization is None or k.organization == caller.organization]


async def revoke_key_for(store: Any, caller: ApiKeyRecord, key_id: str, *, request: Request) -> ApiKeyRecord:
    try:
        return await store.revoke_key(key_id, caller.organization, audit=admin_action(
            request, caller, AuditAction.KEY_REVOKED, audit.key_revoked))
    except RecordNotFound:
        raise NotFound("no API key with that id") from None


async def create_key(request: Request):
    ctx = context(request)
    caller = await authorize(request, "keys:manage")
    body = await read_body(request, 64 * 1024)
    payload = decode_json(body, decode_key_create, ctx.config.server.max_json_depth)
    plaintext, record = await create_key_for(ctx.store, caller, payload.name, payload.scopes, payload.organization,
                                             request=request)
    return json_response({"data": key_to_wire(record, plaintext)}, status=201)


async def list_keys(request: Request):
    ctx = context(request)
    caller = await authorize(request, "keys:manage")
    keys = [key_to_wire(k, last_used_at=ctx.key_usage.last_used(k.id, k.last_used_at))
            for k in keys_visible_to(ctx.store, caller)]
    return json_response({"data": keys, "has_more": False, "next_cursor": None})


async def revoke_key(request: Request):
    ctx = context(request)
    caller = await authorize(request, "keys:manage")
    record = await revoke_key_for(ctx.store, caller, request.path_params["key_id"], request=request)
    return json_response({"data": key_to_wire(record)})


routes = [
    Route("/v1/keys", create_key, methods=["POST"]),
    Route("/v1/keys", list_keys, methods=["GET"]),
    Route("/v1/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
