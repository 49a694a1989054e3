"""Server-rendered HTML: the Jinja environment, its filters, and the headers every console
response carries (a CSP without inline scripts, no framing, same-origin referrers)."""

from __future__ import annotations

import json
from typing import Any, Iterable
from urllib.parse import urlencode

import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ..timefmt import format_ms
from .assets import asset_url

# No inline script or style anywhere: every script and stylesheet is a file under
# /console/static/, so 'self' is all the policy allows.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
NO_STORE = {"Cache-Control": "no-store"}


def with_security_headers(response: Response, *, cache: bool = False) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    return response


# -- filters ------------------------------------------------------------------------------


def _iso(value: int | str) -> str:
    return format_ms(value) if isinstance(value, int) else value


def when(value: int | str | None) -> Markup:
    """A timestamp as UTC text; console.js rewrites it to local time when asked."""
    if value is None:
        return Markup('<span class="muted">never</span>')
    iso = _iso(value)
    text = f"{iso[:10]} {iso[11:19]} UTC"
    return Markup('<time class="ts" datetime="{0}" title="{0}">{1}</time>').format(iso, text)


def _json_text(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, msgspec.Raw):
        value = bytes(value)
    if isinstance(value, (bytes, str)):
        return json.loads(value)
    return value


def pretty_json(value: Any) -> str:
    decoded = _json_text(value)
    return "" if decoded is None else json.dumps(decoded, indent=2, ensure_ascii=False, sort_keys=False)


def target_list(value: Any) -> list[str]:
    decoded = _json_text(value) or []
    return [f"{t.get('type')}:{t.get('id')}" for t in decoded if isinstance(t, dict)]


def or_dash(value: object) -> object:
    """The value, or a muted dash for nothing (so an empty field does not look like a glitch)."""
    return Markup('<span class="muted">—</span>') if value in (None, "") else value


def number(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,}"


def url_with(path: str, params: dict[str, Any] | Iterable[tuple[str, Any]] = (), **more: Any) -> str:
    """`path?query` from the non-empty values (filters live in the URL)."""
    items = list(params.items()) if isinstance(params, dict) else list(params)
    items += list(more.items())
    query = urlencode([(k, v) for k, v in items if v not in (None, "")])
    return f"{path}?{query}" if query else path


def sentence(error: Exception | str) -> str:
    """An error message as a sentence for people: capital first letter, final full stop."""
    text = str(getattr(error, "message", error)).strip()
    if not text:
        return "Something went wrong."
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def short_hash(value: str | None, keep: int = 12) -> str:
    if not value:
        return "—"
    algo, _, hexdigits = value.partition(":")
    return f"{algo}:{hexdigits[:keep]}…" if hexdigits else value[:keep]


_env = Environment(
    loader=PackageLoader("recalled_lite.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,  # templates ship with the package; no stat() per render
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(when=when, pretty_json=pretty_json, targets=target_list, number=number,
                    short_hash=short_hash, sentence=sentence, or_dash=or_dash)
_env.globals.update(asset=asset_url, url_with=url_with)


def render_text(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)


def page(request: Request, template: str, *, status: int = 200, headers: dict[str, str] | None = None,
         **context: Any) -> HTMLResponse:
    context.setdefault("viewer", getattr(request.state, "viewer", None))
    context.setdefault("path", request.url.path)
    body = _env.get_template(template).render(request=request, **context)
    return with_security_headers(HTMLResponse(body, status_code=status, headers=headers))  # type: ignore[return-value]


def redirect(location: str, *, headers: dict[str, str] | None = None) -> Response:
    return with_security_headers(RedirectResponse(location, status_code=303, headers=headers))


def json_for_script(content: Any, status: int = 200) -> Response:
    """Small JSON answers for console.js (tail, progress); never shown to people as is."""
    return with_security_headers(JSONResponse(content, status_code=status))


__all__ = ["escape", "page", "redirect", "json_for_script", "render_text", "sentence", "with_security_headers",
           "when"]
