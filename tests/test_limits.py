"""SPEC §1 429 rows: per-key rate limits (RATE_LIMITED + RateLimit headers) and per-organization
monthly quotas (PLAN_LIMIT_REACHED + details.limit). Exact within one process; tested on the real
server, with the arithmetic pinned by unit tests on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from recalled_lite.config import LimitsConfig, KeyRateLimit
from recalled_lite.errors import PlanLimitReached, RateLimited
from recalled_lite.limits import Limits, Quotas, RateLimiter, month_start_ms, next_month_start_ms


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def headers_of(limiter: RateLimiter, key_id: str = "key_a", prefix: str = "aaaaaaaa") -> dict[str, str]:
    with pytest.raises(RateLimited) as caught:
        limiter.take(key_id, prefix)
    assert caught.value.status == 429 and caught.value.code == "RATE_LIMITED"
    return caught.value.headers


def test_token_bucket_arithmetic_on_a_fake_clock():
    clock = FakeClock()
    limiter = RateLimiter(per_second=0.5, burst=3, overrides={}, clock=clock)
    for _ in range(3):
        limiter.take("key_a", "aaaaaaaa")
    headers = headers_of(limiter)
    # empty bucket, 0.5 token/s: one token is back in 2 s; the whole bucket refills in 6 s
    assert headers == {"Retry-After": "2", "RateLimit-Reset": "2",
                       "RateLimit-Policy": '"key";q=3;w=6', "RateLimit": '"key";r=0;t=2'}
    clock.now += 1.5  # 0.75 token: 0.25 missing -> 0.5 s -> rounded up to 1
    assert headers_of(limiter)["Retry-After"] == "1"
    clock.now += 0.5  # exactly one token
    limiter.take("key_a", "aaaaaaaa")
    clock.now += 100  # refill caps at the burst
    for _ in range(3):
        limiter.take("key_a", "aaaaaaaa")
    headers_of(limiter)
    # other keys have their own bucket
    limiter.take("key_b", "bbbbbbbb")


def test_overrides_by_key_id_and_prefix_and_burst_default():
    clock = FakeClock()
    limiter = RateLimiter(per_second=1, burst=1, clock=clock, overrides={
        "key_fast": KeyRateLimit(per_second=100, burst=50),
        "unlimitd": KeyRateLimit(per_second=0),
        "ratenoburst": KeyRateLimit(per_second=2.5),
    })
    for _ in range(50):
        limiter.take("key_fast", "whatever")
    assert headers_of(limiter, "key_fast", "whatever")["RateLimit-Policy"] == '"key";q=50;w=1'
    for _ in range(1000):
        limiter.take("key_x", "unlimitd")
    for _ in range(3):  # burst 0 = per_second rounded up
        limiter.take("key_y", "ratenoburst")
    assert headers_of(limiter, "key_y", "ratenoburst")["RateLimit-Policy"] == '"key";q=3;w=2'
    limiter.take("key_plain", "plainkey")
    assert headers_of(limiter, "key_plain", "plainkey")["RateLimit"] == '"key";r=0;t=1'


def test_defaults_limit_nothing():
    limits = Limits.from_config(LimitsConfig())
    assert limits.rate is None and limits.quotas is None


def test_month_arithmetic():
    assert month_start_ms(2026, 12) == 1796083200000  # 2026-12-01T00:00:00Z
    assert next_month_start_ms(2026, 12) == 1798761600000  # 2027-01-01T00:00:00Z
    quotas = Quotas({"org": 2}, 0)
    quotas.month = (2026, 12)
    quotas.reserve({"org": 2}, month_start_ms(2026, 12))
    now = next_month_start_ms(2026, 12) - 1500  # 1.5 s before the new month
    with pytest.raises(PlanLimitReached) as caught:
        quotas.reserve({"org": 1}, now)
    assert caught.value.details["limit"] == 2
    assert caught.value.details["resets_at"] == "2027-01-01T00:00:00.000Z"
    assert caught.value.headers["Retry-After"] == "2"


# -- the real server ----------------------------------------------------------------------------

RATE_CONFIG = """
[limits]
rate_limit_per_second = 0.2
rate_limit_burst = 4
[limits.keys.testadmn]     # the test admin key's prefix: not limited
per_second = 0
"""


def test_rate_limit_on_the_real_server(make_server):
    srv = make_server("rate", config_text=RATE_CONFIG)
    key = srv.create_key(["events:write", "events:read"])
    with srv.client(key=key) as c:
        statuses = [c.post("/v1/events", json={"action": "rl.x"}).status_code for _ in range(4)]
        assert statuses == [200] * 4
        r = c.get("/v1/events")
        assert r.status_code == 429, r.text
        error = r.json()["error"]
        assert error["code"] == "RATE_LIMITED"
        # 0.2 token/s: one token back in 5 s; the full bucket of 4 in 20 s
        assert r.headers["retry-after"] == "5"
        assert r.headers["ratelimit-reset"] == "5"
        assert r.headers["ratelimit-policy"] == '"key";q=4;w=20'
        assert r.headers["ratelimit"] == '"key";r=0;t=5'
        assert r.headers["x-request-id"]
    with srv.client() as admin:  # overridden by prefix: unlimited
        assert all(admin.get("/v1/events?limit=1").status_code == 200 for _ in range(10))


def test_rate_limit_is_exact_under_concurrency(make_server):
    srv = make_server("rate_exact", config_text=RATE_CONFIG.replace("rate_limit_burst = 4", "rate_limit_burst = 20")
                      .replace("0.2", "0.001"))
    key = srv.create_key(["events:write"])

    async def run():
        async with srv.async_client(key=key) as c:
            responses = await asyncio.gather(*(c.post("/v1/events", json={"action": f"rl.c{i}"}) for i in range(50)))
        return [r.status_code for r in responses]

    statuses = asyncio.run(run())
    assert statuses.count(200) == 20 and statuses.count(429) == 30


QUOTA_CONFIG = """
[limits]
monthly_events_default = 0
[limits.monthly_events]
org_q = 5
org_race = 10
org_dd = 2
"" = 2
"""


def test_monthly_quota_all_or_nothing_and_survives_restart(make_server):
    srv = make_server("quota", config_text=QUOTA_CONFIG)
    with srv.client() as c:
        for i in range(3):
            assert c.post("/v1/events", json={"action": "q.x", "organization": "org_q"}).status_code == 200
        over = c.post("/v1/events/batch", json={"events": [{"action": "q.b", "organization": "org_q"}] * 3})
        assert over.status_code == 429, over.text
        error = over.json()["error"]
        assert error["code"] == "PLAN_LIMIT_REACHED"
        assert error["details"]["limit"] == 5 and error["details"]["used"] == 3
        assert int(over.headers["retry-after"]) >= 1
        listed = c.get("/v1/events", params={"organization": "org_q"}).json()["data"]
        assert len(listed) == 3  # nothing of the refused batch was stored
        fits = c.post("/v1/events/batch", json={"events": [{"action": "q.b", "organization": "org_q"}] * 2})
        assert fits.status_code == 200
        assert c.post("/v1/events", json={"action": "q.y", "organization": "org_q"}).status_code == 429
        assert c.post("/v1/events", json={"action": "q.z", "organization": "org_free"}).status_code == 200
        # events without an organization: the "" quota
        assert [c.post("/v1/events", json={"action": "q.none"}).status_code for _ in range(3)] == [200, 200, 429]
    srv.restart()
    with srv.client() as c:
        r = c.post("/v1/events", json={"action": "q.after", "organization": "org_q"})
        assert r.status_code == 429 and r.json()["error"]["details"]["limit"] == 5
        assert c.post("/v1/events", json={"action": "q.after", "organization": "org_free"}).status_code == 200


def test_monthly_quota_is_exact_under_concurrency_and_dedup_gives_back(make_server):
    srv = make_server("quota_race", config_text=QUOTA_CONFIG)

    async def run():
        async with srv.async_client() as c:
            responses = await asyncio.gather(*(
                c.post("/v1/events", json={"action": f"q.r{i}", "organization": "org_race"}) for i in range(30)))
        return [r.status_code for r in responses]

    statuses = asyncio.run(run())
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    with srv.client() as c:
        stored = c.get("/v1/events", params={"organization": "org_race", "limit": 200}).json()["data"]
        assert len(stored) == 10
        # a deduplicated repeat stores nothing, so it gives its unit back
        first = {"action": "q.d", "organization": "org_dd", "idempotency_key": "dd-1"}
        assert c.post("/v1/events", json=first).status_code == 200
        again = c.post("/v1/events", json=first)
        assert again.status_code == 200 and again.json()["deduplicated"] is True
        assert c.post("/v1/events", json={"action": "q.d2", "organization": "org_dd"}).status_code == 200
        assert c.post("/v1/events", json={"action": "q.d3", "organization": "org_dd"}).status_code == 429


def test_bad_limits_config_names_the_key(tmp_path):
    from recalled_lite.config import load_config
    from recalled_lite.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text("[limits]\nrate_limit_per_second = -1\n")
    with pytest.raises(ConfigError, match="limits.rate_limit_per_second"):
        load_config(str(path), environ={})


def _quota_event(org: str):
    import msgspec

    from recalled_lite.auth import new_key_record
    from recalled_lite.config import EventsConfig
    from recalled_lite.intake import prepare_event
    from recalled_lite.schemas import EventIn

    _, key = new_key_record("k", frozenset({"admin"}), None)
    event = msgspec.convert({"action": "q.cancel", "organization": org}, EventIn)
    return prepare_event(event, key, EventsConfig(), 1_800_000_000_000)


def test_a_cancelled_request_keeps_the_quota_its_committed_write_used(tmp_path):
    """The client goes away after its write was submitted: the writer commits anyway, so the
    quota must count it (it used to be given back, letting the organization over its limit)."""
    import sqlite3

    from recalled_lite.limits import append_within_quota
    from recalled_lite.storage.sqlite.store import SqliteStore

    store = SqliteStore(tmp_path / "q.db", secret=b"q" * 64, busy_timeout_ms=10_000)
    quotas = Quotas({"org_c": 5}, 0)

    async def scenario() -> tuple[int, int, int]:
        store.start(asyncio.get_running_loop())
        await quotas.ensure_month(store, 1_800_000_000_000)
        # Another connection holds the write lock: the write waits inside the writer.
        blocker = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        request = asyncio.ensure_future(
            append_within_quota(quotas, store, [_quota_event("org_c")], 1_800_000_000_000))
        await asyncio.sleep(0.2)  # submitted, and stuck behind the lock
        reserved = quotas.counts["org_c"]
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        after_cancel = quotas.counts["org_c"]
        blocker.execute("ROLLBACK")
        blocker.close()
        for _ in range(300):  # the write commits once the lock is free
            if await store.read(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0]):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        stored = await store.read(lambda c: c.execute(
            "SELECT count(*) FROM events WHERE organization = 'org_c'").fetchone()[0])
        return reserved, after_cancel, stored

    try:
        reserved, after_cancel, stored = asyncio.run(scenario())
    finally:
        store.close()
    assert reserved == 1
    assert stored == 1                 # the write committed although its request was cancelled
    assert after_cancel == 1           # so the cancellation did not give the unit back
    assert quotas.counts["org_c"] == 1  # nor did the write settling


def test_a_failed_write_gives_its_reservation_back(tmp_path):
    from recalled_lite.errors import StorageError
    from recalled_lite.limits import append_within_quota

    quotas = Quotas({"org_f": 5}, 0)
    quotas.month, quotas.counts = (2027, 1), {}

    class FailingStore:  # the write itself fails: nothing was stored
        async def append_events(self, prepared):
            await asyncio.sleep(0)
            raise StorageError("database error: disk I/O error")

    with pytest.raises(StorageError):
        asyncio.run(append_within_quota(quotas, FailingStore(), [_quota_event("org_f")] * 2,
                                        1_800_000_000_000))
    assert quotas.counts.get("org_f", 0) == 0
