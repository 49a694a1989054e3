"""The overview: the log's size and chain head, the last verification, the server's health
(what /readyz knows), retention (next and last purge, oldest event kept), failing
subscriptions and the delivery backlog.

What spans every organization (the event count, the head, verifications) is shown only to
a key not bound to one, as the API's /v1/events/verify is.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..api.health import readiness_problems
from ..api.retention import status_for
from ..api.subscriptions import delivery
from ..errors import APIError
from .guard import page
from .render import page as render_page, sentence
from .sessions import Viewer


@page()
async def overview_page(request: Request, viewer: Viewer) -> Response:
    ctx = request.app.state.ctx
    store = ctx.store
    unbound = viewer.key.organization is None
    problems = await readiness_problems(ctx)
    chain = None
    if unbound and viewer.can("events:read"):
        head_seq, head_hash = await store.chain_head()
        chain = {"events": head_seq, "head_seq": head_seq, "head_hash": head_hash,
                 "last": await store.last_chain_verification()}
    webhooks = None
    webhooks_problem = None
    if viewer.can("webhooks:manage"):
        try:
            svc = delivery(request)
            visible = [s for s in svc.subs.values() if s.visible_to(viewer.key.organization)]
            backlog = await store.webhook_backlog()
            failing = [s for s in visible if s.state == "invalid" or s.first_failure_at is not None]
            failing.sort(key=lambda s: s.id, reverse=True)
            webhooks = {
                "count": len(visible), "failing": failing[:20], "failing_total": len(failing),
                "backlog": sorted(((backlog[s.id], s) for s in visible if backlog.get(s.id)),
                                  key=lambda pair: -pair[0])[:20],
                "backlog_total": sum(backlog.get(s.id, 0) for s in visible),
            }
        except APIError as exc:
            webhooks_problem = sentence(exc)
    retention = None
    if viewer.can("retention:manage"):
        retention = await status_for(ctx, viewer.key.organization)
        if chain is not None and retention["purged_total"]:
            chain["events"] = chain["head_seq"] - retention["purged_total"]  # seqs are never reused
    return render_page(request, "overview.html", title="Overview", nav="overview", problems=problems,
                       chain=chain, webhooks=webhooks, webhooks_problem=webhooks_problem, retention=retention)
