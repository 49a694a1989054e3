"""The purge job's background loop (docs/retention.md).

Every `retention.interval_minutes` (and at once on POST /v1/retention/run) a job is created
and run batch after batch, each batch its own write op submitted only once the previous one
has committed, so intake queues behind at most one batch. A job left `running` by a previous
process (a crash, a SIGKILL) is resumed at start, from its last committed cursor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from .config import Config
from .errors import StorageUnavailable
from .progress import Progress
from .services import cancel
from .timefmt import now_ms

log = logging.getLogger("recalled_lite.retention")

# Tests only: hold every batch's transaction open this long after its deletes, so that a
# SIGKILL lands inside a batch (tests/test_retention_server.py). Never set in production.
PAUSE_ENV = "RECALLED_TEST_RETENTION_PAUSE_MS"
# Consecutive failures of one job's batches before it is marked failed (and the next run retries).
MAX_FAILURES = 5
# After each batch the job waits this many times as long as the batch took: the purge then
# takes at most half of the writer's time, and intake keeps most of its throughput during
# a long purge (BENCHMARKS.md, "Intake during a retention purge").
BATCH_REST = 1.0
VACUUM_PAGES = 2048  # per write op, after a job that purged something (auto_vacuum = INCREMENTAL)


class RetentionService:
    def __init__(self, config: Config) -> None:
        self.config = config.retention
        self.interval = self.config.interval_minutes * 60.0
        self.pause = float(os.environ.get(PAUSE_ENV, "0") or 0) / 1000.0
        self.next_run_at: int | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.store: Any = None

    async def start(self, ctx: Any) -> None:
        self.store = ctx.store
        ctx.retention = self
        if self.pause:
            log.warning("retention test pause is active (%s): never in production", PAUSE_ENV)
        self._wake = asyncio.Event()
        self.next_run_at = now_ms() + int(self.interval * 1000)
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        await cancel(self._task)

    async def request(self, reason: str, audit: Any = None) -> tuple[Any, bool]:
        """Start a job now (or return the one running): (job, created)."""
        job, created = await self.store.create_retention_job("manual", reason, audit=audit)
        assert self._wake is not None
        self._wake.set()
        return job, created

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self._run_pending()  # at start: a job a previous process left running
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention: the purge job stopped; it resumes at the next run")
            timeout = max(0.0, ((self.next_run_at or 0) - now_ms()) / 1000.0)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                self.next_run_at = now_ms() + int(self.interval * 1000)
                try:
                    await self.store.create_retention_job("schedule", "retention.interval_minutes")
                except Exception:
                    log.exception("retention: could not start the scheduled purge job")
            self._wake.clear()

    async def _run_pending(self) -> None:
        job = await self.store.running_retention_job()
        while job is not None:
            await self._run(job)
            job = await self.store.running_retention_job()

    async def _run(self, job: Any) -> None:
        started = time.monotonic()
        log.info("retention: purge job running", extra={"fields": {"job_id": job.id, "from_seq": job.cursor_seq,
                                                                   "to_seq": job.stop_seq}})
        bar = Progress(f"retention purge {job.id}")
        failures = 0
        purged_before = job.purged
        while job.status == "running":
            try:
                batch_started = time.monotonic()
                job = await self.store.retention_batch(job.id, self.config.default_days, self.config.batch_size,
                                                       self.pause)
                failures = 0
                if job.status == "running":
                    await asyncio.sleep(max(0.0, time.monotonic() - batch_started - self.pause) * BATCH_REST)
            except StorageUnavailable:
                raise  # shutting down, or the disk is full: the job stays running and resumes
            except Exception as exc:
                failures += 1
                log.warning("retention: a purge batch failed (%s), attempt %d of %d", exc, failures, MAX_FAILURES)
                if failures >= MAX_FAILURES:
                    await self.store.fail_retention_job(job.id, f"{type(exc).__name__}: {exc}")
                    return
                await asyncio.sleep(min(2 ** failures * 0.1, 5))
                continue
            bar.update(job.cursor_seq, job.stop_seq)
        bar.finish()
        log.info("retention: purge job finished", extra={"fields": {
            "job_id": job.id, "status": job.status, "purged": job.purged, "held": job.held,
            "batches": job.batches, "seconds": round(time.monotonic() - started, 2)}})
        if job.purged > purged_before:
            # The full-text index's merge (the same bounded steps as after an erasure), then
            # the WAL truncation, so the purged text is gone from the file too.
            await self.store.reclaim_purged_text()
            while await self.store.retention_vacuum(VACUUM_PAGES) > 0:
                await asyncio.sleep(0)
