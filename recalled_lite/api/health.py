"""/healthz (process alive), /readyz (database writable, background services up), /metrics."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import Unavailable
from ..metrics import CONTENT_TYPE
from .common import AppContext, context, json_response, unauthenticated


async def healthz(request: Request):
    return json_response({"data": {"status": "ok"}})


async def readiness_problems(ctx: AppContext) -> dict[str, str]:
    """What is not ready, by part (empty when ready): used by /readyz and the console."""
    problems: dict[str, str] = {}
    if ctx.shutting_down:
        problems["server"] = "shutting down"
    else:
        try:
            await asyncio.wait_for(ctx.store.check_writable(), timeout=5)
        except Exception as exc:  # any failure means "not ready", with the reason
            problems["database"] = f"not writable: {exc or type(exc).__name__}"
        for name, check in ctx.readiness_checks.items():
            reason = check()
            if reason is not None:
                problems[name] = reason
    return problems


async def readyz(request: Request):
    ctx = context(request)
    problems = await readiness_problems(ctx)
    if problems:
        raise Unavailable("not ready: " + "; ".join(f"{k}: {v}" for k, v in problems.items()),
                          retry_after=5, details=problems)
    return json_response({"data": {"status": "ready", "seq": ctx.store.head_seq}})


async def metrics(request: Request):
    """Prometheus text; every metric is described in docs/operations.md."""
    body = await context(request).metrics.render()
    return Response(body, headers={"content-type": CONTENT_TYPE})


routes = [
    # /healthz is free (a constant answer, probed often); /readyz (a write transaction) and
    # /metrics (reads) take from the caller's budget of requests without a key (abuse.py).
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", unauthenticated(readyz), methods=["GET"]),
    Route("/metrics", unauthenticated(metrics), methods=["GET"]),
]
