"""The ASGI application: routes, the one error shape, request ids, logs, lifespan.

Order of shutdown (uvicorn drives the first step; the lifespan does the rest):
stop accepting and finish in-flight requests -> stop background services
(delivery) -> flush the writer and close the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .api import actors as actors_api
from .api import attempts as attempts_api
from .api import embed as embed_api
from .api import events as events_api
from .api import exports as exports_api
from .api import health as health_api
from .api import keys as keys_api
from .api import proofs as proofs_api
from .api import receipts as receipts_api
from .api import retention as retention_api
from .api import subscriptions as subscriptions_api
from . import openapi
from .receipts import page as receipt_page
from .api.common import AppContext, json_response
from .client_address import ClientAddress
from .config import Config
from .errors import (
    APIError, InternalError, MethodNotAllowed, NotFound, RequestTooLarge, StorageError,
    StorageUnavailable, Unavailable,
)
from .ids import new_id
from .metrics import AppMetrics
from .routing import HotRoutes, merge_routes, serve_trailing_slash
from .logs import write_access_line

log = logging.getLogger("recalled_lite")


def _error_response(exc: APIError) -> Response:
    return json_response(exc.body(), status=exc.status, headers=exc.headers or None)


def _as_api_error(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, StorageUnavailable):
        return Unavailable(str(exc), retry_after=exc.retry_after)
    if isinstance(exc, StorageError):
        return InternalError("the database failed; see the server log for this request id", code="DATABASE_ERROR")
    if isinstance(exc, HTTPException):
        # Starlette's own (routing.py answers 404/405 itself); keep its headers (Allow).
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return NotFound("no such route", headers=headers)
        if exc.status_code == 405:
            return MethodNotAllowed("method not allowed on this route", headers=headers)
        error = APIError(str(exc.detail), code="HTTP_ERROR", headers=headers)
        error.status = exc.status_code
        return error
    return InternalError("internal error; see the server log for this request id")


async def _handle_exception(request: Request, exc: Exception) -> Response:
    # Unexpected exceptions are re-raised by Starlette after this response is
    # sent; RequestContextMiddleware logs them once, with the request id.
    if isinstance(exc, StorageError) and not isinstance(exc, StorageUnavailable):
        log.error("database error", exc_info=exc,
                  extra={"fields": {"request_id": request.scope.get("state", {}).get("request_id")}})
    return _error_response(_as_api_error(exc))


def _valid_request_id(value: bytes) -> bool:
    return 0 < len(value) <= 128 and all(33 <= b <= 126 for b in value)


class RequestContextMiddleware:
    """Outermost layer: request id on every response, client address, early 413,
    last-resort 500, access log."""

    def __init__(self, app: Any, *, max_request_bytes: int, access_log_enabled: bool, metrics: AppMetrics,
                 client_address: ClientAddress | None = None):
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.access_log_enabled = access_log_enabled
        self.metrics = metrics
        self.client_address = client_address or ClientAddress()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id: bytes | None = None
        content_length: bytes | None = None
        user_agent: bytes | None = None
        forwarded: list[bytes] | None = None
        forwarded_proto: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _valid_request_id(value):
                request_id = value
            elif name == b"content-length":
                content_length = value
            elif name == b"user-agent":
                user_agent = value
            elif name == b"x-forwarded-for":
                forwarded = [value] if forwarded is None else [*forwarded, value]
            elif name == b"x-forwarded-proto":
                forwarded_proto = value
        if request_id is None:
            request_id = new_id("req").encode()
        path = scope["path"]  # before routing strips a trailing slash
        peer = scope.get("client")
        client = peer[0] if peer else None
        if self.client_address.enabled:
            if forwarded_proto is not None:
                # TLS ended at a trusted proxy: the console's Secure cookies follow the scheme.
                scheme = self.client_address.scheme(client, forwarded_proto)
                if scheme is not None:
                    scope["scheme"] = scheme
            if forwarded is not None:
                client = self.client_address.resolve(client, b",".join(forwarded).decode("latin-1"))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id.decode()
        state["client"] = client
        state["user_agent"] = user_agent.decode("latin-1") if user_agent is not None else None
        status_holder = [0]
        response_started = False

        async def send_with_id(message: dict) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder[0] = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id)]
                limited = state.get("ratelimit")
                if limited and not any(name.lower() == b"ratelimit" for name, _ in headers):
                    # Every response of a rate-limited request says where it stands, not only a
                    # 429 (which carries its own, for the policy that refused it).
                    headers.append((b"ratelimit-policy", ", ".join(p for p, _ in limited).encode()))
                    headers.append((b"ratelimit", ", ".join(v for _, v in limited).encode()))
                message["headers"] = headers
            await send(message)

        try:
            if content_length is not None:
                try:
                    declared = int(content_length)
                except ValueError:
                    declared = -1
                if declared > self.max_request_bytes:
                    # Refuse before reading a byte of the body.
                    error = RequestTooLarge(
                        f"request body is {declared} bytes; the limit is {self.max_request_bytes}",
                        {"limit": self.max_request_bytes, "size": declared},
                        headers={"Connection": "close"},
                    )
                    await _error_response(error)(scope, receive, send_with_id)
                    return
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client went away mid-request (nginx's 499): nothing to answer, nothing wrong here.
            status_holder[0] = 499
            log.info("client disconnected", extra={"fields": {"request_id": request_id.decode()}})
        except Exception as exc:
            log.error("unhandled error", exc_info=exc,
                      extra={"fields": {"request_id": request_id.decode()}})
            if not response_started:
                await _error_response(_as_api_error(exc))(scope, receive, send_with_id)
        finally:
            status = status_holder[0]
            elapsed = time.perf_counter() - started
            self.metrics.observe_request(scope, status, elapsed)
            if self.access_log_enabled:
                write_access_line({
                    "request_id": state["request_id"],
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                    "client": client,
                    "user_agent": state["user_agent"],
                    # Set by api.common.authorize once a key is recognised.
                    "key_id": state.get("key_id"),
                })


def create_app(config: Config, store: Any, services: list[Any] | None = None) -> Any:
    ctx = AppContext(config=config, store=store, services=list(services or []))
    metrics = AppMetrics(store, ctx.metrics_providers)
    ctx.metrics = metrics
    ctx.metrics_providers.append(ctx.abuse.metric_families)
    if store is not None:
        store.observe_write_groups(metrics.observe_write_group)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        loop = asyncio.get_running_loop()
        if not store.started:
            store.start(loop)
        started = []
        try:
            for service in ctx.services:
                await service.start(ctx)
                started.append(service)
            yield
        finally:
            ctx.shutting_down = True
            for service in reversed(started):
                try:
                    await service.stop()
                except Exception:
                    log.exception("stopping %s failed", type(service).__name__)
            await loop.run_in_executor(None, store.close)
            log.info("database closed cleanly")

    # Webhook routes first: /v1/events/{id}/attempts and .../resend before /v1/events/{id}.
    # Intake first: most requests are intake, and Starlette tries routes in order.
    # One API route per path (405 with every allowed method): routing.py. The console keeps
    # its own routes as they are: it answers a wrong method with a page, not JSON.
    routes = merge_routes([
        *events_api.intake_routes, *health_api.routes, *keys_api.routes, *attempts_api.routes,
        *subscriptions_api.routes, *events_api.routes, *exports_api.routes, *actors_api.routes,
        *embed_api.routes, *openapi.routes, *proofs_api.routes, *receipts_api.routes, *retention_api.routes,
        *receipt_page.routes])
    if config.console.enabled:
        from .console.routes import routes as console_routes  # Jinja loads only when served

        routes += console_routes
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={Exception: _handle_exception, HTTPException: _handle_exception,
                            APIError: _handle_exception, StorageError: _handle_exception},
    )
    serve_trailing_slash(app.router)
    app.state.ctx = ctx
    app.state.metrics = metrics
    return RequestContextMiddleware(
        HotRoutes(app, events_api.intake_routes),
        max_request_bytes=config.server.max_request_bytes,
        access_log_enabled=config.server.access_log,
        metrics=metrics,
        client_address=ClientAddress(config.server.trusted_proxies),
    )
