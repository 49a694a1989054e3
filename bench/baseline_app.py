"""The yardstick for spec §7 "single-event intake >= 70 % of a bare echo".

A bare Starlette app with one POST route that decodes the same event body as
POST /v1/events (spec §4.1) into a msgspec Struct and answers {"data": <echo>}
encoded with msgspec. It is served exactly like the real server: one process,
uvicorn with uvloop + httptools, access log off, log level warning.

    python -m bench.baseline_app --host 127.0.0.1 --port 8099
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class Actor(msgspec.Struct, omit_defaults=False):
    type: str | None = None
    id: str | None = None
    name: str | None = None
    email: str | None = None


class Target(msgspec.Struct):
    type: str
    id: str
    name: str | None = None


class EventIn(msgspec.Struct):
    action: str
    organization: str | None = None
    actor: Actor | None = None
    targets: list[Target] | None = None
    metadata: dict[str, Any] | None = None
    occurred_at: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    idempotency_key: str | None = None


_decode = msgspec.json.Decoder(EventIn).decode
_encode = msgspec.json.Encoder().encode
_ERROR = b'{"error":{"code":"VALIDATION_ERROR","message":"invalid body","details":{}}}'


async def echo(request: Request) -> Response:
    body = await request.body()
    try:
        event = _decode(body)
    except msgspec.DecodeError:
        return Response(_ERROR, status_code=400, media_type="application/json")
    return Response(_encode({"data": event}), media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b"ok", media_type="text/plain")


app = Starlette(
    routes=[
        Route("/v1/events", echo, methods=["POST"]),
        Route("/readyz", ready, methods=["GET"]),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        workers=None,
    )


if __name__ == "__main__":
    main()
