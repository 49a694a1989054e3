"""The console's background side: its sessions, the sign-in hook, chain verification runs.

Started after the store like every service (``commands.serve._services``) and found by the route
handlers in ``ctx.services``, as the delivery service is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from starlette.requests import Request

from ..config import ConsoleConfig
from ..errors import Unavailable
from ..services import cancel
from .sessions import SessionBook
from .verification import ChainVerification

log = logging.getLogger("recalled_lite.console")

FLUSH_SECONDS = 60.0
PURGE_EVERY = 10  # flushes


class SignInLimiter(Protocol):
    """THE HOOK for a per-address sign-in failure limiter (lockouts): `signin.sign_in` asks
    `retry_after` before checking a key, and reports every failure and success."""

    def retry_after(self, address: str) -> float | None: ...
    # The lockout's seconds when this failure starts one, else None.
    def failed(self, address: str) -> float | None: ...
    def succeeded(self, address: str) -> None: ...


class NoSignInLimit:
    """No lockout (`[abuse] lockout_after_failures = 0`)."""

    def retry_after(self, address: str) -> float | None:
        return None

    def failed(self, address: str) -> float | None:
        return None

    def succeeded(self, address: str) -> None:
        pass


class ConsoleService:
    def __init__(self, config: ConsoleConfig, sign_in_limiter: SignInLimiter | None = None) -> None:
        self.config = config
        # None: the app's own lockouts (abuse.Lockouts, `[abuse] lockout_*`), set at start.
        self.sign_in_limiter: SignInLimiter = sign_in_limiter or NoSignInLimit()
        self._own_limiter = sign_in_limiter is None
        self.book: SessionBook | None = None
        self.verification: ChainVerification | None = None
        self.csrf_key = b""
        self._task: asyncio.Task[None] | None = None

    async def start(self, ctx: Any) -> None:
        store = ctx.store
        if self._own_limiter and ctx.abuse.console_lockouts is not None:
            self.sign_in_limiter = ctx.abuse.console_lockouts
        self.csrf_key = store.derive_key("console csrf")
        self.book = SessionBook(store, int(self.config.session_idle_hours * 3600 * 1000))
        self.verification = ChainVerification(store)
        self._task = asyncio.create_task(self._run(), name="console-sessions")

    async def _run(self) -> None:
        assert self.book is not None
        rounds = 0
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            rounds += 1
            try:
                if rounds % PURGE_EVERY == 0:
                    await self.book.purge()
                else:
                    await self.book.flush()
            except Exception:
                log.exception("recording console sessions failed; retrying later")

    async def stop(self) -> None:
        await cancel(self._task)
        if self.verification is not None:
            await self.verification.stop()
        if self.book is not None:
            try:
                await self.book.flush()
            except Exception:
                log.exception("recording console sessions failed at shutdown")


def console_service(request: Request) -> ConsoleService:
    for service in request.app.state.ctx.services:
        if isinstance(service, ConsoleService) and service.book is not None:
            return service
    raise Unavailable("the console is not running", retry_after=5)
