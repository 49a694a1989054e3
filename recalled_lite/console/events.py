"""Events: the list (every filter and the search language, in the URL), its live tail, its
downloads, and one event with its chain fields, its verification and its webhook attempts.

Everything goes through the API's own read functions (``api/reading.py``,
``api/exports.py``, ``api/attempts.py``) with the session's key, so filters, cursors and
the organization wall behave exactly as ``GET /v1/events``, ``/search`` and ``/exports``.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from ..api.attempts import event_attempt_rows
from ..api.events import verify_chain_for
from ..api.exports import export_response
from ..api.reading import EventPage, cursor_param, filters_from_params, list_page, search_page
from ..api.subscriptions import delivery
from ..errors import APIError, Forbidden, NotFound, ValidationError
from ..exporting import FORMATS
from .guard import feed, page
from .render import json_for_script, page as render_page, render_text, sentence
from .sessions import Viewer
from .webhooks import wired_attempts

FILTER_PARAMS = ("organization", "actor_id", "action", "target_type", "target_id", "date_from", "date_to")
# The form's labels, for messages that name a query parameter ("date_from: ..." -> "From: ...").
FIELD_LABELS = {"organization": "Organization", "actor_id": "Actor id", "action": "Action",
                "target_type": "Target type", "target_id": "Target id", "date_from": "From", "date_to": "To",
                "q": "Search", "cursor": "Page link", "limit": "Page size"}
TAIL_ROWS_KEPT = 250  # console.js drops the oldest rows past this


def current_filters(request: Request) -> dict[str, str]:
    """The list filters and search text of this URL, as given (for the form and the links)."""
    params = request.query_params
    return {name: params[name] for name in (*FILTER_PARAMS, "q") if params.get(name)}


# Only names no one would write in prose or in a search query (those with an underscore).
_PARAM_NAMES = re.compile(r"\b(" + "|".join(name for name in FIELD_LABELS if "_" in name) + r")\b")


def labelled(exc: ValidationError) -> str:
    """The message in the form's words: parameter names become their fields' labels."""
    field = (exc.details or {}).get("field", "")
    message = _PARAM_NAMES.sub(lambda m: FIELD_LABELS[m.group(1)], exc.message)
    label = FIELD_LABELS.get(field)
    if label and not message.startswith(label):
        message = f"{label}: {message}"
    return message


@page("events:read")
async def events_page(request: Request, viewer: Viewer) -> Response:
    store = request.app.state.ctx.store
    wall = viewer.key.organization
    filters = current_filters(request)
    searching = bool(filters.get("q"))
    problem = None
    try:
        if searching:
            result = await search_page(request, store, wall, cursor_param(request, ("search",)))
        else:
            result = await list_page(request, store, wall, cursor_param(request, ("list",)), allow_tail=False)
    except ValidationError as exc:
        result, problem = EventPage([], None), sentence(labelled(exc))
    walled_out = wall is not None and filters.get("organization") not in (None, wall)
    first_page = not request.query_params.get("cursor")
    # The tail starts after the newest event readers can see now (never one still uncommitted).
    tail_after = (await store.chain_head())[0] if first_page and not searching and problem is None else None
    list_filters = {k: v for k, v in filters.items() if k != "q"}
    return render_page(
        request, "events.html", status=400 if problem else 200, title="Events", nav="events",
        events=result.data, next_cursor=result.next_cursor, filters=filters, list_filters=list_filters,
        problem=problem, walled_out=walled_out, searching=searching, first_page=first_page, tail_after=tail_after,
        tail_keep=TAIL_ROWS_KEPT, formats=FORMATS, can_export=viewer.can("exports:read"))


@feed("events:read")
async def events_tail(request: Request, viewer: Viewer) -> Response:
    """Events after `after_seq` that pass the URL's filters, oldest first (console.js polls it)."""
    if not request.query_params.get("after_seq"):
        raise ValidationError.field("after_seq", "after_seq is required")
    store = request.app.state.ctx.store
    result = await list_page(request, store, viewer.key.organization, None)
    last = result.data[-1].seq if result.data else int(request.query_params["after_seq"])
    html = render_text("_event_rows.html", events=list(reversed(result.data)))
    return json_for_script({"html": html, "lastSeq": last, "count": len(result.data),
                            "more": result.next_cursor is not None})


@page("exports:read")
async def events_download(request: Request, viewer: Viewer) -> Response:
    """The current filters as CSV, NDJSON or JSON, streamed by the export code itself."""
    return await export_response(request.app.state.ctx, viewer.key, request.query_params.get("format") or "csv",
                                 filters_from_params(request))


@page("events:read")
async def event_page(request: Request, viewer: Viewer) -> Response:
    ctx = request.app.state.ctx
    event_id = request.path_params["event_id"]
    record = await ctx.store.get_event_chain_record(event_id, viewer.key.organization)
    if record is None:
        raise NotFound("there is no event with that id (or it belongs to an organization this key cannot see)")
    verification = verify_problem = None
    if request.query_params.get("verify"):
        try:
            verification = await verify_chain_for(ctx.store, viewer.key, record.seq, record.seq)
        except Forbidden as exc:
            verify_problem = sentence(exc)
    attempts, attempts_next, attempts_problem = [], None, None
    if viewer.can("webhooks:manage"):
        try:
            attempts, attempts_next = wired_attempts(
                *await event_attempt_rows(request, delivery(request), viewer.key, event_id))
        except APIError as exc:
            attempts_problem = sentence(exc)
    return render_page(
        request, "event.html", title=f"Event {record.id}", nav="events", event=record,
        verification=verification, verify_problem=verify_problem, attempts=attempts,
        attempts_next=attempts_next, attempts_problem=attempts_problem,
        can_webhooks=viewer.can("webhooks:manage"))
