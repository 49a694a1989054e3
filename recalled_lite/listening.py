"""uvicorn's Server, with "listening" said only once the socket is bound.

uvicorn runs the lifespan (store, delivery) first and binds afterwards; a port already in
use is logged by uvicorn as a bare OSError and the process exits 1. Logging "listening"
before `run()` would claim a port the process never got, so the line comes from here,
after `startup()` has bound it, and a failed bind gets a message that says what to do.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import uvicorn

log = logging.getLogger("recalled_lite")


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_listening: Callable[[list[tuple[str, int]]], None]) -> None:
        super().__init__(config)
        self._on_listening = on_listening

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            # uvicorn exits here when the application's startup failed (it said why) or the
            # bind failed after a clean startup: only the second is about the address.
            lifespan = getattr(self, "lifespan", None)
            if not self.started and lifespan is not None and not lifespan.should_exit:
                log.error("could not start listening: the address is in use or not available", extra={"fields": {
                    "host": self.config.host, "port": self.config.port,
                    "hint": "another server may be using the port: stop it, or pass --port (or RECALLED_PORT)",
                }})
            raise
        if self.started:
            self._on_listening(bound_addresses(self))


def bound_addresses(server: uvicorn.Server) -> list[tuple[str, int]]:
    addresses = []
    for listener in getattr(server, "servers", []):
        for sock in listener.sockets or ():
            name = sock.getsockname()
            addresses.append((str(name[0]), int(name[1])))
    return addresses
