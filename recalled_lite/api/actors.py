"""DELETE /v1/actors/{id}[?organization=] (SPEC §4.7): GDPR erasure of one actor's personal data.

Response (snake_case: the SDK reads these keys):
``{"data": {"actor_id", "anonymized_events", "erased_at"}}``. What is erased and how
the chain still verifies: storage/sqlite/erasure.py, docs/api.md, docs/integrity.md.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from .. import audit
from ..actions import AuditAction
from ..auth import write_organization
from ..errors import LegalHoldConflict, ValidationError
from ..retention import LegalHoldActive
from ..storage.base import ApiKeyRecord
from ..timefmt import format_ms, now_ms
from .common import admin_action, authorize, context, json_response

MAX_ACTOR_ID = 255


async def delete_actor(request: Request):
    ctx = context(request)
    key = await authorize(request, "actors:delete")
    actor_id, count, erased_at = await erase_actor_for(
        ctx.store, key, request.path_params["actor_id"], request.query_params.get("organization") or None,
        request=request)
    return json_response({"data": {
        "actor_id": actor_id,
        "anonymized_events": count,
        "erased_at": format_ms(erased_at),
    }})


async def erase_actor_for(store: Any, key: ApiKeyRecord, actor_id: str, requested: str | None, *,
                          request: Request) -> tuple[str, int, int]:
    """Validate and erase (shared by the API and the console): (actor id, events, erased_at).
    `request` is the API's or the console's: the audit event names its key, address and id."""
    if not actor_id:
        raise ValidationError.field("id", "the actor id is required: DELETE /v1/actors/{id}")
    if len(actor_id) > MAX_ACTOR_ID:
        raise ValidationError.field("id", f"the actor id is longer than {MAX_ACTOR_ID} characters")
    if requested is not None and len(requested) > 128:
        raise ValidationError.field("organization", "organization is longer than 128 characters")
    # Erasure is a write: a bound key erases only within its organization (403 for another).
    organization = write_organization(key, requested)
    erased_at = now_ms()
    reference = audit.erased_actor_reference(store.derive_key(audit.ERASED_ACTOR_KEY_PURPOSE), actor_id)
    try:
        count = await store.erase_actor(actor_id, organization, erased_at, audit=admin_action(
            request, key, AuditAction.ACTOR_ERASED, audit.actor_erased(reference, organization)))
    except LegalHoldActive as exc:
        # Nothing was erased past the chunks already committed before the hold was found
        # (none, unless the hold was placed mid-erasure); the hold must be released first.
        raise LegalHoldConflict(
            f"a legal hold ({exc.hold_id}) covers events of this actor; release it before erasing",
            {"hold_id": exc.hold_id}) from None
    return actor_id, count, erased_at


# `:path`: actor ids may contain '/' (sent percent-encoded by the SDK).
routes = [Route("/v1/actors/{actor_id:path}", delete_actor, methods=["DELETE"])]
