"""/healthz (process alive), /readyz (database writable, background services up), /metrics."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import Unavailable
from .common import AppContext, context, json_response


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
    ctx = context(request)
    metrics_state = request.app.state.metrics
    writer = ctx.store.writer
    lines = [
        "# HELP recalled_events_stored Events in the log (chain head seq).",
        "# TYPE recalled_events_stored gauge",
        f"recalled_events_stored {ctx.store.head_seq}",
        "# HELP recalled_writer_groups_total Write transactions committed by the single writer.",
        "# TYPE recalled_writer_groups_total counter",
        f"recalled_writer_groups_total {writer.groups_committed}",
        "# HELP recalled_writer_ops_total Write operations committed (several per group).",
        "# TYPE recalled_writer_ops_total counter",
        f"recalled_writer_ops_total {writer.ops_committed}",
        "# HELP recalled_storage_info What the write connection runs with, read back from SQLite.",
        "# TYPE recalled_storage_info gauge",
        "recalled_storage_info{" + ",".join(f'{k}="{v}"' for k, v in sorted(ctx.store.durability.items())) + "} 1",
        "# HELP recalled_http_requests_total HTTP responses by status code.",
        "# TYPE recalled_http_requests_total counter",
    ]
    for status, count in sorted(metrics_state.responses.items()):
        lines.append(f'recalled_http_requests_total{{status="{status}"}} {count}')
    for provider in ctx.metrics_providers:
        lines.extend(provider())
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
