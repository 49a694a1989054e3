"""GET / DELETE /v1/events/{id}/receipt: a public, verifiable receipt for one event.

Casing is mixed on purpose, like DELETE /v1/actors: `view_url` is the name recalled.dev
clients read, so it stays snake_case; every other key is camelCase like the rest of the
recalled surface. Scope `events:read` for both (whoever may read the event may publish its
receipt and withdraw it), behind the organization wall (another organization's event is 404).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from ..proofs import inclusion
from ..errors import NotFound
from ..ids import new_id
from ..receipts import view_path
from ..timefmt import format_ms, now_ms
from .common import authorize, context, json_response


def _base_url(request: Request) -> str:
    configured = context(request).config.receipts.base_url
    return (configured or str(request.base_url)).rstrip("/")


async def _event(request: Request):
    ctx = context(request)
    key = await authorize(request, "events:read")
    record = await ctx.store.get_event(request.path_params["event_id"], key.organization)
    if record is None:
        raise NotFound("no event with that id")
    return record


async def get_receipt(request: Request):
    ctx = context(request)
    event = await _event(request)
    checkpoint = await ctx.checkpoints.covering(event.seq)
    receipt = await ctx.store.receipt_for_event(event.seq, new_id("rcpt"), now_ms())
    proof = await inclusion(ctx.store, event.seq, event.hash, event.signature, checkpoint)
    return json_response({"data": {
        "id": receipt.id,
        "eventId": event.id,
        "view_url": _base_url(request) + view_path(ctx.store, receipt.id),
        "hash": event.hash,
        "signature": event.signature,
        **proof,
        "createdAt": format_ms(receipt.created_at),
    }})


async def revoke_receipt(request: Request):
    ctx = context(request)
    event = await _event(request)
    revoked_at = now_ms()
    count = await ctx.store.revoke_receipts(event.seq, revoked_at)
    return json_response({"data": {"eventId": event.id, "revokedReceipts": count,
                                   "revokedAt": format_ms(revoked_at) if count else None}})


routes = [
    Route("/v1/events/{event_id}/receipt", get_receipt, methods=["GET"]),
    Route("/v1/events/{event_id}/receipt", revoke_receipt, methods=["DELETE"]),
]
