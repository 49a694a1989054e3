"""Whole-chain verification from the console, in chunks, so its progress is real.

The chain is verified one range of ``CHUNK`` seqs at a time through the same call as
``GET /v1/events/verify?from_seq&to_seq`` (``verify_chain_for``). Each range starts from
the stored hash of the event before it, so consecutive ranges check every link exactly
as one pass would. One run at a time per process; its outcome is recorded
(``chain_verifications``) for the overview.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from ..api.events import require_unbound_for_chain, verify_chain_for
from ..ids import new_id
from ..storage.base import ApiKeyRecord, ChainVerificationRecord
from ..timefmt import now_ms

log = logging.getLogger("recalled_lite.console")

CHUNK = 20_000


@dataclass(slots=True)
class Run:
    id: str
    started_at: int
    total: int  # head seq when the run started: what it covers
    head_hash: str | None
    key_id: str
    checked: int = 0
    finished_at: int | None = None
    valid: bool | None = None
    first_invalid: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.finished_at is None

    def progress(self) -> dict[str, Any]:
        percent = 100.0 if not self.running else (round(100 * self.checked / self.total, 1) if self.total else 0.0)
        return {"id": self.id, "running": self.running, "checked": self.checked, "total": self.total,
                "percent": percent, "valid": self.valid, "firstInvalid": self.first_invalid,
                "error": self.error}


class ChainVerification:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.current: Run | None = None

    async def start(self, key: ApiKeyRecord) -> Run:
        """Start a run (or return the one already running)."""
        require_unbound_for_chain(key)
        if self.current is not None and self.current.running:
            return self.current
        head_seq, head_hash = await self.store.chain_head()
        run = Run(new_id("ver"), now_ms(), head_seq, head_hash, key.id)
        run.task = asyncio.create_task(self._run(run, key), name="console-chain-verification")
        self.current = run
        return run

    async def _run(self, run: Run, key: ApiKeyRecord) -> None:
        seq = 1
        try:
            while seq <= run.total:
                upto = min(seq + CHUNK - 1, run.total)
                result = await verify_chain_for(self.store, key, seq, upto)
                run.checked += result["checked"]
                if not result["valid"]:
                    run.first_invalid = result["firstInvalid"]
                    break
                seq = upto + 1
            run.valid = run.first_invalid is None
        except asyncio.CancelledError:
            run.error = "the server stopped before the verification finished"
            run.finished_at = now_ms()
            raise
        except Exception as exc:  # reported in the page; the log has the traceback
            log.exception("chain verification failed")
            run.error = f"the verification could not finish: {exc}"
        run.finished_at = now_ms()
        if run.valid is not None:
            await self.store.record_chain_verification(ChainVerificationRecord(
                id=run.id, started_at=run.started_at, finished_at=run.finished_at, valid=run.valid,
                checked=run.checked, head_seq=run.total, head_hash=run.head_hash,
                first_invalid=run.first_invalid, key_id=run.key_id))

    async def stop(self) -> None:
        run = self.current
        if run is not None and run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
