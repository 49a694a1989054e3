"""Who may see or do what in the console: the same walls as the API, from a session.

Every console endpoint is wrapped by one of three functions, which also tag it (the route
auth matrix test reads the tags from the router):

* ``page(scope)``   a GET page. Signed out: 303 to the sign-in page (and back after).
* ``feed(scope)``   a GET fetched by console.js (live tail, progress). Signed out: 401.
* ``action(scope)`` a POST form. Signed out: 401; no valid CSRF token: 403.

Signed in, the session's key passes ``api.common.admit`` (its rate limit, the note of its
use) and, when the endpoint names one, ``require_scope``: a key without the scope gets a
403 page saying which scope is missing. The handler then calls the API's own functions with
that key, so the organization wall is the API's. Any API error ends as a page that says,
in a sentence, what went wrong (never the JSON error body).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import Response

from ..api.common import admit, read_raw_body
from ..auth import require_scope
from ..errors import APIError, Forbidden, InternalError, StorageError, StorageUnavailable, Unauthorized, Unavailable
from .render import json_for_script, page as render_page, redirect
from .service import console_service
from .sessions import SESSION_COOKIE, Viewer, csrf_token, tokens_match

log = logging.getLogger("recalled_lite.console")
FORM_LIMIT = 64 * 1024
Handler = Callable[..., Awaitable[Response]]


class Form(dict):
    """The fields of a urlencoded form (the last value of a repeated name; `all` for lists)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs

    def text(self, name: str) -> str:
        return self.get(name, "").strip()

    def optional(self, name: str) -> str | None:
        return self.text(name) or None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]


async def read_form(request: Request) -> Form:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_raw_body(request, FORM_LIMIT)
    if content_type != "application/x-www-form-urlencoded" and body:
        raise _media_type_error()
    try:
        return Form(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200))
    except (UnicodeDecodeError, ValueError):
        raise _bad_form() from None


def _media_type_error() -> APIError:
    error = APIError("the form must be sent as application/x-www-form-urlencoded", code="UNSUPPORTED_MEDIA_TYPE")
    error.status = 415
    return error


def _bad_form() -> APIError:
    error = APIError("the form could not be read; reload the page and try again", code="VALIDATION_ERROR")
    error.status = 400
    return error


async def current_viewer(request: Request, *, charge: bool = True) -> Viewer | None:
    """The signed-in viewer, or None: no cookie, unknown or idle session, revoked key.

    A request without a live session is one without a valid key: it takes a token from its
    address's budget (abuse.py; not when `charge` is False, for a route that took one already),
    and a cookie this process does not know is looked up only while that budget lasts."""
    ctx = request.app.state.ctx
    state = request.scope["state"]
    viewer = await _viewer(request, ctx, state)
    if viewer is None and charge:
        ctx.abuse.charge(state, state.get("client"))
    return viewer


async def _viewer(request: Request, ctx: Any, state: dict[str, Any]) -> Viewer | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 200:
        return None
    service = console_service(request)
    assert service.book is not None
    if not service.book.knows(token):
        ctx.abuse.refuse_over_budget(state.get("client"))  # before a database read
    session = await service.book.find(token)
    if session is None:
        return None
    key = ctx.store.key_by_id(session.key_id)
    if key is None or key.revoked_at is not None:
        await service.book.close(session.token_hash)
        return None
    service.book.touch(session)
    viewer = Viewer(key, session, csrf_token(service.csrf_key, session.token_hash))
    request.state.viewer = viewer
    admit(ctx, key, None, state)  # rate limit and last use, as for an API request
    return viewer


def sign_in_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/console/login?next=" + quote(target, safe="")


def error_page(request: Request, exc: APIError) -> Response:
    status = exc.status if 400 <= exc.status <= 599 else 500
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("retry-after", "allow")}
    missing_scope = (exc.details or {}).get("scope") if isinstance(exc, Forbidden) else None
    return render_page(request, "error.html", status=status, headers=headers, error=exc,
                       missing_scope=missing_scope, title=_title_for(status))


def _title_for(status: int) -> str:
    return {400: "That did not work", 401: "Signed out", 403: "Not allowed", 404: "Not found",
            405: "Not allowed here", 409: "Conflict", 413: "Too large", 415: "Unsupported form",
            429: "Slow down", 503: "Unavailable"}.get(status, "Something went wrong")


def _as_api_error(request: Request, exc: Exception) -> APIError:
    """Any failure as an APIError for the page; unexpected ones are logged with the request id."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, StorageUnavailable):
        return Unavailable(f"the database is busy or full ({exc}); try again in a moment",
                           retry_after=exc.retry_after)
    request_id = request.scope.get("state", {}).get("request_id")
    log.error("console request failed", exc_info=exc, extra={"fields": {"request_id": request_id}})
    if isinstance(exc, StorageError):
        return InternalError(f"the database failed; the server log has the details (request {request_id})",
                             code="DATABASE_ERROR")
    return InternalError(f"something went wrong on the server; the log has the details (request {request_id})")


async def _run(request: Request, viewer: Viewer, scope: str | None, handler: Handler, *args: Any) -> Response:
    try:
        if scope is not None:
            require_scope(viewer.key, scope)
        return await handler(request, viewer, *args)
    except Exception as exc:  # a page, never the API's JSON body
        return error_page(request, _as_api_error(request, exc))


def _tag(endpoint: Any, kind: str, scope: str | None) -> Any:
    endpoint.console_kind = kind
    endpoint.console_scope = scope
    return endpoint


def public(handler: Handler, *, free: bool = False) -> Handler:
    """An endpoint open to anyone (sign-in, static files, the 404 page); failures are pages too.
    Unless `free` (constant static files), each request takes a token from its address's budget
    of requests without a valid key first (abuse.py): 429 page when none is left."""
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            if not free:
                state = request.scope["state"]
                request.app.state.ctx.abuse.charge(state, state.get("client"))
            return await handler(request)
        except Exception as exc:
            return error_page(request, _as_api_error(request, exc))
    return _tag(endpoint, "public", None)


def page(scope: str | None = None) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                viewer = await current_viewer(request)
            except Exception as exc:  # e.g. the key's rate limit
                return error_page(request, _as_api_error(request, exc))
            if viewer is None:
                return redirect(sign_in_url(request))
            return await _run(request, viewer, scope, handler)
        return _tag(endpoint, "page", scope)
    return wrap


def feed(scope: str | None = None) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                viewer = await current_viewer(request)
                if viewer is None:
                    raise Unauthorized("your console session has ended; sign in again")
                if scope is not None:
                    require_scope(viewer.key, scope)
                return await handler(request, viewer)
            except Exception as exc:
                error = _as_api_error(request, exc)
                return json_for_script(error.body(), error.status)
        return _tag(endpoint, "feed", scope)
    return wrap


def action(scope: str | None = None) -> Callable[[Handler], Handler]:
    """A POST: session, then the CSRF token (403 without it), then the scope, then `handler`
    with the parsed form."""
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                viewer = await current_viewer(request)
                if viewer is None:
                    raise Unauthorized("your console session has ended; sign in again, then repeat "
                                       "what you were doing")
                form = await read_form(request)
                if not tokens_match(viewer.csrf, form.get("csrf")):
                    raise Forbidden("this form has expired or did not come from this console; reload "
                                    "the page and send it again", {"field": "csrf"})
            except Exception as exc:
                return error_page(request, _as_api_error(request, exc))
            return await _run(request, viewer, scope, handler, form)
        return _tag(endpoint, "action", scope)
    return wrap
