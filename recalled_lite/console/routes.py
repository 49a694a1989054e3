"""Every console route. The endpoints carry their access rule (guard.py tags them), which
the route auth matrix test reads from the router, so a new route cannot go untested.

Literal paths come before the ``{param}`` paths they would otherwise be taken for. The last
route catches the rest of /console/: unknown paths get a page (404, or 405 with Allow for
a known path asked with the wrong method), not the API's JSON error.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from ..errors import MethodNotAllowed, NotFound
from . import actors, chain, events, keys, overview, signin, webhook_jobs, webhooks
from .assets import static_file
from .guard import current_viewer, error_page, public
from .render import redirect

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@public
async def to_console(request: Request) -> Response:
    return redirect("/console/")


@public
async def not_found_page(request: Request) -> Response:
    try:
        await current_viewer(request, charge=False)  # the navigation when signed in; `public` charged
    except Exception:
        pass
    allowed = sorted({m for route in routes[:-1] if route.matches(request.scope)[0] is Match.PARTIAL
                      for m in (route.methods or ())})
    if allowed:
        return error_page(request, MethodNotAllowed(
            f"{request.method} is not used on this page", headers={"Allow": ", ".join(allowed)}))
    return error_page(request, NotFound("there is no console page at this address"))


routes = [
    Route("/", to_console, methods=["GET"]),
    Route("/console", to_console, methods=["GET"]),
    Route("/console/", overview.overview_page, methods=["GET"]),
    Route("/console/login", signin.login_page, methods=["GET"]),
    Route("/console/login", signin.sign_in, methods=["POST"]),
    Route("/console/logout", signin.sign_out, methods=["POST"]),
    Route("/console/link", signin.link_page, methods=["GET"]),
    Route("/console/link", signin.use_link, methods=["POST"]),
    Route("/console/static/{name}", public(static_file, free=True), methods=["GET"]),
    Route("/console/events", events.events_page, methods=["GET"]),
    Route("/console/events/tail", events.events_tail, methods=["GET"]),
    Route("/console/events/download", events.events_download, methods=["GET"]),
    Route("/console/events/{event_id}", events.event_page, methods=["GET"]),
    Route("/console/chain", chain.chain_page, methods=["GET"]),
    Route("/console/chain/verify", chain.start_verification, methods=["POST"]),
    Route("/console/chain/progress", chain.verification_progress, methods=["GET"]),
    Route("/console/webhooks", webhooks.subscriptions_page, methods=["GET"]),
    Route("/console/webhooks", webhooks.create_subscription, methods=["POST"]),
    Route("/console/webhooks/new", webhooks.new_subscription_page, methods=["GET"]),
    Route("/console/webhooks/{sub_id}", webhooks.subscription_page, methods=["GET"]),
    Route("/console/webhooks/{sub_id}", webhooks.update_subscription, methods=["POST"]),
    Route("/console/webhooks/{sub_id}/enabled", webhooks.set_subscription_enabled, methods=["POST"]),
    Route("/console/webhooks/{sub_id}/test", webhooks.send_test, methods=["POST"]),
    Route("/console/webhooks/{sub_id}/rotate", webhooks.rotate_secret, methods=["POST"]),
    Route("/console/webhooks/{sub_id}/resend", webhook_jobs.resend, methods=["POST"]),
    Route("/console/webhooks/{sub_id}/jobs/preview", webhook_jobs.preview_job, methods=["POST"]),
    Route("/console/webhooks/{sub_id}/jobs", webhook_jobs.start_job, methods=["POST"]),
    Route("/console/webhooks/{sub_id}/jobs/{job_id}", webhook_jobs.job_page, methods=["GET"]),
    Route("/console/webhooks/{sub_id}/jobs/{job_id}/progress", webhook_jobs.job_progress, methods=["GET"]),
    Route("/console/keys", keys.keys_page, methods=["GET"]),
    Route("/console/keys", keys.create_key, methods=["POST"]),
    Route("/console/keys/{key_id}/revoke", keys.revoke_key, methods=["POST"]),
    Route("/console/actors", actors.actors_page, methods=["GET"]),
    Route("/console/actors/erase", actors.erase_actor, methods=["POST"]),
    Route("/console/{rest:path}", not_found_page, methods=ALL_METHODS),
]
