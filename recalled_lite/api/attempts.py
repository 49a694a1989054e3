"""Message attempts and resend (spec §5.3).

    GET  /v1/event_subscriptions/{sub_id}/attempts?status=&begin=&end=&limit=&cursor=
    GET  /v1/events/{event_id}/attempts?status=&begin=&end=&event_subscription_id=&limit=&cursor=
    POST /v1/events/{event_id}/event_subscriptions/{sub_id}/resend

Lists are newest first and include the open (pending/sending) attempt of every delivery
still on its way. An organization-bound key sees only its organization's subscriptions
and their attempts; everything else is 404.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from ..delivery.service import DeliveryService
from ..errors import NotFound, ValidationError
from ..storage.base import ApiKeyRecord, RecordNotFound
from ..storage.webhook_base import InvalidWebhookOperation
from ..webhook_schemas import Page, decode_cursor, encode_cursor
from .common import authorize, int_param, json_response
from .subscriptions import SCOPE, attempt_to_wire, delivery, time_param, visible_subscription

ATTEMPT_STATUSES = ("pending", "sending", "success", "failed")


def _filters(request: Request) -> tuple[str | None, int | None, int | None, tuple[int, str] | None, int]:
    status = request.query_params.get("status") or None
    if status is not None:
        status = status.lower()
        if status not in ATTEMPT_STATUSES:
            raise ValidationError.field("status", f"status must be one of {', '.join(ATTEMPT_STATUSES)}")
    begin = time_param(request, "begin", upper=False)
    end = time_param(request, "end", upper=True)
    limit = int_param(request, "limit", minimum=1, maximum=200, default=50)
    assert limit is not None
    cursor = None
    token = request.query_params.get("cursor") or None
    if token is not None:
        try:
            created, _, attempt_id = decode_cursor("a", token).partition(":")
            cursor = (int(created), attempt_id)
        except ValueError:
            raise ValidationError.field("cursor", "cursor is not one this server issued") from None
    return status, begin, end, cursor, limit


def attempt_page(rows: list[tuple], limit: int) -> tuple[list[tuple], str | None]:
    """The page's rows and the cursor of the next page (None on the last)."""
    page, more = rows[:limit], len(rows) > limit
    return page, encode_cursor("a", f"{page[-1][12]}:{page[-1][0]}") if more else None


def _page(rows: list[tuple], limit: int):
    page, cursor = attempt_page(rows, limit)
    return json_response(Page([attempt_to_wire(r) for r in page], cursor is not None, cursor))


async def subscription_attempt_rows(request: Request, svc: DeliveryService, key: ApiKeyRecord,
                                    sub_id: str) -> tuple[list[tuple], int]:
    """Attempts of one subscription, filtered by the request's status/begin/end/cursor/limit."""
    sub = visible_subscription(svc, sub_id, key)
    status, begin, end, cursor, limit = _filters(request)
    assert svc.storage is not None
    rows = await svc.storage.list_attempts(sub_ids=[sub.id], event_id=None, status=status, begin=begin,
                                           end=end, cursor=cursor, limit=limit)
    return rows or [], limit


async def event_attempt_rows(request: Request, svc: DeliveryService, key: ApiKeyRecord,
                             event_id: str) -> tuple[list[tuple], int]:
    """Attempts of one event to the subscriptions `key` can see (404 behind the wall)."""
    status, begin, end, cursor, limit = _filters(request)
    only = request.query_params.get("event_subscription_id") or None
    if only is not None:
        sub_ids = [visible_subscription(svc, only, key).id]
    else:
        sub_ids = [s.id for s in svc.subs.values() if s.visible_to(key.organization)]
    assert svc.storage is not None
    if not await svc.storage.event_visible(event_id, key.organization):
        raise NotFound("no event with that id")
    rows = await svc.storage.list_attempts(sub_ids=sub_ids, event_id=event_id, status=status, begin=begin,
                                           end=end, cursor=cursor, limit=limit)
    if rows is None:
        raise NotFound("no event with that id")
    return rows, limit


async def resend_for(svc: DeliveryService, key: ApiKeyRecord, event_id: str, sub_id: str) -> tuple:
    """Send one event to one subscription again (same webhook-id if it was sent before)."""
    visible_subscription(svc, sub_id, key)
    assert svc.storage is not None
    try:
        return await svc.storage.resend(event_id, sub_id, key.organization)
    except RecordNotFound as exc:
        what = "event" if str(exc) == event_id else "event subscription"
        raise NotFound(f"no {what} with that id") from None
    except InvalidWebhookOperation as exc:
        raise ValidationError.field(exc.field, str(exc)) from None


async def subscription_attempts(request: Request):
    key = await authorize(request, SCOPE)
    rows, limit = await subscription_attempt_rows(request, delivery(request), key, request.path_params["sub_id"])
    return _page(rows, limit)


async def event_attempts(request: Request):
    key = await authorize(request, SCOPE)
    rows, limit = await event_attempt_rows(request, delivery(request), key, request.path_params["event_id"])
    return _page(rows, limit)


async def resend(request: Request):
    key = await authorize(request, SCOPE)
    row = await resend_for(delivery(request), key, request.path_params["event_id"], request.path_params["sub_id"])
    return json_response({"data": attempt_to_wire(row)}, status=202)


routes = [
    Route("/v1/event_subscriptions/{sub_id}/attempts", subscription_attempts, methods=["GET"]),
    Route("/v1/events/{event_id}/attempts", event_attempts, methods=["GET"]),
    Route("/v1/events/{event_id}/event_subscriptions/{sub_id}/resend", resend, methods=["POST"]),
]
