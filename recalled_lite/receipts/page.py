"""GET /r/<receipt id>.<token>: the public receipt page, and its static script and style.

Server-rendered (Jinja2, autoescaped), no inline script or style, a strict CSP. The page
holds exactly what receipt.js needs to check the proof; no personal field ever reaches it
(the template is only given the names below). Like every route, failures answer the one
error shape: an unknown or forged link is 404 NOT_FOUND, and so is a revoked receipt, with a
message that says it was revoked and when (details.revokedAt).
"""

from __future__ import annotations

from importlib import resources

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..api.common import context, unauthenticated
from ..proofs import inclusion
from ..errors import NotFound
from ..timefmt import format_ms
from . import parse_reference

_HERE = resources.files(__package__)
_templates = jinja2.Environment(
    loader=jinja2.FunctionLoader(lambda name: _HERE.joinpath("templates", name).read_text(encoding="utf-8")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_STATIC = {
    "receipt.js": "text/javascript; charset=utf-8",
    "receipt.css": "text/css; charset=utf-8",
}
_static_cache: dict[str, bytes] = {}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'none'; connect-src 'none'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",  # the link is the credential: never send it onwards
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _page(**values) -> Response:
    html = _templates.get_template("receipt.html").render(**values)
    return Response(html, media_type="text/html; charset=utf-8", headers=_HEADERS)


async def receipt_page(request: Request) -> Response:
    ctx = context(request)
    store = ctx.store
    receipt_id = parse_reference(store, request.path_params["reference"])
    receipt = await store.get_receipt(receipt_id) if receipt_id else None
    if receipt is None:
        raise NotFound("no such receipt: the link is not valid")
    if receipt.revoked_at is not None:
        revoked_at = format_ms(receipt.revoked_at)
        raise NotFound(f"this receipt was revoked on {revoked_at}", {"revokedAt": revoked_at})
    event = await store.get_event_by_seq(receipt.event_seq)
    if event is None:
        raise NotFound("the event of this receipt is no longer stored")
    checkpoint = await ctx.checkpoints.covering(event.seq)
    proof = await inclusion(store, event.seq, event.hash, event.signature, checkpoint)
    keys = await store.signing_keys()
    verifier_key = next((k.verifier_key for k in keys if k.verifier_key.startswith(checkpoint.key_name + "+")), "")
    return _page(
        event_id=event.id, action=event.action, occurred_at=format_ms(event.occurred_at),
        event_hash=event.hash, signature=event.signature,
        leaf_index=proof["leafIndex"], leaf_hash=proof["leafHash"], tree_size=proof["treeSize"],
        proof=proof["proof"], checkpoint=proof["checkpoint"], verifier_key=verifier_key,
    )


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = _STATIC.get(name)
    if media_type is None:
        raise NotFound("no such file")
    data = _static_cache.get(name)
    if data is None:
        data = _static_cache[name] = _HERE.joinpath("static", name).read_bytes()
    return Response(data, media_type=media_type, headers={
        "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


routes = [
    Route("/r/static/{name}", static_file, methods=["GET"]),
    # The page reads the database: it takes from the caller's budget of requests without a
    # key first (abuse.py). Its static files are constant and free.
    Route("/r/{reference}", unauthenticated(receipt_page), methods=["GET"]),
]
