"""Webhook subscriptions: the list with state badges, create (the secret shown once), edit,
disable/enable, test, rotate the secret, and each subscription's attempts by status.

Every change is one call to the function the API's handler calls (``api/subscriptions.py``,
``api/attempts.py``), with the session's key: the same validation (SSRF guard, patterns,
the organization wall) and the same storage operation.
"""

from __future__ import annotations

import re

import msgspec
from msgspec import UNSET
from starlette.requests import Request
from starlette.responses import Response

from ..api.common import describe_validation_error
from ..api.attempts import ATTEMPT_STATUSES, attempt_page, subscription_attempt_rows
from ..api.subscriptions import (
    SCOPE, attempt_to_wire, create_subscription_for, delivery, job_to_wire, rotate_secret_for,
    sub_to_wire, test_subscription_for, update_subscription_for, visible_subscription,
)
from ..delivery.subscriptions import STATES
from ..errors import Forbidden, ValidationError
from ..webhook_schemas import SubscriptionCreateIn, SubscriptionPatchIn, decode_cursor, encode_cursor
from .guard import Form, action, page
from .render import page as render_page, redirect, sentence
from .sessions import Viewer

PAGE_SIZE = 50
NOTICES = {
    "updated": "The subscription was saved.",
    "disabled": "The subscription is disabled: no new events are queued for it.",
    "enabled": "The subscription is enabled again; a test delivery was sent to decide its state.",
    "tested": "A test delivery was sent. Its attempt appears below within a moment.",
    "resent": "The message was queued again. Its attempt appears below within a moment.",
}
_SEPARATORS = re.compile(r"[\s,]+")


def event_types_of(text: str) -> list[str] | None:
    """"invoice.paid, user.*" (commas, spaces or lines) -> patterns; empty -> every event."""
    patterns = [p for p in _SEPARATORS.split(text.strip()) if p]
    return patterns or None


def wired_attempts(rows: list[tuple], limit: int) -> tuple[list, str | None]:
    """A page of attempt rows as the API shows them, and the next page's cursor."""
    page_rows, next_cursor = attempt_page(rows, limit)
    return [attempt_to_wire(r) for r in page_rows], next_cursor


def _fields(form: Form) -> dict:
    fields = {"url": form.text("url"), "description": form.text("description"),
              "event_types": event_types_of(form.get("event_types", ""))}
    # Only when the form sends it (a bound key's form has no such field): a value naming
    # another organization then meets the API's own 403, as it would over the API.
    if "organization" in form:
        fields["organization"] = form.optional("organization")
    return fields


def _convert(kind: type, fields: dict):
    """The API's input struct from form fields, with the API's own length limits."""
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        field, message = describe_validation_error(exc)
        raise ValidationError.field(field, message) from None


@page(SCOPE)
async def subscriptions_page(request: Request, viewer: Viewer) -> Response:
    svc = delivery(request)
    state = request.query_params.get("state") or None
    if state is not None and state not in STATES:
        raise ValidationError.field("state", f"state must be one of {', '.join(STATES)}")
    before = None
    if request.query_params.get("cursor"):
        try:
            before = decode_cursor("s", request.query_params["cursor"])
        except ValueError:
            raise ValidationError.field("cursor", "this page link is broken; start from the first page") from None
    subs = sorted((s for s in svc.subs.values() if s.visible_to(viewer.key.organization)
                   and (state is None or s.state == state) and (before is None or s.id < before)),
                  key=lambda s: s.id, reverse=True)
    shown = subs[:PAGE_SIZE]
    next_cursor = encode_cursor("s", shown[-1].id) if len(subs) > PAGE_SIZE else None
    return render_page(request, "webhooks.html", title="Webhooks", nav="webhooks", subs=shown,
                       next_cursor=next_cursor, state=state, states=STATES)


@page(SCOPE)
async def new_subscription_page(request: Request, viewer: Viewer) -> Response:
    return render_page(request, "webhook_new.html", title="New subscription", nav="webhooks", form={})


@action(SCOPE)
async def create_subscription(request: Request, viewer: Viewer, form: Form) -> Response:
    svc = delivery(request)
    try:
        payload = _convert(SubscriptionCreateIn, _fields(form))
        sub = await create_subscription_for(svc, viewer.key, payload, request=request)
    except (ValidationError, Forbidden) as exc:
        return render_page(request, "webhook_new.html", status=exc.status, title="New subscription",
                           nav="webhooks", form=form, problem=exc)
    return render_page(request, "webhook_secret.html", status=201, title="Subscription created",
                       nav="webhooks", sub=sub_to_wire(sub, with_secret=True), created=True)


async def _subscription_context(request: Request, viewer: Viewer, sub_id: str) -> dict:
    svc = delivery(request)
    sub = visible_subscription(svc, sub_id, viewer.key)
    status = request.query_params.get("status") or None
    attempts, attempts_next, attempts_problem = [], None, None
    try:
        attempts, attempts_next = wired_attempts(*await subscription_attempt_rows(request, svc, viewer.key, sub_id))
    except ValidationError as exc:
        attempts_problem = sentence(exc)
    assert svc.storage is not None
    jobs = [job_to_wire(r) for r in await svc.storage.list_jobs(sub.id, 5, None)]
    return {"sub": sub_to_wire(sub), "info": sub, "attempts": attempts, "attempts_next": attempts_next,
            "attempts_problem": attempts_problem, "attempt_status": status, "statuses": ATTEMPT_STATUSES,
            "jobs": jobs, "title": f"Subscription {sub.id}", "nav": "webhooks",
            "notice": NOTICES.get(request.query_params.get("notice", ""))}


@page(SCOPE)
async def subscription_page(request: Request, viewer: Viewer) -> Response:
    context = await _subscription_context(request, viewer, request.path_params["sub_id"])
    return render_page(request, "webhook.html", status=400 if context["attempts_problem"] else 200, form={},
                       **context)


@action(SCOPE)
async def update_subscription(request: Request, viewer: Viewer, form: Form) -> Response:
    sub_id = request.path_params["sub_id"]
    svc = delivery(request)
    visible_subscription(svc, sub_id, viewer.key)
    try:
        payload = _convert(SubscriptionPatchIn, _fields(form))
        await update_subscription_for(svc, viewer.key, sub_id, payload, request=request)
    except (ValidationError, Forbidden) as exc:
        context = await _subscription_context(request, viewer, sub_id)
        return render_page(request, "webhook.html", status=exc.status, form=form, problem=exc, **context)
    return redirect(f"/console/webhooks/{sub_id}?notice=updated")


@action(SCOPE)
async def set_subscription_enabled(request: Request, viewer: Viewer, form: Form) -> Response:
    sub_id = request.path_params["sub_id"]
    disable = form.text("disabled") == "true"
    await update_subscription_for(delivery(request), viewer.key, sub_id,
                                  SubscriptionPatchIn(disabled=disable, state=UNSET), request=request)
    return redirect(f"/console/webhooks/{sub_id}?notice={'disabled' if disable else 'enabled'}")


@action(SCOPE)
async def send_test(request: Request, viewer: Viewer, form: Form) -> Response:
    sub_id = request.path_params["sub_id"]
    await test_subscription_for(delivery(request), viewer.key, sub_id)
    return redirect(f"/console/webhooks/{sub_id}?notice=tested")


@action(SCOPE)
async def rotate_secret(request: Request, viewer: Viewer, form: Form) -> Response:
    sub = await rotate_secret_for(delivery(request), viewer.key, request.path_params["sub_id"], None,
                                  request=request)
    return render_page(request, "webhook_secret.html", title="Secret rotated", nav="webhooks",
                       sub=sub_to_wire(sub, with_secret=True), created=False, overlap=sub.previous_secret_expires_at)
