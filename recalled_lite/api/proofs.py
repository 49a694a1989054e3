"""Checkpoints, proofs and tiles (docs/integrity.md §7-§9; docs/api.md#proofs).

Public (no key): the latest checkpoint, its history, the verifier keys, consistency proofs
and the C2SP tiles: everything a witness or a generic tlog client needs, and none of it holds
an event's fields (leaves are hashes). An event's inclusion proof names the event, so it
takes `events:read` and the organization wall.
"""

from __future__ import annotations

import base64
import binascii
import struct

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..proofs import checkpoint_out, consistency, inclusion
from ..errors import NotFound, Unavailable, ValidationError
from ..integrity.merkle import HASH_SIZE
from ..integrity.tiles import ENTRIES, FULL_TILE_BYTES, TILE_WIDTH, parse_tile_path
from ..timefmt import format_ms
from .common import MAX_SQL_INT, authorize, context, int_param, json_response, unauthenticated

_TEXT = "text/plain; charset=utf-8"
_NO_STORE = {"Cache-Control": "no-cache"}
# A tile or bundle at a given path never changes (a partial one has its width in the path).
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
_CURSOR = struct.Struct(">BBQ")  # version 1, kind "K", last checkpoint id


def _latest(request: Request):
    latest = context(request).store.latest_checkpoint
    if latest is None:
        raise Unavailable("no checkpoint has been signed yet; retry in a moment", retry_after=1)
    return latest


async def get_checkpoint(request: Request) -> Response:
    """The latest checkpoint as a signed note (also at /checkpoint, the tlog-tiles location)."""
    return Response(_latest(request).note, media_type=_TEXT, headers=_NO_STORE)


async def post_checkpoint(request: Request) -> Response:
    ctx = context(request)
    await authorize(request, "events:write")
    record, created = await ctx.checkpoints.make_now()
    # 200 either way; `created` says whether a new one was signed (the tree had grown).
    return json_response({"data": {**checkpoint_out(record), "created": created}})


async def get_keys(request: Request) -> Response:
    keys = await context(request).store.signing_keys()
    current = next((k.verifier_key for k in keys if k.retired_at is None), None)
    return json_response({"data": {
        "current": current,
        "keys": [{"verifierKey": k.verifier_key, "createdAt": format_ms(k.created_at),
                  "retiredAt": format_ms(k.retired_at) if k.retired_at is not None else None} for k in keys],
    }}, headers=_NO_STORE)


def _encode_cursor(checkpoint_id: int) -> str:
    return base64.urlsafe_b64encode(_CURSOR.pack(1, ord("K"), checkpoint_id)).rstrip(b"=").decode()


def _decode_cursor(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, kind, checkpoint_id = _CURSOR.unpack(raw)
    except (binascii.Error, ValueError, struct.error):
        raise ValidationError.field("cursor", "malformed cursor") from None
    if version != 1 or kind != ord("K") or checkpoint_id > MAX_SQL_INT or _encode_cursor(checkpoint_id) != token:
        raise ValidationError.field("cursor", "malformed cursor")
    return checkpoint_id


async def list_checkpoints(request: Request) -> Response:
    """GET /v1/checkpoints?after=N&limit=&cursor=: every checkpoint with treeSize > N, oldest first."""
    ctx = context(request)
    after = int_param(request, "after", minimum=0)
    limit = int_param(request, "limit", minimum=1, maximum=200, default=50)
    cursor = request.query_params.get("cursor")
    after_id = _decode_cursor(cursor) if cursor else 0
    rows, more = await ctx.store.checkpoints_page(-1 if after is None else after, after_id, limit)
    return json_response({"data": [checkpoint_out(r) for r in rows],
                          "nextCursor": _encode_cursor(rows[-1].id) if more else None})


async def get_consistency(request: Request) -> Response:
    ctx = context(request)
    latest = _latest(request)
    old = int_param(request, "from", minimum=0)
    if old is None:
        raise ValidationError.field("from", "from (the tree size you hold) is required")
    new = int_param(request, "to", minimum=0, default=latest.tree_size)
    if new > latest.tree_size:
        raise ValidationError("to is beyond the latest checkpoint", {"field": "to", "latest": latest.tree_size})
    if old > new:
        raise ValidationError("from must be <= to", {"field": "from"})
    proof = await consistency(ctx.store, old, new)
    return json_response({"data": {"from": old, "to": new, "proof": proof}})


async def get_event_proof(request: Request) -> Response:
    ctx = context(request)
    key = await authorize(request, "events:read")
    record = await ctx.store.get_event(request.path_params["event_id"], key.organization)
    if record is None:
        raise NotFound("no event with that id")
    size = int_param(request, "tree_size", minimum=1)
    if size is None:
        checkpoint = await ctx.checkpoints.covering(record.seq)
    else:
        if size < record.seq:
            raise ValidationError(f"the event (leaf {record.seq - 1}) is not in a tree of size {size}",
                                  {"field": "tree_size", "leafIndex": record.seq - 1})
        checkpoint = await ctx.store.checkpoint_with_size(size)
        if checkpoint is None:
            raise NotFound("no checkpoint of that tree size; list them with GET /v1/checkpoints",
                           {"field": "tree_size"})
    body = await inclusion(ctx.store, record.seq, record.hash, record.signature, checkpoint)
    return json_response({"data": body})


async def get_tile(request: Request) -> Response:
    """C2SP tlog-tiles: tile/<L>/<N>[.p/<W>] and tile/entries/<N>[.p/<W>]."""
    ref = parse_tile_path(request.path_params["tile_path"])
    if ref is None:
        raise NotFound("not a tile path (tile/<L>/<N>[.p/<W>], see C2SP tlog-tiles)")
    store = context(request).store
    if ref.level == ENTRIES:
        rows = await store.leaf_entries(ref.index * TILE_WIDTH + 1, ref.width)
        if len(rows) != ref.width:
            raise NotFound("no such entry bundle (yet)")
        body = bytearray()
        for event_hash, signature in rows:
            entry = f"{event_hash}\n{signature}".encode("ascii")
            body += len(entry).to_bytes(2, "big") + entry
        return Response(bytes(body), media_type="application/octet-stream", headers=_IMMUTABLE)
    stored = await store.with_tiles(lambda read: read(ref.level, ref.index))
    size = ref.width * HASH_SIZE
    if stored is None or len(stored) < size or (ref.width == TILE_WIDTH and len(stored) != FULL_TILE_BYTES):
        raise NotFound("no such tile (yet)")
    return Response(stored[:size], media_type="application/octet-stream", headers=_IMMUTABLE)


routes = [
    # The public ones take from their caller's budget of requests without a key (abuse.py).
    Route("/v1/checkpoint", unauthenticated(get_checkpoint), methods=["GET"]),
    Route("/v1/checkpoint", post_checkpoint, methods=["POST"]),
    Route("/v1/checkpoint/key", unauthenticated(get_keys), methods=["GET"]),
    Route("/v1/checkpoint/consistency", unauthenticated(get_consistency), methods=["GET"]),
    Route("/v1/checkpoints", unauthenticated(list_checkpoints), methods=["GET"]),
    Route("/v1/events/{event_id}/proof", get_event_proof, methods=["GET"]),
    Route("/checkpoint", unauthenticated(get_checkpoint), methods=["GET"]),
    Route("/tile/{tile_path:path}", unauthenticated(get_tile), methods=["GET"]),
]
