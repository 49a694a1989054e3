"""The chain: its head, the last whole-chain verification, and a new one with its progress."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..api.events import require_unbound_for_chain
from .guard import action, feed, page
from .render import json_for_script, page as render_page, redirect
from .service import console_service
from .sessions import Viewer


@page("events:read")
async def chain_page(request: Request, viewer: Viewer) -> Response:
    require_unbound_for_chain(viewer.key)
    store = request.app.state.ctx.store
    verification = console_service(request).verification
    assert verification is not None
    head_seq, head_hash = await store.chain_head()
    run = verification.current
    return render_page(request, "chain.html", title="Chain", nav="chain", head_seq=head_seq, head_hash=head_hash,
                       last=await store.last_chain_verification(),
                       run=run.progress() if run is not None else None)


@action("events:read")
async def start_verification(request: Request, viewer: Viewer, form: dict) -> Response:
    verification = console_service(request).verification
    assert verification is not None
    await verification.start(viewer.key)
    return redirect("/console/chain")


@feed("events:read")
async def verification_progress(request: Request, viewer: Viewer) -> Response:
    require_unbound_for_chain(viewer.key)
    verification = console_service(request).verification
    assert verification is not None
    run = verification.current
    return json_for_script(run.progress() if run is not None else {"running": False})
