"""GET /v1/exports?format=csv|json|ndjson (SPEC §4.7): the log, streamed, ending with the chain head.

The export is a snapshot up to the chain head at its start: events are read in
ascending seq, one window of seqs at a time (storage/sqlite/reads.py), rendered on
the reader thread and sent as they come, so memory does not grow with the export.
The formats are described in recalled_lite/exporting.py and docs/api.md.
"""

from __future__ import annotations

import time
from typing import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from ..errors import ValidationError
from ..exporting import FORMATS, MEDIA_TYPES, Renderer
from ..storage.base import ApiKeyRecord
from .common import AppContext, authorize, context
from .reading import CursorFilters, filters_from_params, to_list_filters, wall_allows


async def export_events(request: Request):
    ctx = context(request)
    key = await authorize(request, "exports:read")
    return await export_response(ctx, key, request.query_params.get("format") or "csv",
                                 filters_from_params(request))


async def export_response(ctx: AppContext, key: ApiKeyRecord, fmt: str, given: CursorFilters) -> StreamingResponse:
    """The export of `given` under `key`'s organization wall (shared by the API and the console)."""
    store = ctx.store
    if fmt not in FORMATS:
        raise ValidationError.field("format", f"format must be one of {', '.join(FORMATS)}")
    # Cut at a checkpoint signed now, so the export's head is a signed tree head.
    checkpoint, _ = await ctx.checkpoints.make_now()
    head_seq = checkpoint.tree_size
    head_hash = (await store.get_event_by_seq(head_seq)).hash if head_seq else None
    renderer = Renderer(fmt, store.project_id)
    visible = wall_allows(key.organization, given)
    filters = to_list_filters(given)

    async def body() -> AsyncIterator[bytes]:
        with ctx.bulk_work.job():  # the heap is trimmed once the last export ends
            yield renderer.header()
            after: int | None = 0
            while visible and after is not None and after < head_seq:
                data, after = await store.export_chunk(filters, key.organization, after, head_seq, renderer.chunk)
                if data:
                    yield data
            yield renderer.footer(head_seq, head_hash, checkpoint.note)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = {
        "Content-Disposition": f'attachment; filename="recalled-export-{stamp}.{fmt}"',
        "Cache-Control": "no-store",
        # The head is also the last record of the file; here it is known before the body.
        "Recalled-Chain-Head": f"{head_seq} {head_hash or ''}".strip(),
    }
    return StreamingResponse(body(), media_type=MEDIA_TYPES[fmt], headers=headers)


routes = [Route("/v1/exports", export_events, methods=["GET"])]
