"""One webhook attempt: a signed POST over a small keep-alive pool per subscription.

Every connection is dialled through the SSRF guard (ssrf.GuardedBackend) on the lean
asyncio socket layer (netstream.py) by the minimal HTTP/1.1 client (http1.py): no
redirects, no cookies, no proxies, one timeout around the whole attempt. Signed with every
valid secret of the subscription (Standard Webhooks). What happened becomes an
``AttemptOutcome``: once a status line has arrived, the status decides and anything wrong
after it is a warning (retry.after_status_line).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Coroutine, Mapping

import httpx

from ..config import WebhooksConfig
from ..storage.webhook_base import AttemptOutcome, OpenItem
from ..timefmt import now_ms
from .http1 import Http1Pool
from .netstream import AsyncioBackend
from .retry import after_status_line
from .signing import headers as signed_headers
from .ssrf import DestinationRefused, GuardedBackend
from .subscriptions import SubscriptionInfo

log = logging.getLogger("recalled_lite.webhooks")

USER_AGENT = "recalled-lite-webhooks/1"
_KEEPALIVE_SECONDS = 30.0


class Sender:
    def __init__(self, config: WebhooksConfig, *, allow_private: bool, per_subscription: int) -> None:
        self.timeout = config.timeout_seconds
        self.read_limit = config.max_response_read_bytes
        self.keep_limit = config.max_response_body_bytes
        self.allow_private = allow_private
        self.per_subscription = per_subscription
        # One small keep-alive pool per subscription (at most its in-flight cap), every
        # connection dialled through the SSRF guard. One TLS context is shared by all.
        self._transports: dict[str, Http1Pool] = {}
        self._transport_used: dict[str, float] = {}
        self._urls: dict[str, httpx.URL] = {}
        self._ssl_context: Any = None
        # No per-operation timers: one asyncio.timeout bounds each whole attempt.
        self._backend = AsyncioBackend()

    def _transport(self, sub_id: str) -> Http1Pool:
        transport = self._transports.get(sub_id)
        if transport is None:
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            transport = self._transports[sub_id] = Http1Pool(
                GuardedBackend(self.allow_private, delegate=self._backend), self._ssl_context,
                max_idle=self.per_subscription, keepalive_expiry=_KEEPALIVE_SECONDS)
        self._transport_used[sub_id] = time.monotonic()
        return transport

    def _url(self, text: str) -> httpx.URL:
        url = self._urls.get(text)
        if url is None:
            if len(self._urls) > 4096:
                self._urls.clear()
            url = self._urls[text] = httpx.URL(text)
        return url

    def close_idle(self, subs: Mapping[str, Any], inflight: Mapping[str, int]) -> list[Coroutine[Any, Any, None]]:
        """Drop the pools of deleted subscriptions and of those idle for a while; returns
        the closes to run."""
        now = time.monotonic()
        closes = []
        for sub_id, used in list(self._transport_used.items()):
            if sub_id not in subs or (now - used > _KEEPALIVE_SECONDS * 2 and not inflight.get(sub_id)):
                transport = self._transports.pop(sub_id, None)
                del self._transport_used[sub_id]
                if transport is not None:
                    closes.append(transport.aclose())
        return closes

    async def aclose(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        self._transport_used = {}
        await asyncio.gather(*(t.aclose() for t in transports), return_exceptions=True)

    async def attempt(self, item: OpenItem, sub: SubscriptionInfo, body: bytes) -> AttemptOutcome:
        """Send one attempt and say what happened. Raises only CancelledError (shutdown)."""
        started_at = now_ms()
        t0 = time.perf_counter()
        status: int | None = None
        response_body: str | None = None
        problem: str | None = None  # what went wrong (before or after the status line)
        retry_after: str | None = None
        location: str | None = None
        progress: list[int] = []  # the status code, once the response head has arrived
        try:
            transport = self._transport(sub.id)
            hdrs = signed_headers(item.message_id, started_at // 1000, body,
                                  sub.signing_secrets(started_at))
            hdrs["user-agent"] = USER_AGENT
            hdrs["accept-encoding"] = "identity"
            async with asyncio.timeout(self.timeout):
                # http1.Http1Pool: one POST, never a redirect, no cookie jar, no proxy
                # settings; the response body is read no further than the read limit.
                response = await transport.post(self._url(sub.url), hdrs, body, self.read_limit, progress)
            status = response.status
            problem = response.warning
            retry_after = response.headers.get("retry-after")
            location = response.headers.get("location")
            response_body = self._keep_body(response.body)
        except TimeoutError:
            if progress:
                status = progress[0]
                problem = f"timed out after {self.timeout:g} s reading the response body"
            else:
                problem = f"timed out after {self.timeout:g} s waiting for a response"
        except DestinationRefused as exc:
            problem = f"destination refused: {exc}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("webhook attempt failed unexpectedly")
            problem = f"internal error: {type(exc).__name__}"
        error, warning = after_status_line(status, problem)
        if status is not None and 300 <= status < 400 and error is None:
            error = "redirects are not followed" + (f" (Location: {location[:200]})" if location else "")
        duration = int((time.perf_counter() - t0) * 1000)
        return AttemptOutcome(item, True, sub.url, status, response_body, error, duration,
                              started_at, retry_after, warning)

    def _keep_body(self, raw: bytes) -> str:
        """The response body (already read no further than max_response_read_bytes), stored
        up to max_response_body_bytes. Raw bytes: `accept-encoding: identity` was asked for,
        and a compressed body is never inflated (no decompression bombs)."""
        keep = self.keep_limit
        text = raw[:keep].decode("utf-8", "replace")
        while len(text.encode("utf-8")) > keep:  # a replacement char can be wider than its byte
            text = text[:-1]
        return text
