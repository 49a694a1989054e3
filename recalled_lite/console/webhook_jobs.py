"""Sending again: resend one message, and the recover / replay_missing jobs, which first show
how many messages they would send (a count, before anything is queued), then their progress.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..api.attempts import resend_for
from ..api.subscriptions import (
    SCOPE, delivery, job_for, job_to_wire, preview_job_for, start_job_for, sub_to_wire, visible_subscription,
)
from ..errors import ValidationError
from ..webhook_schemas import RangeIn
from .guard import Form, action, feed, page
from .render import json_for_script, page as render_page, redirect
from .sessions import Viewer

JOB_KINDS = {
    "recover": "Recover failed messages",
    "replay_missing": "Replay missing events",
}


def _job_request(form: Form) -> tuple[str, RangeIn]:
    kind = form.text("kind")
    if kind not in JOB_KINDS:
        raise ValidationError.field("kind", "choose recover or replay_missing")
    begin = form.text("begin")
    if not begin:
        raise ValidationError.field("begin", "give the time to start from, e.g. 2026-01-31 or 2026-01-31T09:00:00Z")
    return kind, RangeIn(begin=begin[:64], end=(form.optional("end") or "")[:64] or None)


@action(SCOPE)
async def resend(request: Request, viewer: Viewer, form: Form) -> Response:
    sub_id = request.path_params["sub_id"]
    await resend_for(delivery(request), viewer.key, form.text("event_id"), sub_id)
    return redirect(f"/console/webhooks/{sub_id}?notice=resent")


@action(SCOPE)
async def preview_job(request: Request, viewer: Viewer, form: Form) -> Response:
    """How many messages the job would send, and a button to start it."""
    svc = delivery(request)
    sub_id = request.path_params["sub_id"]
    sub = visible_subscription(svc, sub_id, viewer.key)
    kind, span = _job_request(form)
    count = await preview_job_for(svc, request.app.state.ctx.store, viewer.key, sub_id, kind, span)
    return render_page(request, "webhook_job_preview.html", title=JOB_KINDS[kind], nav="webhooks",
                       sub=sub_to_wire(sub), kind=kind, kind_title=JOB_KINDS[kind], span=span, count=count)


@action(SCOPE)
async def start_job(request: Request, viewer: Viewer, form: Form) -> Response:
    sub_id = request.path_params["sub_id"]
    kind, span = _job_request(form)
    row = await start_job_for(delivery(request), viewer.key, sub_id, kind, span)
    return redirect(f"/console/webhooks/{sub_id}/jobs/{row[0]}")


@page(SCOPE)
async def job_page(request: Request, viewer: Viewer) -> Response:
    svc = delivery(request)
    sub_id = request.path_params["sub_id"]
    job = job_to_wire(await job_for(svc, viewer.key, sub_id, request.path_params["job_id"]))
    sub = visible_subscription(svc, sub_id, viewer.key)
    return render_page(request, "webhook_job.html", title=JOB_KINDS.get(job.type, "Job"), nav="webhooks",
                       sub=sub_to_wire(sub), job=job, kind_title=JOB_KINDS.get(job.type, job.type))


@feed(SCOPE)
async def job_progress(request: Request, viewer: Viewer) -> Response:
    job = job_to_wire(await job_for(delivery(request), viewer.key, request.path_params["sub_id"],
                                    request.path_params["job_id"]))
    return json_for_script({"id": job.id, "status": job.status, "error": job.error, "total": job.progress.total,
                            "scanned": job.progress.scanned, "queued": job.progress.queued,
                            "skipped": job.progress.skipped, "percent": job.progress.percent})
