"""Celery: emit audit events from tasks running in the prefork pool.

    RECALLED_API_KEY=rec_live_... celery -A celery_tasks worker --concurrency 4

The client is created at import, in the worker's main process, before the pool forks: each
pool process gets fresh connections and its own sender at its first emit() (the client's
at-fork hooks), and all of them share one spool file. Pool processes may end without running
``atexit`` hooks, so ``worker_process_shutdown`` closes the client with a bounded flush; what
is not delivered by then stays in the spool and goes out from the next process that starts.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_shutdown

from recalled import Recalled, SpoolConfig

app = Celery("audit_example", broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0"))
audit = Recalled(spool=SpoolConfig(path=os.environ.get("RECALLED_SPOOL_PATH")))


@app.task
def refund_invoice(invoice_id: str, operator_id: str, amount_cents: int) -> str:
    # ... issue the refund here ...
    return audit.events.emit(
        action="invoice.refunded",
        actor={"type": "operator", "id": operator_id},
        targets=[{"type": "invoice", "id": invoice_id}],
        metadata={"amount_cents": amount_cents},
        # A retried task must not log the refund twice: the key makes the server deduplicate.
        idempotency_key=f"refund-{invoice_id}",
    )


@worker_process_shutdown.connect
def flush_audit_events(**kwargs: object) -> None:
    audit.close(timeout=2.0)
