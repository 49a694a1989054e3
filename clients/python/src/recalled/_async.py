"""``AsyncRecalled``: the asyncio client.

API calls use an ``httpx.AsyncClient`` on the caller's event loop. The spool is the same as
the sync client's: ``await events.emit()`` commits the row in a worker thread (the fsync
never blocks the loop), and delivery runs on the same background *thread* as for the sync
client, not on a task. A thread keeps sending while the loop is busy or blocked, survives
``asyncio.run()`` returning, and lets the exit flush run from ``atexit``, where no loop runs.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Iterable, Mapping

from . import _calls
from ._calls import NOT_GIVEN
from ._exports import AsyncExportStream, parse_whole
from ._http import AsyncTransport
from ._settings import DEFAULT_TIMEOUT, resolve_api_key, resolve_base_url
from ._wire import TimeLike, event_body
from .pagination import AsyncPaginator
from .spool.config import SpoolConfig
from .spool.outbox import Outbox
from .spool.store import DeadLetter, SpoolStatus
from .types import (
    Actor, ApiKey, Attempt, ChainVerification, EmbedToken, ErasureResult, Event, Export, Job,
    Subscription, SubscriptionSecret, Target,
)

ActorLike = Actor | Mapping[str, Any]
TargetLike = Target | Mapping[str, Any]


class _Resource:
    def __init__(self, client: "AsyncRecalled") -> None:
        self._client = client
        self._transport = client._transport

    def _pages(self, calls: _calls.PageCalls) -> AsyncPaginator[Any]:
        first, next_call = calls
        return AsyncPaginator(self._transport, first, next_call)


class AsyncEvents(_Resource):
    async def create(self, *, action: str, organization: str | None = None, actor: ActorLike | None = None,
                     targets: Iterable[TargetLike] | None = None, metadata: Mapping[str, Any] | None = None,
                     occurred_at: TimeLike | None = None, ip_address: str | None = None,
                     user_agent: str | None = None, idempotency_key: str | None = None) -> Event:
        body = event_body(action=action, organization=organization, actor=actor, targets=targets,
                          metadata=metadata, occurred_at=occurred_at, ip_address=ip_address,
                          user_agent=user_agent, idempotency_key=idempotency_key)
        return await self._transport.request(_calls.create_event(body))

    async def create_batch(self, events: Iterable[Mapping[str, Any]]) -> list[Event]:
        return await self._transport.request(_calls.create_batch(_calls.event_bodies(events)))

    async def emit(self, *, action: str, organization: str | None = None, actor: ActorLike | None = None,
                   targets: Iterable[TargetLike] | None = None, metadata: Mapping[str, Any] | None = None,
                   occurred_at: TimeLike | None = None, ip_address: str | None = None,
                   user_agent: str | None = None, idempotency_key: str | None = None) -> str:
        """Commit the event to the spool (in a worker thread) and return its idempotency key."""
        body = event_body(action=action, organization=organization, actor=actor, targets=targets,
                          metadata=metadata, occurred_at=occurred_at, ip_address=ip_address,
                          user_agent=user_agent, idempotency_key=idempotency_key)
        outbox = self._client._outbox()
        return await asyncio.to_thread(outbox.enqueue, body)

    async def flush(self, timeout: float = 30.0) -> int:
        return await self._client.flush(timeout)

    async def queue_size(self) -> int:
        return await asyncio.to_thread(self._client._outbox().pending)

    def list(self, *, organization: str | None = None, actor_id: str | None = None,
             action: str | None = None, target_type: str | None = None, target_id: str | None = None,
             date_from: TimeLike | None = None, date_to: TimeLike | None = None,
             after_seq: int | None = None, limit: int | None = None,
             cursor: str | None = None) -> AsyncPaginator[Event]:
        return self._pages(_calls.list_events(
            organization=organization, actor_id=actor_id, action=action, target_type=target_type,
            target_id=target_id, date_from=date_from, date_to=date_to, after_seq=after_seq,
            limit=limit, cursor=cursor))

    def search(self, q: str | None = None, *, organization: str | None = None, actor_id: str | None = None,
               action: str | None = None, target_type: str | None = None, target_id: str | None = None,
               date_from: TimeLike | None = None, date_to: TimeLike | None = None,
               limit: int | None = None, cursor: str | None = None) -> AsyncPaginator[Event]:
        return self._pages(_calls.search_events(
            q=q, organization=organization, actor_id=actor_id, action=action, target_type=target_type,
            target_id=target_id, date_from=date_from, date_to=date_to, limit=limit, cursor=cursor))

    async def retrieve(self, event_id: str) -> Event:
        return await self._transport.request(_calls.retrieve_event(event_id))

    def attempts(self, event_id: str, *, status: str | None = None, begin: TimeLike | None = None,
                 end: TimeLike | None = None, event_subscription_id: str | None = None,
                 limit: int | None = None) -> AsyncPaginator[Attempt]:
        return self._pages(_calls.event_attempts(event_id, status=status, begin=begin, end=end,
                                                 event_subscription_id=event_subscription_id, limit=limit))

    async def resend(self, event_id: str, subscription_id: str) -> Attempt:
        return await self._transport.request(_calls.resend(event_id, subscription_id))


class AsyncExports(_Resource):
    async def fetch(self, *, format: str = "json", organization: str | None = None,
                    actor_id: str | None = None, action: str | None = None, target_type: str | None = None,
                    target_id: str | None = None, date_from: TimeLike | None = None,
                    date_to: TimeLike | None = None) -> Export:
        params = _calls.export_params(format=format, organization=organization, actor_id=actor_id,
                                      action=action, target_type=target_type, target_id=target_id,
                                      date_from=date_from, date_to=date_to)
        if format == "csv":
            raise ValueError("fetch() parses json and ndjson; use exports.stream(format='csv') for the CSV file")
        async with self._transport.stream("/v1/exports", params) as response:
            return parse_whole(format, await response.aread())

    @asynccontextmanager
    async def stream(self, *, format: str = "ndjson", organization: str | None = None,
                     actor_id: str | None = None, action: str | None = None, target_type: str | None = None,
                     target_id: str | None = None, date_from: TimeLike | None = None,
                     date_to: TimeLike | None = None) -> AsyncIterator[AsyncExportStream]:
        params = _calls.export_params(format=format, organization=organization, actor_id=actor_id,
                                      action=action, target_type=target_type, target_id=target_id,
                                      date_from=date_from, date_to=date_to)
        async with self._transport.stream("/v1/exports", params) as response:
            yield AsyncExportStream(format, response)


class AsyncActors(_Resource):
    async def delete(self, actor_id: str, *, organization: str | None = None) -> ErasureResult:
        return await self._transport.request(_calls.delete_actor(actor_id, organization))


class AsyncEmbed(_Resource):
    async def create_token(self, *, organization: str | None = None, ttl_seconds: int | None = None,
                           scopes: Iterable[str] | None = None) -> EmbedToken:
        return await self._transport.request(_calls.create_embed_token(organization, ttl_seconds, scopes))


class AsyncEventSubscriptions(_Resource):
    async def create(self, *, url: str, description: str = NOT_GIVEN,
                     event_types: Iterable[str] | None = NOT_GIVEN, organization: str | None = NOT_GIVEN,
                     disabled: bool = NOT_GIVEN, secret: str = NOT_GIVEN) -> Subscription:
        return await self._transport.request(_calls.create_subscription(
            url, description=description, event_types=event_types, organization=organization,
            disabled=disabled, secret=secret))

    def list(self, *, state: str | None = None, created_after: TimeLike | None = None,
             created_before: TimeLike | None = None, limit: int | None = None) -> AsyncPaginator[Subscription]:
        return self._pages(_calls.list_subscriptions(state=state, created_after=created_after,
                                                     created_before=created_before, limit=limit))

    async def retrieve(self, subscription_id: str) -> Subscription:
        return await self._transport.request(_calls.retrieve_subscription(subscription_id))

    async def update(self, subscription_id: str, *, url: str = NOT_GIVEN, description: str = NOT_GIVEN,
                     event_types: Iterable[str] | None = NOT_GIVEN, organization: str | None = NOT_GIVEN,
                     disabled: bool = NOT_GIVEN, state: str = NOT_GIVEN) -> Subscription:
        return await self._transport.request(_calls.update_subscription(
            subscription_id, url=url, description=description, event_types=event_types,
            organization=organization, disabled=disabled, state=state))

    async def delete(self, subscription_id: str) -> Subscription:
        return await self._transport.request(_calls.delete_subscription(subscription_id))

    async def test(self, subscription_id: str) -> Subscription:
        return await self._transport.request(_calls.test_subscription(subscription_id))

    async def secret(self, subscription_id: str) -> SubscriptionSecret:
        return await self._transport.request(_calls.subscription_secret(subscription_id))

    async def rotate_secret(self, subscription_id: str, *, secret: str | None = None) -> SubscriptionSecret:
        return await self._transport.request(_calls.rotate_secret(subscription_id, secret))

    def attempts(self, subscription_id: str, *, status: str | None = None, begin: TimeLike | None = None,
                 end: TimeLike | None = None, limit: int | None = None) -> AsyncPaginator[Attempt]:
        return self._pages(_calls.subscription_attempts(subscription_id, status=status, begin=begin,
                                                        end=end, limit=limit))

    async def recover(self, subscription_id: str, *, begin: TimeLike, end: TimeLike | None = None) -> Job:
        return await self._transport.request(_calls.start_job(subscription_id, "recover", begin, end))

    async def replay_missing(self, subscription_id: str, *, begin: TimeLike, end: TimeLike | None = None) -> Job:
        return await self._transport.request(_calls.start_job(subscription_id, "replay_missing", begin, end))

    def jobs(self, subscription_id: str, *, limit: int | None = None) -> AsyncPaginator[Job]:
        return self._pages(_calls.list_jobs(subscription_id, limit=limit))

    async def retrieve_job(self, subscription_id: str, job_id: str) -> Job:
        return await self._transport.request(_calls.retrieve_job(subscription_id, job_id))

    async def send_example(self, subscription_id: str, *, event_type: str | None = None) -> Attempt:
        return await self._transport.request(_calls.send_example(subscription_id, event_type))


class AsyncKeys(_Resource):
    async def create(self, *, name: str, scopes: Iterable[str], organization: str | None = None) -> ApiKey:
        return await self._transport.request(_calls.create_key(name, scopes, organization))

    def list(self) -> AsyncPaginator[ApiKey]:
        return self._pages(_calls.list_keys())

    async def revoke(self, key_id: str) -> ApiKey:
        return await self._transport.request(_calls.revoke_key(key_id))


class AsyncSpool:
    def __init__(self, client: "AsyncRecalled") -> None:
        self._client = client

    async def status(self) -> SpoolStatus:
        return await asyncio.to_thread(self._client._outbox().status)

    async def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        return await asyncio.to_thread(self._client._outbox().dead_letters, limit)

    async def retry_dead(self, ids: list[int] | None = None) -> int:
        return await asyncio.to_thread(self._client._outbox().retry_dead, ids)

    async def purge_dead(self, ids: list[int] | None = None) -> int:
        return await asyncio.to_thread(self._client._outbox().purge_dead, ids)


class AsyncRecalled:
    """The asyncio client: the same resources as ``Recalled``, awaited.

    List methods return an ``AsyncPaginator``: ``await`` it for one page, ``async for`` over
    it for every item.
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, max_retries: int = 2,
                 spool: SpoolConfig | None = None) -> None:
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self._transport = AsyncTransport(self.base_url, self.api_key, timeout, max_retries)
        self._spool_config = spool or SpoolConfig()
        self._spool_config.check()
        self._outbox_instance: Outbox | None = None
        if self._spool_config.resolved_path().exists():
            self._outbox()
        self.events = AsyncEvents(self)
        self.exports = AsyncExports(self)
        self.actors = AsyncActors(self)
        self.embed = AsyncEmbed(self)
        self.event_subscriptions = AsyncEventSubscriptions(self)
        self.keys = AsyncKeys(self)
        self.spool = AsyncSpool(self)

    def _outbox(self) -> Outbox:
        if self._outbox_instance is None:
            self._outbox_instance = Outbox(self._spool_config, base_url=self.base_url, api_key=self.api_key)
        return self._outbox_instance

    async def verify(self, *, from_seq: int | None = None, to_seq: int | None = None) -> ChainVerification:
        return await self._transport.request(_calls.verify_chain(from_seq, to_seq))

    async def flush(self, timeout: float = 30.0) -> int:
        """Like ``Recalled.flush``; the wait runs in a worker thread."""
        return await asyncio.to_thread(self._outbox().flush, timeout)

    async def aclose(self, timeout: float | None = None) -> int:
        outbox = self._outbox_instance
        remaining = await asyncio.to_thread(outbox.close, timeout) if outbox is not None else 0
        await self._transport.aclose()
        return remaining

    async def __aenter__(self) -> "AsyncRecalled":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
