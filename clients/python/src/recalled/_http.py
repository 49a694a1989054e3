"""One API call as data (:class:`Call`), and the sync/async transports that run it.

Resources describe a call (method, path, query, body, how to read the answer); the
transports add the key, send it, retry what is safe to retry, and turn error bodies into
the exception tree of ``errors.py``. Both transports share every rule below, so the sync
and async clients cannot drift apart.

Retries of direct calls (``max_retries``, default 2; the spool has its own, unbounded ones):

- a connection that could not be opened, 408, 429 ``RATE_LIMITED`` and 503: the server did
  not act on the request, so any call is retried;
- a timeout or broken connection after the request was sent, 500, 502 and 504: only calls
  that are safe to repeat (GET, DELETE, and ``events.create`` with an idempotency key);
- ``Retry-After`` is honoured when it asks for at most ``MAX_RETRY_WAIT`` seconds; a longer
  wait is the caller's decision, so the error is raised with ``retry_after`` set.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Generic, Iterator, TypeVar
from contextlib import asynccontextmanager, contextmanager

import httpx

from . import _forksafe
from ._version import __version__
from .errors import APIConnectionError, APITimeoutError, RecalledError, error_from_response

T = TypeVar("T")

USER_AGENT = f"recalled-python/{__version__}"
MAX_RETRY_WAIT = 30.0
_NO_BODY = object()


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, str] | None = None
    body: Any = _NO_BODY
    # True when sending it twice has the effect of sending it once.
    idempotent: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def data_of(payload: Any) -> Any:
    """The ``data`` member of the server's envelope."""
    if not isinstance(payload, dict) or "data" not in payload:
        raise RecalledError("the server's answer has no 'data' member", code="UNEXPECTED_RESPONSE")
    return payload["data"]


def _request_headers(api_key: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json",
               "User-Agent": USER_AGENT}
    if extra:
        headers.update(extra)
    return headers


def _encode(call: Call[Any]) -> tuple[bytes | None, dict[str, str]]:
    if call.body is _NO_BODY:
        return None, dict(call.headers)
    headers = {"Content-Type": "application/json", **call.headers}
    return json.dumps(call.body, separators=(",", ":"), ensure_ascii=False).encode(), headers


def _decode(call: Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.content, response.headers)
    try:
        payload = response.json() if response.content else None
    except ValueError:
        raise RecalledError(f"the server answered {response.status_code} with a body that is not JSON",
                            code="UNEXPECTED_RESPONSE", status=response.status_code,
                            request_id=response.headers.get("x-request-id")) from None
    return call.parse(payload)


def transport_error(exc: httpx.HTTPError) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"the request timed out: {exc!r}")
    return APIConnectionError(f"could not reach the server: {exc!r}")


def _retry_delay(attempt: int, call: Call[Any], error: RecalledError | None,
                 exc: httpx.HTTPError | None) -> float | None:
    """Seconds to wait before retry number ``attempt`` (1-based), or None: do not retry."""
    if exc is not None:
        never_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
        if not (never_sent or call.idempotent):
            return None
    elif error is not None:
        status = error.status
        if status in (408, 503) or (status == 429 and error.code == "RATE_LIMITED"):
            pass
        elif status in (500, 502, 504) and call.idempotent:
            pass
        else:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= MAX_RETRY_WAIT else None
    return min(0.5 * 2.0 ** (attempt - 1), 8.0) * random.uniform(0.8, 1.2)


class _TransportBase:
    _http: Any

    def __init__(self, base_url: str, api_key: str, timeout: float, max_retries: int) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self._pid = os.getpid()
        _forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        _forksafe.abandon(self._http)
        self._http = None
        self._pid = os.getpid()


class SyncTransport(_TransportBase):
    def __init__(self, base_url: str, api_key: str, timeout: float, max_retries: int) -> None:
        self._http: httpx.Client | None = None
        super().__init__(base_url, api_key, timeout, max_retries)

    def client(self) -> httpx.Client:
        if self._pid != os.getpid():  # forked without the at-fork hooks (no os.fork)
            self._after_fork_in_child()
        if self._http is None:
            self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout,
                                      headers=_request_headers(self.api_key))
        return self._http

    def request(self, call: Call[T]) -> T:
        content, headers = _encode(call)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.client().request(call.method, call.path, params=call.params,
                                                 content=content, headers=headers)
            except httpx.HTTPError as exc:
                delay = _retry_delay(attempt, call, None, exc) if attempt <= self.max_retries else None
                if delay is None:
                    raise transport_error(exc) from exc
                time.sleep(delay)
                continue
            try:
                return _decode(call, response)
            except RecalledError as error:
                delay = _retry_delay(attempt, call, error, None) if attempt <= self.max_retries else None
                if delay is None:
                    raise
                time.sleep(delay)

    @contextmanager
    def stream(self, path: str, params: dict[str, str]) -> Iterator[httpx.Response]:
        try:
            with self.client().stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response.status_code, response.content, response.headers)
                yield response
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc

    def close(self) -> None:
        if self._http is not None and self._pid == os.getpid():
            self._http.close()
        self._http = None


class AsyncTransport(_TransportBase):
    def __init__(self, base_url: str, api_key: str, timeout: float, max_retries: int) -> None:
        self._http: httpx.AsyncClient | None = None
        super().__init__(base_url, api_key, timeout, max_retries)

    def client(self) -> httpx.AsyncClient:
        if self._pid != os.getpid():
            self._after_fork_in_child()
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout,
                                           headers=_request_headers(self.api_key))
        return self._http

    async def request(self, call: Call[T]) -> T:
        content, headers = _encode(call)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.client().request(call.method, call.path, params=call.params,
                                                       content=content, headers=headers)
            except httpx.HTTPError as exc:
                delay = _retry_delay(attempt, call, None, exc) if attempt <= self.max_retries else None
                if delay is None:
                    raise transport_error(exc) from exc
                await asyncio.sleep(delay)
                continue
            try:
                return _decode(call, response)
            except RecalledError as error:
                delay = _retry_delay(attempt, call, error, None) if attempt <= self.max_retries else None
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    @asynccontextmanager
    async def stream(self, path: str, params: dict[str, str]) -> AsyncIterator[httpx.Response]:
        try:
            async with self.client().stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response.status_code, response.content, response.headers)
                yield response
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc

    async def aclose(self) -> None:
        if self._http is not None and self._pid == os.getpid():
            await self._http.aclose()
        self._http = None
