"""API keys: the list with each key's last use, create (the plaintext shown once), revoke.

Create, list and revoke are the API's own functions (``api/keys.py``), so a key bound to an
organization sees and mints only keys of its organization, never with more scopes.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..api.keys import create_key_for, keys_visible_to, revoke_key_for
from ..auth import ADMIN, SCOPES
from ..errors import Forbidden, ValidationError
from .guard import Form, action, page
from .render import page as render_page, redirect
from .sessions import Viewer

NOTICES = {"revoked": "The key was revoked. Requests with it are refused from now on."}
MAX_NAME = 128


def _keys_context(request: Request, viewer: Viewer) -> dict:
    ctx = request.app.state.ctx
    keys = keys_visible_to(ctx.store, viewer.key)
    keys.sort(key=lambda k: (k.revoked_at is not None, k.id))
    return {"keys": keys, "last_used": {k.id: ctx.key_usage.last_used(k.id, k.last_used_at) for k in keys},
            "scopes": [ADMIN, *sorted(SCOPES)], "title": "API keys", "nav": "keys",
            "notice": NOTICES.get(request.query_params.get("notice", ""))}


@page("keys:manage")
async def keys_page(request: Request, viewer: Viewer) -> Response:
    return render_page(request, "keys.html", **_keys_context(request, viewer))


@action("keys:manage")
async def create_key(request: Request, viewer: Viewer, form: Form) -> Response:
    name = form.text("name")
    try:
        if not name or len(name) > MAX_NAME:
            raise ValidationError.field("name", f"give the key a name of 1 to {MAX_NAME} characters")
        plaintext, record = await create_key_for(
            request.app.state.ctx.store, viewer.key, name, form.all("scopes"), form.optional("organization"),
            request=request)
    except (ValidationError, Forbidden) as exc:
        return render_page(request, "keys.html", status=exc.status, problem=exc, form=form,
                           **_keys_context(request, viewer))
    # Shown in this response only: the page is not cached and the key is stored hashed.
    return render_page(request, "keys.html", status=201, created=record, plaintext=plaintext,
                       **_keys_context(request, viewer))


@action("keys:manage")
async def revoke_key(request: Request, viewer: Viewer, form: Form) -> Response:
    await revoke_key_for(request.app.state.ctx.store, viewer.key, request.path_params["key_id"], request=request)
    return redirect("/console/keys?notice=revoked")
