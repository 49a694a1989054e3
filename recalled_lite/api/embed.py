"""Embed tokens and the feed of the official React widget (SPEC §4.8).

``POST /v1/embed/token`` (scope ``embed:write``) mints a signed, short-lived,
read-only token (recalled_lite/embed_tokens.py). ``GET /v1/embed/events?token=``
needs no API key: it serves the token's organization (or, for a token minted
without one by a key bound to none, every organization), newest first, with
``q`` for search, CORS-enabled for browsers. Expired, forged or revoked → 401.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import embed_tokens
from ..auth import write_organization
from ..errors import APIError, Unauthorized, ValidationError
from ..timefmt import format_ms, now_ms
from .common import authorize, context, decode_json, json_response, read_body, unauthenticated
from .reading import cursor_param, limit_param, list_page, search_page

MAX_BODY = 16 * 1024


class EmbedTokenIn(Struct):
    organization: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    ttl_seconds: Annotated[int, Meta(ge=1, le=embed_tokens.MAX_TTL_SECONDS)] | None = None
    scopes: Annotated[list[str], Meta(max_length=8)] | None = None


_decode_token_in = msgspec.json.Decoder(EmbedTokenIn).decode

# The feed is read from other origins (the admin panel embedding the widget).
# No cookies are involved (the token is in the URL), so `*` is safe and simplest.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "x-request-id, ratelimit, ratelimit-policy, retry-after",
    "Cache-Control": "no-store",
}


async def create_token(request: Request):
    ctx = context(request)
    key = await authorize(request, "embed:write")
    body = await read_body(request, MAX_BODY)
    payload = (decode_json(body, _decode_token_in, ctx.config.server.max_json_depth)
               if body.strip() else EmbedTokenIn())
    # A bound key's tokens are narrowed to its organization; another one is 403.
    organization = write_organization(key, payload.organization)
    ttl = payload.ttl_seconds if payload.ttl_seconds is not None else embed_tokens.DEFAULT_TTL_SECONDS
    scopes = list(payload.scopes) if payload.scopes else list(embed_tokens.SCOPES)
    for scope in scopes:
        if scope not in embed_tokens.SCOPES:
            raise ValidationError(
                f"unknown embed scope {scope!r}; embed tokens are read-only: {', '.join(embed_tokens.SCOPES)}",
                {"field": "scopes"},
            )
    issued = now_ms()
    claims = embed_tokens.EmbedClaims(
        v=1, kid=key.id, kp=key.prefix, org=organization, scp=sorted(set(scopes)),
        iat=issued, exp=issued + ttl * 1000,
    )
    token = embed_tokens.mint(ctx.store.derive_key(embed_tokens.PURPOSE), claims)
    return json_response({"data": {
        "token": token,
        "expiresAt": format_ms(claims.exp),
        "scopes": claims.scp,
        "organization": organization,
    }})


def _claims(request: Request) -> embed_tokens.EmbedClaims:
    ctx = context(request)
    try:
        claims = embed_tokens.verify(ctx.store.derive_key(embed_tokens.PURPOSE),
                                     request.query_params.get("token"), now_ms())
    except embed_tokens.TokenError as exc:
        raise Unauthorized(str(exc)) from None
    minted_by = ctx.store.key_by_prefix(claims.kp)
    if minted_by is None or minted_by.id != claims.kid or minted_by.revoked_at is not None:
        raise Unauthorized("embed token revoked: the API key that minted it was revoked")
    return claims


async def embed_events(request: Request):
    """Every request takes from its address's budget of requests without a key, then from the
    token's own (`[abuse] embed_token_*`), and a page with a cursor from the token's pages per
    minute (`embed_pages_per_minute`): a leaked token cannot walk the whole log fast. All of it
    before any database read (the token is checked in memory)."""
    ctx = context(request)
    state = request.scope["state"]
    try:
        ctx.abuse.charge(state, state.get("client"))
        claims = _claims(request)
        store = ctx.store
        cursor = cursor_param(request, ("list", "search"))
        # The signature part names the token (the claims alone could repeat within a millisecond).
        token_key = request.query_params["token"].rpartition(".")[2]
        ctx.abuse.charge_embed_token(state, token_key, paging=cursor is not None)
        cap = ctx.abuse.embed_max_limit
        if limit_param(request) > cap:
            raise ValidationError.field("limit", f"limit must be between 1 and {cap} on the embed feed")
        if request.query_params.get("q") or (cursor is not None and cursor.kind == "search"):
            page = await search_page(request, store, claims.org, cursor)
        else:
            page = await list_page(request, store, claims.org, cursor, allow_tail=False)
    except APIError as exc:
        exc.headers.update(CORS_HEADERS)  # so the widget can read the error message
        raise
    return json_response(page, headers=CORS_HEADERS)


@unauthenticated
async def embed_preflight(request: Request):
    requested = request.headers.get("access-control-request-headers")
    return Response(status_code=204, headers={
        **CORS_HEADERS,
        "Access-Control-Allow-Methods": "GET, OPTIONS",
        "Access-Control-Allow-Headers": requested or "Accept, Content-Type",
        "Access-Control-Max-Age": "600",
    })


routes = [
    Route("/v1/embed/token", create_token, methods=["POST"]),
    Route("/v1/embed/events", embed_events, methods=["GET"]),
    Route("/v1/embed/events", embed_preflight, methods=["OPTIONS"]),
]
