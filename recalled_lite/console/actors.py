"""Erase an actor (GDPR), behind a typed confirmation: the API's own erasure function."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..api.actors import erase_actor_for
from ..errors import Forbidden, ValidationError
from .guard import Form, action, page
from .render import page as render_page
from .sessions import Viewer


@page("actors:delete")
async def actors_page(request: Request, viewer: Viewer) -> Response:
    return render_page(request, "actors.html", title="Erase an actor", nav="actors", form={})


@action("actors:delete")
async def erase_actor(request: Request, viewer: Viewer, form: Form) -> Response:
    actor_id = form.text("actor_id")
    try:
        if not actor_id:
            raise ValidationError.field("actor_id", "type the id of the actor to erase")
        if form.text("confirm") != actor_id:
            raise ValidationError.field("confirm", "the confirmation does not match the actor id; "
                                                   "type the actor id exactly to confirm")
        _, count, erased_at = await erase_actor_for(
            request.app.state.ctx.store, viewer.key, actor_id, form.optional("organization"),
            request=request)
    except (ValidationError, Forbidden) as exc:
        return render_page(request, "actors.html", status=exc.status, title="Erase an actor", nav="actors",
                           form=form, problem=exc)
    return render_page(request, "actors.html", title="Erase an actor", nav="actors", form={},
                       erased={"actor_id": actor_id, "count": count, "at": erased_at,
                               "organization": form.optional("organization") or viewer.key.organization})
