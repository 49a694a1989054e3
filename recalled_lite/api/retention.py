"""Retention routes (docs/retention.md), scope `retention:manage`. snake_case dialect.

    GET/PUT /v1/retention/rules, DELETE /v1/retention/rules/{id}
    POST/GET /v1/legal_holds, DELETE /v1/legal_holds/{id}
    POST /v1/retention/run (202 + the job), GET /v1/retention/jobs/{id}, GET /v1/retention/status

An organization-bound key sees and changes only its organization's rules and holds (another
organization's: 403 when named, 404 by id). The purge itself spans every organization: only
an unbound key may start one or read a job.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.routing import Route

from .. import audit
from ..actions import AuditAction
from ..errors import Forbidden, NotFound, Unavailable, ValidationError
from ..ids import new_id
from ..retention import Hold, Rule, check_days, normalize_prefix
from ..storage.base import ApiKeyRecord, RecordNotFound
from ..timefmt import format_ms, now_ms
from .common import admin_action, authorize, context, decode_json, json_response, read_body

SCOPE = "retention:manage"
Text = Annotated[str, Meta(min_length=1, max_length=128)]


class RuleIn(Struct, forbid_unknown_fields=True):
    days: Annotated[int, Meta(ge=0, le=36500)]  # 0: for ever; at most 100 years
    organization: Text | None = None
    action_prefix: Annotated[str, Meta(max_length=130)] | None = None


class HoldIn(Struct, forbid_unknown_fields=True):
    organization: Text
    reason: Annotated[str, Meta(min_length=1, max_length=1000)]
    actor_id: Annotated[str, Meta(min_length=1, max_length=255)] | None = None
    action: Text | None = None


class RunIn(Struct, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(min_length=1, max_length=1000)] = "requested through POST /v1/retention/run"


_rule_in = msgspec.json.Decoder(RuleIn).decode
_hold_in = msgspec.json.Decoder(HoldIn).decode
_run_in = msgspec.json.Decoder(RunIn).decode


def _ms(value: int | None) -> str | None:
    return format_ms(value) if value is not None else None


def rule_to_wire(rule: Rule) -> dict[str, Any]:
    return {"id": rule.id, "organization": rule.organization, "action_prefix": rule.action_prefix,
            "days": rule.days, "created_at": format_ms(rule.created_at), "updated_at": format_ms(rule.updated_at)}


def hold_to_wire(hold: Hold) -> dict[str, Any]:
    return {"id": hold.id, "organization": hold.organization, "actor_id": hold.actor_id, "action": hold.action,
            "reason": hold.reason, "active": hold.released_at is None, "created_at": format_ms(hold.created_at),
            "released_at": _ms(hold.released_at)}


def job_to_wire(job: Any) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "trigger": job.trigger, "reason": job.reason,
            "reference_time": format_ms(job.now_at), "cursor_seq": job.cursor_seq, "stop_seq": job.stop_seq,
            "scanned": job.scanned, "purged": job.purged, "held": job.held, "batches": job.batches,
            "error": job.error, "created_at": format_ms(job.created_at), "updated_at": format_ms(job.updated_at),
            "finished_at": _ms(job.finished_at)}


def _own_organization(key: ApiKeyRecord, requested: str | None, *, field: str = "organization") -> str | None:
    """A bound key acts on its organization only: naming another is 403, naming none is its own."""
    if key.organization is None:
        return requested
    if requested is not None and requested != key.organization:
        raise Forbidden("this API key is bound to another organization", {"field": field})
    return key.organization


def _require_unbound(key: ApiKeyRecord) -> None:
    if key.organization is not None:
        raise Forbidden("a purge spans every organization; use a key not bound to one")


# -- rules ----------------------------------------------------------------------------------------


async def list_rules(request: Request):
    ctx = context(request)
    key = await authorize(request, SCOPE)
    rules = await ctx.store.list_retention_rules(key.organization)
    retention = ctx.config.retention
    return json_response({"data": [rule_to_wire(r) for r in rules], "default_days": retention.default_days,
                          "min_days": retention.min_days, "max_days": retention.max_days})


async def put_rule(request: Request):
    ctx = context(request)
    key = await authorize(request, SCOPE)
    body = decode_json(await read_body(request, 16 * 1024), _rule_in, ctx.config.server.max_json_depth)
    organization = _own_organization(key, body.organization)
    prefix = normalize_prefix(body.action_prefix)
    retention = ctx.config.retention
    check_days(body.days, retention.min_days, retention.max_days)
    rule, _previous = await ctx.store.put_retention_rule(organization, prefix, body.days, audit=admin_action(
        request, key, AuditAction.RETENTION_RULE_SET, audit.retention_rule_set))
    return json_response({"data": rule_to_wire(rule)})


async def delete_rule(request: Request):
    ctx = context(request)
    key = await authorize(request, SCOPE)
    try:
        rule = await ctx.store.delete_retention_rule(request.path_params["rule_id"], key.organization,
                                                     audit=admin_action(request, key,
                                                                        AuditAction.RETENTION_RULE_DELETED,
                                                                        audit.retention_rule_deleted))
    except RecordNotFound:
        raise NotFound("no retention rule with that id") from None
    return json_response({"data": rule_to_wire(rule)})


# -- legal holds ----------------------------------------------------------------------------------


async def create_hold(request: Request):
    ctx = context(request)
    key = await authorize(request, SCOPE)
    body = decode_json(await read_body(request, 16 * 1024), _hold_in, ctx.config.server.max_json_depth)
    organization = _own_organization(key, body.organization)
    assert organization is not None
    if body.action is not None and "*" in body.action[:-1]:
        raise ValidationError.field("action", "action is exact, or a prefix ending in one '*'")
    hold = Hold(new_id("hold"), organization, body.actor_id, body.action, body.reason, now_ms(), None)
    await ctx.store.create_legal_hold(hold, audit=admin_action(
        request, key, AuditAction.LEGAL_HOLD_CREATED, audit.legal_hold_created))
    return json_response({"data": hold_to_wire(hold)}, status=201)


async def list_holds(request: Request):
    ctx = context(request)
    key = await authorize(request, SCOPE)
    raw = (request.query_params.get("include_released") or "false").lower()
    if raw not in ("true", "false"):
        raise ValidationError.field("include_released", "include_released must be true or false")
    holds = await ctx.store.list_legal_holds(key.organization, raw == "true")
    return json_response({"data": [hold_to_wire(h) for h in holds], "has_more": False, "next_cursor": None})


async def release_hold(request: Request):
    ctx = context(request)
    key = await authorize(request, SCOPE)
    try:
        hold, _released = await ctx.store.release_legal_hold(
            request.path_params["hold_id"], key.organization,
            audit=admin_action(request, key, AuditAction.LEGAL_HOLD_RELEASED, audit.legal_hold_released))
    except RecordNotFound:
        raise NotFound("no legal hold with that id") from None
    return json_response({"data": hold_to_wire(hold)})


# -- purge jobs and status ------------------------------------------------------------------------


def _service(ctx: Any) -> Any:
    if ctx.retention is None:
        raise Unavailable("the retention service is not running", retry_after=5)
    return ctx.retention


async def run_purge(request: Request):
    ctx = context(request)
    key = await authorize(request, SCOPE)
    _require_unbound(key)
    raw = await read_body(request, 16 * 1024)
    body = decode_json(raw, _run_in, ctx.config.server.max_json_depth) if raw.strip() else RunIn()
    job, _created = await _service(ctx).request(body.reason, audit=admin_action(
        request, key, AuditAction.RETENTION_RUN_REQUESTED, audit.retention_run_requested))
    return json_response({"data": job_to_wire(job)}, status=202)


async def get_job(request: Request):
    ctx = context(request)
    key = await authorize(request, SCOPE)
    _require_unbound(key)
    job = await ctx.store.get_retention_job(request.path_params["job_id"])
    if job is None:
        raise NotFound("no retention job with that id")
    return json_response({"data": job_to_wire(job)})


async def get_status(request: Request):
    ctx = context(request)
    key = await authorize(request, SCOPE)
    return json_response({"data": await status_for(ctx, key.organization)})


async def status_for(ctx: Any, organization: str | None) -> dict[str, Any]:
    """GET /v1/retention/status, shared with the console overview."""
    found = await ctx.store.retention_status(organization)
    rules = await ctx.store.list_retention_rules(organization)
    oldest = found["oldest"]
    service = ctx.retention
    config = ctx.config.retention
    return {
        "default_days": config.default_days,
        "min_days": config.min_days,
        "max_days": config.max_days,
        "interval_minutes": config.interval_minutes,
        "next_run_at": _ms(service.next_run_at) if service is not None else None,
        "running": job_to_wire(found["running"]) if found["running"] is not None and organization is None else None,
        "last_run": job_to_wire(found["last"]) if found["last"] is not None and organization is None else None,
        "rules": [rule_to_wire(r) for r in rules],
        "purged_by_rule": found["purged_by_rule"],
        "purged_total": found["tombstones"],
        "oldest_retained_event": (
            {"seq": oldest[0], "id": oldest[1], "occurred_at": format_ms(oldest[2])} if oldest else None),
    }


routes = [
    Route("/v1/retention/rules", list_rules, methods=["GET"]),
    Route("/v1/retention/rules", put_rule, methods=["PUT"]),
    Route("/v1/retention/rules/{rule_id}", delete_rule, methods=["DELETE"]),
    Route("/v1/retention/run", run_purge, methods=["POST"]),
    Route("/v1/retention/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/retention/status", get_status, methods=["GET"]),
    Route("/v1/legal_holds", create_hold, methods=["POST"]),
    Route("/v1/legal_holds", list_holds, methods=["GET"]),
    Route("/v1/legal_holds/{hold_id}", release_hold, methods=["DELETE"]),
]
