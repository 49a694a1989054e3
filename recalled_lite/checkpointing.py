"""Signing checkpoints while the server runs.

`CheckpointService` signs a new checkpoint at most every `checkpoints.interval_seconds`
while the tree grows, at start (when the tree grew while the server was down, or the key
changed) and at shutdown, plus on demand (`POST /v1/checkpoint`, exports). Routes that need
a checkpoint covering an event (proofs, receipts) wait for the next due one: readers cannot
make the server sign faster than the interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .config import Config
from .integrity.checkpoint import format_checkpoint
from .integrity.note import Signer, sign
from .services import cancel
from .storage.base import CheckpointRecord
from .timefmt import now_ms

log = logging.getLogger("recalled_lite.checkpoints")


class CheckpointService:
    """Started after the store, stopped before it closes (see commands.serve._services)."""

    def __init__(self, config: Config, signer: Signer, origin: str) -> None:
        self.interval = config.checkpoints.interval_seconds
        self.signer = signer
        self.origin = origin
        self.key_name = f"{signer.name}+{signer.key_id:08x}"
        self.store: Any = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_made = 0.0  # monotonic time of the last scheduled or forced checkpoint
        self._wake = asyncio.Event()
        self.made = 0

    def build_note(self, tree_size: int, root: bytes) -> tuple[str, str]:
        """Called on the writer thread, inside the transaction that stores the checkpoint."""
        return sign(format_checkpoint(self.origin, tree_size, root), self.signer), self.key_name

    async def start(self, ctx: Any) -> None:
        self.store = ctx.store
        ctx.checkpoints = self
        await self.make_now()  # the tree may have grown while down, or the key changed
        self._task = asyncio.create_task(self._run(), name="checkpoints")

    async def stop(self) -> None:
        await cancel(self._task)
        try:
            await self.make_now()  # a stopped server's log is covered to its last event
        except Exception:
            log.exception("could not sign the final checkpoint; the next start signs it")

    def _current(self) -> CheckpointRecord | None:
        latest = self.store.latest_checkpoint
        if latest is not None and latest.tree_size == self.store.tree_size and latest.key_name == self.key_name:
            return latest
        return None

    async def make_now(self) -> tuple[CheckpointRecord, bool]:
        """(a checkpoint of the current tree, whether it is new). Signs only if the tree grew
        (or the key changed) since the latest one."""
        async with self._lock:
            await self.store.sync_head()  # another instance may have appended or signed
            current = self._current()
            if current is not None:
                return current, False
            record = await self.store.append_checkpoint(self.build_note, now_ms())
            self._last_made = time.monotonic()
            self.made += 1
            return record, True

    async def covering(self, tree_size: int) -> CheckpointRecord:
        """The latest checkpoint once it covers `tree_size` leaves; waits for the next due one."""
        while True:
            latest = self.store.latest_checkpoint
            if latest is not None and latest.tree_size >= tree_size:
                return latest
            due = self._last_made + self.interval - time.monotonic()
            if due > 0:
                await asyncio.sleep(due)
            record, _ = await self.make_now()
            if record.tree_size >= tree_size:
                return record

    async def _run(self) -> None:
        while True:
            due = self._last_made + self.interval - time.monotonic()
            await asyncio.sleep(max(due, 0.05))
            try:
                if self.store.tree_size > (self.store.latest_checkpoint.tree_size
                                           if self.store.latest_checkpoint else -1):
                    await self.make_now()
                else:
                    self._last_made = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("signing a checkpoint failed; retrying at the next interval")
                self._last_made = time.monotonic()
