"""``Recalled``: the synchronous client."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping

from . import _calls
from ._calls import NOT_GIVEN
from ._exports import ExportStream, parse_whole
from ._http import SyncTransport
from ._settings import DEFAULT_TIMEOUT, resolve_api_key, resolve_base_url
from ._wire import TimeLike, event_body
from .pagination import SyncPage
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
    def __init__(self, client: "Recalled") -> None:
        self._client = client
        self._transport = client._transport

    def _page(self, calls: _calls.PageCalls) -> SyncPage[Any]:
        first, next_call = calls
        return SyncPage(self._transport, self._transport.request(first), next_call)


class Events(_Resource):
    def create(self, *, action: str, organization: str | None = None, actor: ActorLike | None = None,
               targets: Iterable[TargetLike] | None = None, metadata: Mapping[str, Any] | None = None,
               occurred_at: TimeLike | None = None, ip_address: str | None = None,
               user_agent: str | None = None, idempotency_key: str | None = None) -> Event:
        """Store one event now and return it; raises on any error (nothing is spooled)."""
        body = event_body(action=action, organization=organization, actor=actor, targets=targets,
                          metadata=metadata, occurred_at=occurred_at, ip_address=ip_address,
                          user_agent=user_agent, idempotency_key=idempotency_key)
        return self._transport.request(_calls.create_event(body))

    def create_batch(self, events: Iterable[Mapping[str, Any]]) -> list[Event]:
        """Store up to 1000 events in one all-or-nothing request (each item: create()'s fields)."""
        return self._transport.request(_calls.create_batch(_calls.event_bodies(events)))

    def emit(self, *, action: str, organization: str | None = None, actor: ActorLike | None = None,
             targets: Iterable[TargetLike] | None = None, metadata: Mapping[str, Any] | None = None,
             occurred_at: TimeLike | None = None, ip_address: str | None = None,
             user_agent: str | None = None, idempotency_key: str | None = None) -> str:
        """Commit the event to the local spool and return its idempotency key; the background
        sender delivers it. Raises only if the spool cannot take it (SpoolError, SpoolFullError)
        or the event cannot be encoded (ValueError, TypeError)."""
        body = event_body(action=action, organization=organization, actor=actor, targets=targets,
                          metadata=metadata, occurred_at=occurred_at, ip_address=ip_address,
                          user_agent=user_agent, idempotency_key=idempotency_key)
        return self._client._outbox().enqueue(body)

    def flush(self, timeout: float = 30.0) -> int:
        return self._client.flush(timeout)

    def queue_size(self) -> int:
        """Events of this client's server and key still in the spool."""
        return self._client._outbox().pending()

    def list(self, *, organization: str | None = None, actor_id: str | None = None,
             action: str | None = None, target_type: str | None = None, target_id: str | None = None,
             date_from: TimeLike | None = None, date_to: TimeLike | None = None,
             after_seq: int | None = None, limit: int | None = None,
             cursor: str | None = None) -> SyncPage[Event]:
        return self._page(_calls.list_events(
            organization=organization, actor_id=actor_id, action=action, target_type=target_type,
            target_id=target_id, date_from=date_from, date_to=date_to, after_seq=after_seq,
            limit=limit, cursor=cursor))

    def search(self, q: str | None = None, *, organization: str | None = None, actor_id: str | None = None,
               action: str | None = None, target_type: str | None = None, target_id: str | None = None,
               date_from: TimeLike | None = None, date_to: TimeLike | None = None,
               limit: int | None = None, cursor: str | None = None) -> SyncPage[Event]:
        return self._page(_calls.search_events(
            q=q, organization=organization, actor_id=actor_id, action=action, target_type=target_type,
            target_id=target_id, date_from=date_from, date_to=date_to, limit=limit, cursor=cursor))

    def retrieve(self, event_id: str) -> Event:
        return self._transport.request(_calls.retrieve_event(event_id))

    def attempts(self, event_id: str, *, status: str | None = None, begin: TimeLike | None = None,
                 end: TimeLike | None = None, event_subscription_id: str | None = None,
                 limit: int | None = None) -> SyncPage[Attempt]:
        return self._page(_calls.event_attempts(event_id, status=status, begin=begin, end=end,
                                                event_subscription_id=event_subscription_id, limit=limit))

    def resend(self, event_id: str, subscription_id: str) -> Attempt:
        return self._transport.request(_calls.resend(event_id, subscription_id))


class Exports(_Resource):
    def fetch(self, *, format: str = "json", organization: str | None = None, actor_id: str | None = None,
              action: str | None = None, target_type: str | None = None, target_id: str | None = None,
              date_from: TimeLike | None = None, date_to: TimeLike | None = None) -> Export:
        """The whole export (json or ndjson), parsed, checked to end with its chain head."""
        params = _calls.export_params(format=format, organization=organization, actor_id=actor_id,
                                      action=action, target_type=target_type, target_id=target_id,
                                      date_from=date_from, date_to=date_to)
        if format == "csv":
            raise ValueError("fetch() parses json and ndjson; use exports.stream(format='csv') for the CSV file")
        with self._transport.stream("/v1/exports", params) as response:
            return parse_whole(format, response.read())

    @contextmanager
    def stream(self, *, format: str = "ndjson", organization: str | None = None, actor_id: str | None = None,
               action: str | None = None, target_type: str | None = None, target_id: str | None = None,
               date_from: TimeLike | None = None, date_to: TimeLike | None = None) -> Iterator[ExportStream]:
        """``with client.exports.stream(format="ndjson") as export: for e in export.iter_events()``;
        ``export.write_to(path)`` for a file. Memory stays flat whatever the export's size."""
        params = _calls.export_params(format=format, organization=organization, actor_id=actor_id,
                                      action=action, target_type=target_type, target_id=target_id,
                                      date_from=date_from, date_to=date_to)
        with self._transport.stream("/v1/exports", params) as response:
            yield ExportStream(format, response)


class Actors(_Resource):
    def delete(self, actor_id: str, *, organization: str | None = None) -> ErasureResult:
        """GDPR erasure of one actor's personal data (scope actors:delete)."""
        return self._transport.request(_calls.delete_actor(actor_id, organization))


class Embed(_Resource):
    def create_token(self, *, organization: str | None = None, ttl_seconds: int | None = None,
                     scopes: Iterable[str] | None = None) -> EmbedToken:
        return self._transport.request(_calls.create_embed_token(organization, ttl_seconds, scopes))


class EventSubscriptions(_Resource):
    def create(self, *, url: str, description: str = NOT_GIVEN, event_types: Iterable[str] | None = NOT_GIVEN,
               organization: str | None = NOT_GIVEN, disabled: bool = NOT_GIVEN,
               secret: str = NOT_GIVEN) -> Subscription:
        return self._transport.request(_calls.create_subscription(
            url, description=description, event_types=event_types, organization=organization,
            disabled=disabled, secret=secret))

    def list(self, *, state: str | None = None, created_after: TimeLike | None = None,
             created_before: TimeLike | None = None, limit: int | None = None) -> SyncPage[Subscription]:
        return self._page(_calls.list_subscriptions(state=state, created_after=created_after,
                                                    created_before=created_before, limit=limit))

    def retrieve(self, subscription_id: str) -> Subscription:
        return self._transport.request(_calls.retrieve_subscription(subscription_id))

    def update(self, subscription_id: str, *, url: str = NOT_GIVEN, description: str = NOT_GIVEN,
               event_types: Iterable[str] | None = NOT_GIVEN, organization: str | None = NOT_GIVEN,
               disabled: bool = NOT_GIVEN, state: str = NOT_GIVEN) -> Subscription:
        """Change only the fields given; ``organization=None`` means every organization."""
        return self._transport.request(_calls.update_subscription(
            subscription_id, url=url, description=description, event_types=event_types,
            organization=organization, disabled=disabled, state=state))

    def delete(self, subscription_id: str) -> Subscription:
        return self._transport.request(_calls.delete_subscription(subscription_id))

    def test(self, subscription_id: str) -> Subscription:
        return self._transport.request(_calls.test_subscription(subscription_id))

    def secret(self, subscription_id: str) -> SubscriptionSecret:
        return self._transport.request(_calls.subscription_secret(subscription_id))

    def rotate_secret(self, subscription_id: str, *, secret: str | None = None) -> SubscriptionSecret:
        return self._transport.request(_calls.rotate_secret(subscription_id, secret))

    def attempts(self, subscription_id: str, *, status: str | None = None, begin: TimeLike | None = None,
                 end: TimeLike | None = None, limit: int | None = None) -> SyncPage[Attempt]:
        return self._page(_calls.subscription_attempts(subscription_id, status=status, begin=begin,
                                                       end=end, limit=limit))

    def recover(self, subscription_id: str, *, begin: TimeLike, end: TimeLike | None = None) -> Job:
        return self._transport.request(_calls.start_job(subscription_id, "recover", begin, end))

    def replay_missing(self, subscription_id: str, *, begin: TimeLike, end: TimeLike | None = None) -> Job:
        return self._transport.request(_calls.start_job(subscription_id, "replay_missing", begin, end))

    def jobs(self, subscription_id: str, *, limit: int | None = None) -> SyncPage[Job]:
        return self._page(_calls.list_jobs(subscription_id, limit=limit))

    def retrieve_job(self, subscription_id: str, job_id: str) -> Job:
        return self._transport.request(_calls.retrieve_job(subscription_id, job_id))

    def send_example(self, subscription_id: str, *, event_type: str | None = None) -> Attempt:
        return self._transport.request(_calls.send_example(subscription_id, event_type))


class Keys(_Resource):
    def create(self, *, name: str, scopes: Iterable[str], organization: str | None = None) -> ApiKey:
        """A new key; ``.key`` holds its plaintext, shown only in this answer."""
        return self._transport.request(_calls.create_key(name, scopes, organization))

    def list(self) -> SyncPage[ApiKey]:
        return self._page(_calls.list_keys())

    def revoke(self, key_id: str) -> ApiKey:
        return self._transport.request(_calls.revoke_key(key_id))


class Spool:
    """The local spool of this client (operators' view; ``python -m recalled spool`` too)."""

    def __init__(self, client: "Recalled") -> None:
        self._client = client

    def status(self) -> SpoolStatus:
        return self._client._outbox().status()

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters of this client's server and key, oldest first."""
        return self._client._outbox().dead_letters(limit)

    def retry_dead(self, ids: list[int] | None = None) -> int:
        return self._client._outbox().retry_dead(ids)

    def purge_dead(self, ids: list[int] | None = None) -> int:
        return self._client._outbox().purge_dead(ids)


class Recalled:
    """The synchronous client.

    ``api_key`` defaults to ``$RECALLED_API_KEY``; ``base_url`` to ``$RECALLED_BASE_URL``, else
    ``http://127.0.0.1:8080`` (a local ``recalled-lite serve``). ``spool`` configures
    ``events.emit()`` (``SpoolConfig``); the spool file is opened on first use.
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, max_retries: int = 2,
                 spool: SpoolConfig | None = None) -> None:
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self._transport = SyncTransport(self.base_url, self.api_key, timeout, max_retries)
        self._spool_config = spool or SpoolConfig()
        self._spool_config.check()
        self._outbox_instance: Outbox | None = None
        if self._spool_config.resolved_path().exists():
            self._outbox()  # leftovers of an earlier run go out without waiting for an emit
        self.events = Events(self)
        self.exports = Exports(self)
        self.actors = Actors(self)
        self.embed = Embed(self)
        self.event_subscriptions = EventSubscriptions(self)
        self.keys = Keys(self)
        self.spool = Spool(self)

    def _outbox(self) -> Outbox:
        if self._outbox_instance is None:
            self._outbox_instance = Outbox(self._spool_config, base_url=self.base_url, api_key=self.api_key)
        return self._outbox_instance

    def verify(self, *, from_seq: int | None = None, to_seq: int | None = None) -> ChainVerification:
        """The server checks its hash chain (scope events:read, a key bound to no organization)."""
        return self._transport.request(_calls.verify_chain(from_seq, to_seq))

    def flush(self, timeout: float = 30.0) -> int:
        """Deliver what the spool holds for this client, waiting at most ``timeout`` seconds.
        Returns how many events are still waiting (0 when everything was stored or
        dead-lettered)."""
        return self._outbox().flush(timeout)

    def close(self, timeout: float | None = None) -> int:
        """Flush (bounded, ``exit_flush_timeout`` by default), stop the sender, close the
        connections. Events not yet delivered stay in the spool. Returns their count."""
        remaining = self._outbox_instance.close(timeout) if self._outbox_instance is not None else 0
        self._transport.close()
        return remaining

    def __enter__(self) -> "Recalled":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
