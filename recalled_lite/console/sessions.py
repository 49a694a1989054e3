"""Console sessions: a random id in a cookie, its SHA-256 in the database, the key behind it
checked on every request.

* The cookie carries only ``secrets.token_urlsafe(32)``; the server keeps its hash
  (``console_sessions``), so the database alone signs nobody in.
* A session is as strong as its key, at every request: a revoked (or deleted) key ends
  its sessions at once, read from the store's key cache (no query).
* Idle sessions end after ``console.session_idle_hours``. Use is noted in memory and
  written at most once a minute (``SessionBook.flush``), like the keys' last use.
* CSRF tokens are an HMAC of the session (or, before sign-in, of a random login cookie)
  under a key derived from the server secret: nothing to store, nothing to guess.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from ..storage.base import ApiKeyRecord, ConsoleSession
from ..timefmt import now_ms

SESSION_COOKIE = "recalled_console"
LOGIN_COOKIE = "recalled_console_login"
COOKIE_PATH = "/console"
LINK_MINUTES = 10


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _mac(key: bytes, purpose: bytes, value: str) -> str:
    digest = hmac.new(key, purpose + b"\0" + value.encode("utf-8", "surrogatepass"), "sha256").digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def csrf_token(key: bytes, session_hash: str) -> str:
    return _mac(key, b"session", session_hash)


def login_csrf_token(key: bytes, login_cookie: str) -> str:
    return _mac(key, b"login", login_cookie)


def tokens_match(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def cookie_header(name: str, value: str, *, secure: bool, max_age: int | None = None) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Strict, Path=/console, Secure when asked."""
    parts = [f"{name}={value}", f"Path={COOKIE_PATH}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def wants_secure_cookie(scope: dict[str, Any], always: bool) -> bool:
    # uvicorn sets the scheme from X-Forwarded-Proto for trusted proxies (127.0.0.1 by default).
    return always or scope.get("scheme") == "https"


@dataclass(slots=True)
class Viewer:
    """Who is looking: the signed-in key, its session and the session's CSRF token."""

    key: ApiKeyRecord
    session: ConsoleSession
    csrf: str

    def can(self, scope: str) -> bool:
        return "admin" in self.key.scopes or scope in self.key.scopes


class SessionBook:
    """The sessions this process knows, with their last use; the database is the record."""

    def __init__(self, store: Any, idle_ms: int) -> None:
        self.store = store
        self.idle_ms = idle_ms
        self._known: dict[str, ConsoleSession] = {}
        self._seen: dict[str, int] = {}

    async def open(self, key: ApiKeyRecord) -> str:
        """A new session for `key`; returns the cookie value (shown to nobody else)."""
        token = new_token()
        now = now_ms()
        session = ConsoleSession(token_hash(token), key.id, now, now)
        await self.store.create_console_session(session)
        self._known[session.token_hash] = session
        return token

    def knows(self, token: str) -> bool:
        """Whether the session is in memory (finding it costs no database read)."""
        return token_hash(token) in self._known

    async def find(self, token: str) -> ConsoleSession | None:
        """The live session behind a cookie value, or None (unknown, or idle too long)."""
        hashed = token_hash(token)
        session = self._known.get(hashed)
        if session is None:
            session = await self.store.load_console_session(hashed)
            if session is None:
                return None
            self._known[hashed] = session
        now = now_ms()
        if now - session.last_seen_at > self.idle_ms:
            await self.close(hashed)
            return None
        return session

    def touch(self, session: ConsoleSession) -> None:
        session.last_seen_at = now = now_ms()
        self._seen[session.token_hash] = now

    async def close(self, hashed: str) -> None:
        self._known.pop(hashed, None)
        self._seen.pop(hashed, None)
        await self.store.delete_console_sessions([hashed])

    async def flush(self) -> None:
        """Write the last use of every session used since the previous flush (one write)."""
        seen, self._seen = self._seen, {}
        if seen:
            try:
                await self.store.touch_console_sessions(seen)
            except Exception:
                for hashed, at in seen.items():
                    self._seen.setdefault(hashed, at)
                raise

    async def purge(self) -> None:
        await self.flush()  # a session used a moment ago must not look idle to the purge
        now = now_ms()
        await self.store.purge_console_sessions(now - self.idle_ms, now)
        self._known = {h: s for h, s in self._known.items() if now - s.last_seen_at <= self.idle_ms}
