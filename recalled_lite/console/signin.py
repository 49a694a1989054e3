"""Signing in and out: with an API key, or with a one-time link from `recalled-lite console-link`.

The key is read from the form once, checked exactly as the API checks a bearer key
(``api.common.authenticate``), and forgotten: the browser gets only a session cookie, and
the answer is a redirect, so the key is not in any page, history entry or resubmission.

Before sign-in there is no session to bind a CSRF token to, so the sign-in page sets a
random ``recalled_console_login`` cookie (SameSite=Strict) and the form carries an HMAC of
it: a form posted from another site arrives without the cookie and is refused (403).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..api.common import admit, authenticate
from ..auth import key_prefix
from ..errors import Forbidden, RateLimited, Unauthorized
from ..timefmt import now_ms
from .guard import action, current_viewer, error_page, public, read_form
from .render import page, redirect
from .service import ConsoleService, console_service
from .sessions import (
    LINK_MINUTES, LOGIN_COOKIE, SESSION_COOKIE, Viewer, cookie_header, login_csrf_token, new_token, token_hash,
    tokens_match, wants_secure_cookie,
)

MAX_KEY_CHARS = 200


def safe_next(target: str | None) -> str:
    """Only a console path of this server (never //host or a scheme): no open redirect."""
    if not target or not target.startswith("/console/") or "\\" in target or target.startswith("/console//"):
        return "/console/"
    return target


def _secure(request: Request, service: ConsoleService) -> bool:
    return wants_secure_cookie(request.scope, service.config.secure_cookies)


def _login_csrf(request: Request, service: ConsoleService) -> tuple[str, dict[str, str]]:
    """The sign-in form's CSRF token, and the headers that set its cookie when it is new."""
    cookie = request.cookies.get(LOGIN_COOKIE)
    headers = {}
    if not cookie or len(cookie) > 100:
        cookie = new_token()
        headers["Set-Cookie"] = cookie_header(LOGIN_COOKIE, cookie, secure=_secure(request, service))
    return login_csrf_token(service.csrf_key, cookie), headers


def _login_form(request: Request, service: ConsoleService, *, status: int = 200, message: str | None = None,
                notice: str | None = None, extra_headers: dict[str, str] | None = None) -> Response:
    csrf, headers = _login_csrf(request, service)
    headers.update(extra_headers or {})
    return page(request, "login.html", status=status, headers=headers, viewer=None, csrf=csrf,
                next=safe_next(request.query_params.get("next")), message=message, signin_notice=notice,
                title="Sign in")


def _check_login_form(request: Request, service: ConsoleService, given: str | None) -> None:
    cookie = request.cookies.get(LOGIN_COOKIE)
    if not cookie or not tokens_match(login_csrf_token(service.csrf_key, cookie), given):
        raise Forbidden("this sign-in form has expired or did not come from this console; reload the "
                        "page and try again", {"field": "csrf"})


async def _signed_in(request: Request, service: ConsoleService, key_id: str, target: str) -> Response:
    assert service.book is not None
    store = request.app.state.ctx.store
    key = store.key_by_id(key_id)
    if key is None:
        await store.refresh_keys()  # created a moment ago by the CLI
        key = store.key_by_id(key_id)
    if key is None or key.revoked_at is not None:
        raise Unauthorized("the key behind this sign-in has been revoked", code="REVOKED_API_KEY")
    previous = request.cookies.get(SESSION_COOKIE)
    if previous and len(previous) <= 200:
        await service.book.close(token_hash(previous))  # one browser, one session
    token = await service.book.open(key)
    secure = _secure(request, service)
    response = redirect(safe_next(target))
    response.headers.append("Set-Cookie", cookie_header(SESSION_COOKIE, token, secure=secure))
    response.headers.append("Set-Cookie", cookie_header(LOGIN_COOKIE, "", secure=secure, max_age=0))
    return response


@public
async def login_page(request: Request) -> Response:
    service = console_service(request)
    if await current_viewer(request, charge=False) is not None:  # `public` took a token already
        return redirect(safe_next(request.query_params.get("next")))
    notice = "You are signed out." if request.query_params.get("signed_out") else None
    return _login_form(request, service, notice=notice)


@public
async def sign_in(request: Request) -> Response:
    service = console_service(request)
    form = await read_form(request)
    _check_login_form(request, service, form.get("csrf"))
    # The client address as the access log has it (a trusted proxy's X-Forwarded-For honoured).
    address = request.scope["state"].get("client") or ""
    limiter = service.sign_in_limiter
    wait = limiter.retry_after(address)
    if wait is not None:
        # Locked out: the key is not even looked at, right or wrong, so guessing gains nothing.
        return _locked_out(request, service, 429, wait, "Too many failed sign-ins from this address; ")
    plaintext = form.text("key")
    ctx = request.app.state.ctx
    try:
        if not plaintext:
            raise Unauthorized("paste an API key to sign in")
        if len(plaintext) > MAX_KEY_CHARS:
            raise Unauthorized("that is too long to be an API key")
        key = await authenticate(ctx, plaintext, key_prefix(plaintext))
        admit(ctx, key, None, request.scope["state"])
    except RateLimited as exc:
        return error_page(request, exc)
    except Unauthorized as exc:
        locked = limiter.failed(address)
        if locked is not None:
            return _locked_out(request, service, 401, locked,
                               f"{_sign_in_problem(exc)} Too many failed sign-ins from this address: ")
        return _login_form(request, service, status=401, message=_sign_in_problem(exc))
    limiter.succeeded(address)
    return await _signed_in(request, service, key.id, form.get("next", ""))


def _locked_out(request: Request, service: ConsoleService, status: int, wait: float, lead: str) -> Response:
    """The sign-in form again, saying how long this address must wait (Retry-After too)."""
    seconds = max(1, int(wait + 0.999))
    return _login_form(request, service, status=status, extra_headers={"Retry-After": str(seconds)},
                       message=f"{lead}try again in {seconds} second{'s' if seconds != 1 else ''}.")


def _sign_in_problem(exc: Unauthorized) -> str:
    if exc.code == "REVOKED_API_KEY":
        return "This key has been revoked. Sign in with another key."
    if exc.code == "INVALID_API_KEY":
        return "This key was not recognised. Check that you copied all of it."
    if exc.message.startswith("malformed"):
        return "That does not look like an API key: keys start with rec_live_ or rec_test_."
    return exc.message[:1].upper() + exc.message[1:] + "."


@action()
async def sign_out(request: Request, viewer: Viewer, form: dict) -> Response:
    service = console_service(request)
    assert service.book is not None
    await service.book.close(viewer.session.token_hash)
    response = redirect("/console/login?signed_out=1")
    response.headers.append("Set-Cookie", cookie_header(SESSION_COOKIE, "", secure=_secure(request, service),
                                                        max_age=0))
    return response


async def _live_link(request: Request, token: str | None, *, consume: bool) -> str | None:
    if not token or len(token) > 200:
        return None
    return await request.app.state.ctx.store.redeem_console_link(token_hash(token), now_ms(), consume=consume)


_LINK_GONE = (f"This sign-in link cannot be used: it was used already, or it is older than {LINK_MINUTES} "
              "minutes. Print a new one with: recalled-lite console-link")


@public
async def link_page(request: Request) -> Response:
    """The link's landing page: a button, so that link previews and prefetchers do not use it up."""
    service = console_service(request)
    token = request.query_params.get("token")
    key_id = await _live_link(request, token, consume=False)
    key = request.app.state.ctx.store.key_by_id(key_id) if key_id else None
    if key is None or key.revoked_at is not None:
        return page(request, "link.html", status=404, viewer=None, problem=_LINK_GONE, title="Sign-in link")
    csrf, headers = _login_csrf(request, service)
    return page(request, "link.html", headers=headers, viewer=None, key=key, token=token, csrf=csrf,
                title="Sign-in link")


@public
async def use_link(request: Request) -> Response:
    service = console_service(request)
    form = await read_form(request)
    _check_login_form(request, service, form.get("csrf"))
    key_id = await _live_link(request, form.get("token"), consume=True)
    if key_id is None:
        return page(request, "link.html", status=404, viewer=None, problem=_LINK_GONE, title="Sign-in link")
    return await _signed_in(request, service, key_id, "/console/")
