"""Leases on `sending` rows, enforced while the server runs.

Every delivery taken by this instance (handed off at intake or claimed) is leased to it
until ``lease_until``. The keeper renews the leases of every row still held in memory
(waiting, loading, in flight, or with its result not yet recorded) and takes back the
others whose lease ran out: a delivery lost in memory is made due again and sent with the
same webhook-id, without a restart. A second instance sharing the table would take back a
dead instance's rows the same way, once their lease ran out, and never a live instance's:
a live one renews its leases well before they end (every third of ``lease_seconds``).
A graceful stop releases what is left (``WebhookStore.release``), so the other instances
take it at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Callable

from .quarantine import describe

log = logging.getLogger("recalled_lite.webhooks")


def instance_name(host: str, port: int) -> str:
    """This server's name on its leases: the same for a restart of the same server (host
    name, listen address and port), so a restarted instance takes back at once what its
    previous run held instead of waiting for those leases to end; different for every
    server that runs beside it (they cannot share an address and port). A backend that
    finds the name in use by a live process picks a random one (storage/postgres)."""
    return f"ins_{socket.gethostname()}/{host}:{port}"


class LeaseKeeper:
    def __init__(self, storage: Any, lease_ms: int, held: Callable[[], set[str]]) -> None:
        self.storage = storage
        self.interval = max(lease_ms / 3000, 0.1)
        self._held = held
        self.reclaimed = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.tick()

    async def tick(self) -> int:
        held = self._held()
        try:
            await self.storage.renew_leases(sorted(held))
            count = await self.storage.reclaim_expired(frozenset(held))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next tick tries again; leases have two more ticks of slack
            log.warning("renewing webhook delivery leases failed: %s", describe(exc))
            return 0
        if count:
            self.reclaimed += count
            log.warning("webhook deliveries whose lease ran out were made due again", extra={"fields": {
                "count": count}})
        return count
