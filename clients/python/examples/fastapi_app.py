"""FastAPI: the async client for audit events, and a webhook receiver that verifies signatures.

    RECALLED_API_KEY=rec_live_... RECALLED_WEBHOOK_SECRET=whsec_... uvicorn fastapi_app:app

``await audit.events.emit(...)`` commits the event to the local spool in a worker thread and
returns; the spool's sender thread delivers it, so a slow or down recalled server never slows
a request. The lifespan closes the client with a bounded flush.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, HTTPException, Request, Response

from recalled import AsyncRecalled, webhooks

clients: dict[str, AsyncRecalled] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    clients["audit"] = AsyncRecalled()  # RECALLED_API_KEY / RECALLED_BASE_URL
    yield
    await clients.pop("audit").aclose(timeout=2.0)  # what is left stays in the spool


app = FastAPI(lifespan=lifespan)


@app.delete("/invoices/{invoice_id}")
async def delete_invoice(invoice_id: str, request: Request) -> dict[str, str]:
    # ... delete the invoice here ...
    await clients["audit"].events.emit(
        action="invoice.deleted",
        actor={"type": "user", "id": request.headers.get("x-user-id", "anonymous")},
        targets=[{"type": "invoice", "id": invoice_id}],
        ip_address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    return {"deleted": invoice_id}


seen_messages: set[str] = set()  # use your database: deliveries are at least once


@app.post("/recalled-webhook")
async def receive(request: Request) -> Response:
    body = await request.body()  # the raw bytes: the signature covers exactly these
    try:
        message = webhooks.verify(body, request.headers, os.environ["RECALLED_WEBHOOK_SECRET"])
    except webhooks.WebhookVerificationError:
        raise HTTPException(status_code=401, detail="bad signature") from None
    if message["id"] not in seen_messages:
        seen_messages.add(message["id"])
        if message["type"] == "event.created":
            print("audit event", message["event"]["action"], message["event"]["seq"])
    return Response(status_code=204)
