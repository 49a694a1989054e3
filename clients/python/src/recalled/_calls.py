"""Every API operation as a :class:`Call`: path, parameters, body, and how to read the answer.

The sync and async resources are one line per method on top of these, so the two clients
send the very same requests.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping
from urllib.parse import quote

from ._http import Call, data_of
from ._wire import TimeLike, query
from .pagination import NextCall, PageData, page_parser
from .types import (
    ApiKey, Attempt, ChainVerification, EmbedToken, ErasureResult, Event, Job, Subscription,
    SubscriptionSecret,
)


class _NotGiven:
    """Marks an argument left out, where ``None`` is a value (``organization=None`` in an
    update means "every organization", which is not the same as "unchanged")."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN: Any = _NotGiven()


def _seg(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("an id is required")
    return quote(value, safe="")


def _one(parse: Any) -> Any:
    return lambda payload: parse(data_of(payload))


PageCalls = tuple[Call[PageData[Any]], NextCall[Any]]


def _recalled_list(path: str, params: dict[str, str], parse: Any) -> PageCalls:
    """recalled cursors hold their filters: later pages send the cursor and limit only."""
    parser = page_parser(parse)
    limit = params.get("limit")

    def next_call(cursor: str) -> Call[PageData[Any]]:
        return Call("GET", path, parser, params=query({"cursor": cursor, "limit": limit}), idempotent=True)

    return Call("GET", path, parser, params=params, idempotent=True), next_call


def _lithic_list(path: str, params: dict[str, str], parse: Any) -> PageCalls:
    """Webhook/key cursors hold a position only: later pages repeat the filters."""
    parser = page_parser(parse)

    def next_call(cursor: str) -> Call[PageData[Any]]:
        return Call("GET", path, parser, params={**params, "cursor": cursor}, idempotent=True)

    return Call("GET", path, parser, params=params, idempotent=True), next_call


# --- events ---------------------------------------------------------------------------------


def create_event(body: dict[str, Any]) -> Call[Event]:
    return Call("POST", "/v1/events", _one(Event.from_wire), body=body,
                idempotent="idempotency_key" in body)


def create_batch(bodies: list[dict[str, Any]]) -> Call[list[Event]]:
    every_keyed = all("idempotency_key" in b for b in bodies)
    return Call("POST", "/v1/events/batch",
                lambda payload: [Event.from_wire(e) for e in data_of(payload)],
                body={"events": bodies}, idempotent=every_keyed)


def list_events(*, organization: str | None, actor_id: str | None, action: str | None,
                target_type: str | None, target_id: str | None, date_from: TimeLike | None,
                date_to: TimeLike | None, after_seq: int | None, limit: int | None,
                cursor: str | None) -> PageCalls:
    params = query({"organization": organization, "actor_id": actor_id, "action": action,
                    "target_type": target_type, "target_id": target_id, "date_from": date_from,
                    "date_to": date_to, "after_seq": after_seq, "limit": limit, "cursor": cursor})
    return _recalled_list("/v1/events", params, Event.from_wire)


def search_events(*, q: str | None, organization: str | None, actor_id: str | None,
                  action: str | None, target_type: str | None, target_id: str | None,
                  date_from: TimeLike | None, date_to: TimeLike | None, limit: int | None,
                  cursor: str | None) -> PageCalls:
    params = query({"q": q, "organization": organization, "actor_id": actor_id, "action": action,
                    "target_type": target_type, "target_id": target_id, "date_from": date_from,
                    "date_to": date_to, "limit": limit, "cursor": cursor})
    return _recalled_list("/v1/events/search", params, Event.from_wire)


def retrieve_event(event_id: str) -> Call[Event]:
    return Call("GET", f"/v1/events/{_seg(event_id)}", _one(Event.from_wire), idempotent=True)


def verify_chain(from_seq: int | None, to_seq: int | None) -> Call[ChainVerification]:
    return Call("GET", "/v1/events/verify", _one(ChainVerification.from_wire),
                params=query({"from_seq": from_seq, "to_seq": to_seq}), idempotent=True)


def event_attempts(event_id: str, *, status: str | None, begin: TimeLike | None, end: TimeLike | None,
                   event_subscription_id: str | None, limit: int | None) -> PageCalls:
    params = query({"status": status, "begin": begin, "end": end,
                    "event_subscription_id": event_subscription_id, "limit": limit})
    return _lithic_list(f"/v1/events/{_seg(event_id)}/attempts", params, Attempt.from_wire)


def resend(event_id: str, subscription_id: str) -> Call[Attempt]:
    path = f"/v1/events/{_seg(event_id)}/event_subscriptions/{_seg(subscription_id)}/resend"
    # Resending while the message is on its way queues nothing new: safe to repeat.
    return Call("POST", path, _one(Attempt.from_wire), idempotent=True)


# --- exports, actors, embed -----------------------------------------------------------------


EXPORT_FORMATS = ("csv", "json", "ndjson")


def export_params(*, format: str, organization: str | None, actor_id: str | None, action: str | None,
                  target_type: str | None, target_id: str | None, date_from: TimeLike | None,
                  date_to: TimeLike | None) -> dict[str, str]:
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}")
    return query({"format": format, "organization": organization, "actor_id": actor_id,
                  "action": action, "target_type": target_type, "target_id": target_id,
                  "date_from": date_from, "date_to": date_to})


def delete_actor(actor_id: str, organization: str | None) -> Call[ErasureResult]:
    return Call("DELETE", f"/v1/actors/{_seg(actor_id)}", _one(ErasureResult.from_wire),
                params=query({"organization": organization}), idempotent=True)


def create_embed_token(organization: str | None, ttl_seconds: int | None,
                       scopes: Iterable[str] | None) -> Call[EmbedToken]:
    body: dict[str, Any] = {}
    if organization is not None:
        body["organization"] = organization
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    if scopes is not None:
        body["scopes"] = list(scopes)
    # A second token is as good as the first: minting is safe to repeat.
    return Call("POST", "/v1/embed/token", _one(EmbedToken.from_wire), body=body, idempotent=True)


# --- event subscriptions --------------------------------------------------------------------

_SUBS = "/v1/event_subscriptions"


def _fields(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not NOT_GIVEN}


def create_subscription(url: str, *, description: Any, event_types: Any, organization: Any,
                        disabled: Any, secret: Any) -> Call[Subscription]:
    body = {"url": url, **_fields(description=description, event_types=_listed(event_types),
                                  organization=organization, disabled=disabled, secret=secret)}
    return Call("POST", _SUBS, _one(Subscription.from_wire), body=body)


def _listed(value: Any) -> Any:
    return list(value) if value is not NOT_GIVEN and value is not None and not isinstance(value, str) else value


def list_subscriptions(*, state: str | None, created_after: TimeLike | None,
                       created_before: TimeLike | None, limit: int | None) -> PageCalls:
    params = query({"state": state, "created_after": created_after, "created_before": created_before,
                    "limit": limit})
    return _lithic_list(_SUBS, params, Subscription.from_wire)


def retrieve_subscription(sub_id: str) -> Call[Subscription]:
    return Call("GET", f"{_SUBS}/{_seg(sub_id)}", _one(Subscription.from_wire), idempotent=True)


def update_subscription(sub_id: str, **fields: Any) -> Call[Subscription]:
    body = _fields(**fields)
    if "event_types" in body:
        body["event_types"] = _listed(body["event_types"])
    return Call("PATCH", f"{_SUBS}/{_seg(sub_id)}", _one(Subscription.from_wire), body=body, idempotent=True)


def delete_subscription(sub_id: str) -> Call[Subscription]:
    return Call("DELETE", f"{_SUBS}/{_seg(sub_id)}", _one(Subscription.from_wire), idempotent=True)


def test_subscription(sub_id: str) -> Call[Subscription]:
    return Call("POST", f"{_SUBS}/{_seg(sub_id)}/test", _one(Subscription.from_wire))


def subscription_secret(sub_id: str) -> Call[SubscriptionSecret]:
    return Call("GET", f"{_SUBS}/{_seg(sub_id)}/secret", _one(SubscriptionSecret.from_wire), idempotent=True)


def rotate_secret(sub_id: str, secret: str | None) -> Call[SubscriptionSecret]:
    body = {"secret": secret} if secret is not None else {}
    return Call("POST", f"{_SUBS}/{_seg(sub_id)}/secret/rotate", _one(SubscriptionSecret.from_wire),
                body=body, idempotent=secret is not None)


def subscription_attempts(sub_id: str, *, status: str | None, begin: TimeLike | None,
                          end: TimeLike | None, limit: int | None) -> PageCalls:
    params = query({"status": status, "begin": begin, "end": end, "limit": limit})
    return _lithic_list(f"{_SUBS}/{_seg(sub_id)}/attempts", params, Attempt.from_wire)


def start_job(sub_id: str, kind: str, begin: TimeLike, end: TimeLike | None) -> Call[Job]:
    body: dict[str, Any] = query({"begin": begin, "end": end})
    return Call("POST", f"{_SUBS}/{_seg(sub_id)}/{kind}", _one(Job.from_wire), body=body)


def list_jobs(sub_id: str, *, limit: int | None) -> PageCalls:
    return _lithic_list(f"{_SUBS}/{_seg(sub_id)}/jobs", query({"limit": limit}), Job.from_wire)


def retrieve_job(sub_id: str, job_id: str) -> Call[Job]:
    return Call("GET", f"{_SUBS}/{_seg(sub_id)}/jobs/{_seg(job_id)}", _one(Job.from_wire), idempotent=True)


def send_example(sub_id: str, event_type: str | None) -> Call[Attempt]:
    body = {"event_type": event_type} if event_type is not None else {}
    return Call("POST", f"/v1/simulate/event_subscriptions/{_seg(sub_id)}/send_example",
                _one(Attempt.from_wire), body=body)


# --- keys -----------------------------------------------------------------------------------


def create_key(name: str, scopes: Iterable[str], organization: str | None) -> Call[ApiKey]:
    body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
    if organization is not None:
        body["organization"] = organization
    return Call("POST", "/v1/keys", _one(ApiKey.from_wire), body=body)


def list_keys() -> PageCalls:
    return _lithic_list("/v1/keys", {}, ApiKey.from_wire)


def revoke_key(key_id: str) -> Call[ApiKey]:
    return Call("DELETE", f"/v1/keys/{_seg(key_id)}", _one(ApiKey.from_wire), idempotent=True)


def event_bodies(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    from ._wire import event_body

    return [event_body(**dict(e)) for e in events]
