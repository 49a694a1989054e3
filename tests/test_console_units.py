"""Console units without a server process: pure helpers, the key-use flusher, the session
book, link expiry on a real SQLite store, the job preview count, and the sign-in limiter
hook (in-process ASGI, which is fine for a unit test)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest

from recalled_lite.auth import ADMIN, new_key_record
from recalled_lite.console.links import default_key
from recalled_lite.console.render import sentence, url_with, when
from recalled_lite.console.sessions import (
    SessionBook, cookie_header, csrf_token, login_csrf_token, tokens_match, wants_secure_cookie,
)
from recalled_lite.console.signin import safe_next
from recalled_lite.console.webhooks import event_types_of
from recalled_lite.key_usage import KeyUsage, KeyUsageFlusher
from recalled_lite.storage.sqlite.store import SqliteStore
from recalled_lite.timefmt import now_ms


@pytest.mark.parametrize("target,expected", [
    ("/console/keys?x=1", "/console/keys?x=1"),
    (None, "/console/"),
    ("", "/console/"),
    ("https://evil.example/console/", "/console/"),
    ("//evil.example/console/", "/console/"),
    ("/console//evil.example", "/console/"),
    ("/console/\\evil", "/console/"),
    ("/v1/keys", "/console/"),
])
def test_sign_in_returns_only_to_console_paths(target, expected):
    assert safe_next(target) == expected


def test_event_type_lists_accept_commas_spaces_and_lines():
    assert event_types_of("invoice.paid, user.*\nteam.created") == ["invoice.paid", "user.*", "team.created"]
    assert event_types_of("  ") is None


def test_errors_read_as_sentences():
    assert sentence("the key is revoked") == "The key is revoked."
    assert sentence("Done!") == "Done!"
    assert sentence("") == "Something went wrong."


def test_links_keep_only_the_filters_that_are_set():
    assert url_with("/console/events", {"action": "a.*", "actor_id": ""}, cursor=None) == "/console/events?action=a.%2A"
    assert url_with("/console/events", {}) == "/console/events"


def test_times_render_as_utc_with_a_machine_readable_value():
    html = str(when(0))
    assert 'datetime="1970-01-01T00:00:00.000Z"' in html and ">1970-01-01 00:00:00 UTC<" in html
    assert "never" in str(when(None))


def test_cookies_are_secure_over_https_or_when_configured():
    assert wants_secure_cookie({"scheme": "https"}, False)
    assert not wants_secure_cookie({"scheme": "http"}, False)
    assert wants_secure_cookie({"scheme": "http"}, True)
    header = cookie_header("c", "v", secure=True)
    assert header == "c=v; Path=/console; HttpOnly; SameSite=Strict; Secure"
    assert "Max-Age=0" in cookie_header("c", "", secure=False, max_age=0)


def test_csrf_tokens_are_bound_to_their_session_and_purpose():
    key = b"k" * 32
    assert tokens_match(csrf_token(key, "s1"), csrf_token(key, "s1"))
    assert not tokens_match(csrf_token(key, "s1"), csrf_token(key, "s2"))
    assert csrf_token(key, "x") != login_csrf_token(key, "x")
    assert not tokens_match(csrf_token(key, "s1"), None)
    assert not tokens_match(csrf_token(key, "s1"), "é" * 43)


class FakeStore:
    def __init__(self) -> None:
        self.usage_writes: list[dict] = []
        self.fail = False
        self.sessions: dict = {}
        self.touches: list[dict] = []
        self.deleted: list[str] = []

    async def record_key_usage(self, used):
        if self.fail:
            raise RuntimeError("disk full")
        self.usage_writes.append(dict(used))

    async def create_console_session(self, session):
        self.sessions[session.token_hash] = dataclasses.replace(session)  # a copy, as a database would keep

    async def load_console_session(self, token_hash):
        return self.sessions.get(token_hash)

    async def touch_console_sessions(self, seen):
        self.touches.append(dict(seen))

    async def delete_console_sessions(self, hashes):
        self.deleted.extend(hashes)
        for h in hashes:
            self.sessions.pop(h, None)


class Ctx:
    def __init__(self, store) -> None:
        self.store = store
        self.key_usage = KeyUsage()


def test_key_use_is_written_once_per_flush_for_all_keys():
    async def scenario():
        ctx = Ctx(FakeStore())
        flusher = KeyUsageFlusher(interval=3600)
        await flusher.start(ctx)
        for _ in range(1000):
            ctx.key_usage.note("key_a")
            ctx.key_usage.note("key_b")
        assert ctx.key_usage.last_used("key_a", None) is not None
        await flusher.flush()
        await flusher.flush()  # nothing new: no write
        assert len(ctx.store.usage_writes) == 1 and set(ctx.store.usage_writes[0]) == {"key_a", "key_b"}
        ctx.store.fail = True
        ctx.key_usage.note("key_c")
        with pytest.raises(RuntimeError):
            await flusher.flush()
        ctx.store.fail = False
        await flusher.stop()  # the final flush retries what failed
        assert set(ctx.store.usage_writes[-1]) == {"key_c"}
    asyncio.run(scenario())


def test_last_used_prefers_the_newer_of_stored_and_noted():
    usage = KeyUsage()
    assert usage.last_used("k", 5) == 5
    usage.note("k")
    assert usage.last_used("k", 5) > 5
    assert usage.last_used("k", 10**15) == 10**15


def test_the_session_book_ends_idle_sessions_and_writes_use_in_batches():
    async def scenario():
        store = FakeStore()
        book = SessionBook(store, idle_ms=60_000)
        _, key = new_key_record("k", frozenset({ADMIN}), None)
        token = await book.open(key)
        session = await book.find(token)
        assert session is not None and session.key_id == key.id
        for _ in range(50):
            book.touch(session)
        await book.flush()
        await book.flush()
        assert len(store.touches) == 1, "one write for many uses"
        assert await book.find("not-a-token") is None
        session.last_seen_at -= 61_000  # idle past the limit
        assert await book.find(token) is None
        assert store.deleted == [session.token_hash]
    asyncio.run(scenario())


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "r.db", secret=b"s" * 32)
    yield s
    s.close()


def test_sign_in_links_work_once_and_expire(store):
    plaintext, key = new_key_record("admin", frozenset({ADMIN}), None)
    store.create_key_sync(key)
    now = now_ms()

    store.create_console_link_sync("h1", key.id, now, now + 600_000)  # as the CLI does, with no loop
    store.create_console_link_sync("h2", key.id, now, now + 600_000)

    async def scenario():
        store.start(asyncio.get_running_loop())
        assert await store.redeem_console_link("h1", now + 601_000, consume=True) is None, "expired"
        assert await store.redeem_console_link("h2", now + 5_000, consume=False) == key.id
        assert await store.redeem_console_link("h2", now + 5_000, consume=True) == key.id
        assert await store.redeem_console_link("h2", now + 6_000, consume=True) is None, "used"
        assert await store.redeem_console_link("nope", now, consume=True) is None
    asyncio.run(scenario())


def test_the_default_link_key_is_the_oldest_active_unbound_admin(store):
    _, bound = new_key_record("bound", frozenset({ADMIN}), "org_x")
    _, reader = new_key_record("reader", frozenset({"events:read"}), None)
    _, first = new_key_record("first", frozenset({ADMIN}), None)
    _, second = new_key_record("second", frozenset({ADMIN}), None)
    second.created_at = first.created_at + 1
    for record in (bound, reader, second, first):
        store.create_key_sync(record)
    assert default_key(store).id == first.id
    store.revoke_key_sync(first.id, None)
    assert default_key(store).id == second.id


class CountingLimiter:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.successes: list[str] = []
        self.locked = False

    def retry_after(self, address):
        return 29.2 if self.locked else None

    def failed(self, address):
        self.failures.append(address)

    def succeeded(self, address):
        self.successes.append(address)


def test_the_sign_in_hook_sees_every_attempt_and_can_lock_out(tmp_path: Path):
    from starlette.testclient import TestClient

    from recalled_lite.app import create_app
    from recalled_lite.config import Config
    from recalled_lite.console.service import ConsoleService

    config = Config()
    store = SqliteStore(tmp_path / "r.db", secret=b"s" * 32)
    plaintext, key = new_key_record("admin", frozenset({ADMIN}), None)
    store.create_key_sync(key)
    limiter = CountingLimiter()
    app = create_app(config, store, services=[ConsoleService(config.console, sign_in_limiter=limiter)])
    with TestClient(app, base_url="http://testserver") as client:
        def attempt(typed: str):
            login = client.get("/console/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
            return client.post("/console/login", data={"csrf": csrf, "key": typed}, follow_redirects=False)

        assert attempt("rec_live_wrongkey_" + "x" * 32).status_code == 401
        assert limiter.failures == ["testclient"]
        assert attempt(plaintext).status_code == 303
        assert limiter.successes == ["testclient"]
        client.cookies.clear()  # a new browser
        limiter.locked = True
        locked = attempt(plaintext)
        assert locked.status_code == 429 and locked.headers["retry-after"] == "30"
        assert "too many failed sign-ins from this address; try again in 30 seconds" in locked.text.lower()


class ChainStore:
    """verify_chain over a fake chain of `head` events, failing at `bad` if given."""

    def __init__(self, head: int, bad: int | None = None) -> None:
        self.head, self.bad = head, bad
        self.ranges: list[tuple[int, int]] = []
        self.recorded: list = []

    async def chain_head(self):
        return self.head, "sha256:head"

    async def verify_chain(self, from_seq, to_seq):
        self.ranges.append((from_seq, to_seq))
        if self.bad is not None and from_seq <= self.bad <= to_seq:
            return {"valid": False, "checked": self.bad - from_seq,
                    "firstInvalid": {"seq": self.bad, "id": "evt_x", "reason": "hash mismatch"}}
        return {"valid": True, "checked": to_seq - from_seq + 1, "firstInvalid": None}

    async def record_chain_verification(self, record):
        self.recorded.append(record)


def test_whole_chain_verification_goes_in_chunks_and_is_recorded(monkeypatch):
    from recalled_lite.console import verification

    monkeypatch.setattr(verification, "CHUNK", 4)
    _, admin = new_key_record("admin", frozenset({ADMIN}), None)
    _, bound = new_key_record("bound", frozenset({ADMIN}), "org_x")

    async def scenario():
        store = ChainStore(10)
        runner = verification.ChainVerification(store)
        run = await runner.start(admin)
        assert await runner.start(admin) is run, "one run at a time"
        await run.task
        assert store.ranges == [(1, 4), (5, 8), (9, 10)]
        assert run.progress()["checked"] == 10 and run.valid
        (record,) = store.recorded
        assert record.valid and record.checked == 10 and record.head_seq == 10 and record.key_id == admin.id

        broken = ChainStore(10, bad=6)
        run = await verification.ChainVerification(broken).start(admin)
        await run.task
        assert broken.ranges == [(1, 4), (5, 8)], "stops at the first failure"
        assert run.valid is False and run.first_invalid["seq"] == 6 and run.checked == 5
        assert broken.recorded[0].first_invalid["reason"] == "hash mismatch"

        from recalled_lite.errors import Forbidden
        with pytest.raises(Forbidden):
            await verification.ChainVerification(ChainStore(3)).start(bound)
    asyncio.run(scenario())
