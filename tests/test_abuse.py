"""Issue #17: abuse limits on the public edge, on the real server (docs/security.md#abuse-limits).

Every server here trusts X-Forwarded-For from 127.0.0.1, so one test process can speak from
several client addresses: the attacker's and an honest client's.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from conftest import ServerProcess
from console_support import csrf_in

ATTACKER, HONEST, OTHER = "203.0.113.7", "198.51.100.9", "192.0.2.44"
WRONG_KEY = "rec_live_nosuchky_" + "Z" * 40  # well-formed, unknown prefix: a database read each, unlimited
PROXY = '[server]\ntrusted_proxies = ["127.0.0.1/32"]\n'


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_1000_wrong_keys_from_one_address_get_429_after_the_burst_and_a_valid_key_elsewhere_is_served(make_server):
    burst = 50
    srv: ServerProcess = make_server(config_text=PROXY + f"[abuse]\nper_second = 1.0\nburst = {burst}\n"
                                     # lockouts would answer 429 after 5 failures: this test is the bucket's
                                     "lockout_after_failures = 0\n")
    statuses: list[int] = []
    honest: list[int] = []
    first_refused, refused_at = None, -1
    started = time.monotonic()
    with srv.client(key=WRONG_KEY, headers=from_address(ATTACKER)) as attacker, \
            srv.client(headers=from_address(HONEST)) as good:
        for i in range(1000):
            r = attacker.get("/v1/events")
            statuses.append(r.status_code)
            if i < burst:
                assert error_of(r) == (401, "INVALID_API_KEY"), (i, r.text)
                # the 401 of a limited route says where its address stands
                assert r.headers["RateLimit-Policy"] == f'"addr";q={burst};w={burst}'
                left = int(re.match(r'"addr";r=(\d+);t=\d+$', r.headers["RateLimit"]).group(1))
                assert left <= burst - 1 - i + (time.monotonic() - started) + 1
            elif r.status_code == 429 and first_refused is None:
                first_refused, refused_at = r, i
            if i % 20 == 0:
                h = good.get("/v1/events", params={"limit": 1})
                honest.append(h.status_code)
    elapsed = time.monotonic() - started
    assert first_refused is not None and refused_at <= burst + elapsed + 1
    body = first_refused.json()["error"]
    assert first_refused.status_code == 429 and body["code"] == "RATE_LIMITED", first_refused.text
    assert body["details"]["policy"] == "addr" and body["message"]
    assert int(first_refused.headers["Retry-After"]) >= 1
    assert first_refused.headers["RateLimit-Reset"] == first_refused.headers["Retry-After"]
    assert first_refused.headers["RateLimit-Policy"] == f'"addr";q={burst};w={burst}'
    assert first_refused.headers["RateLimit"].startswith('"addr";r=0;')
    # Past the burst only the refill (1/s) gets a request through to the key check.
    assert statuses.count(401) <= burst + elapsed + 1, (statuses.count(401), elapsed)
    assert statuses.count(429) >= 1000 - burst - elapsed - 1
    assert set(statuses) == {401, 429}
    assert honest == [200] * len(honest) and len(honest) == 50
    # The same address with a valid key is not refused either: the budget is for failures.
    with srv.client(headers=from_address(ATTACKER)) as same:
        assert same.get("/v1/events", params={"limit": 1}).status_code == 200
    with srv.client(key=None) as anon:
        assert 'recalled_abuse_refused_total{policy="addr"}' in anon.get("/metrics").text


def test_repeated_invalid_keys_lock_an_address_out_with_growing_delays(make_server):
    srv: ServerProcess = make_server(config_text=PROXY)  # the default [abuse] limits
    with srv.client(key=WRONG_KEY, headers=from_address(ATTACKER)) as attacker:
        for _ in range(5):
            assert error_of(attacker.get("/v1/events")) == (401, "INVALID_API_KEY")
        waits = []
        for _ in range(3):
            locked = attacker.get("/v1/events")
            assert error_of(locked) == (429, "RATE_LIMITED"), locked.text
            assert locked.json()["error"]["details"]["policy"] == "lockout"
            waits.append(int(locked.headers["Retry-After"]))
            assert locked.headers["RateLimit-Reset"] == locked.headers["Retry-After"]
            time.sleep(waits[-1] + 0.1)
            # the next failure after a lockout locks out again, for twice as long
            assert error_of(attacker.get("/v1/events")) == (401, "INVALID_API_KEY")
    assert waits == [1, 2, 4]
    with srv.client(headers=from_address(OTHER)) as good:
        assert good.get("/v1/events", params={"limit": 1}).status_code == 200
    log = srv.log_text()
    lockouts = [line for line in log.splitlines() if '"msg":"lockout"' in line and ATTACKER in line]
    assert len(lockouts) == 4 and '"kind":"api"' in lockouts[0] and '"failures":5' in lockouts[0]
    with srv.client(key=None) as anon:
        assert 'recalled_lockouts_total{kind="api"} 4.0' in anon.get("/metrics").text


def _sign_in(http: httpx.Client, key: str, address: str) -> httpx.Response:
    page = http.get("/console/login", headers=from_address(address))
    assert page.status_code == 200, page.text
    return http.post("/console/login", data={"csrf": csrf_in(page.text), "key": key},
                     headers=from_address(address))


def test_console_sign_in_failures_lock_the_address_out_with_growing_delays(make_server):
    srv: ServerProcess = make_server(config_text=PROXY)
    with httpx.Client(base_url=srv.url, follow_redirects=False, timeout=30) as browser:
        for _ in range(4):
            assert _sign_in(browser, WRONG_KEY, ATTACKER).status_code == 401
        fifth = _sign_in(browser, WRONG_KEY, ATTACKER)
        assert fifth.status_code == 401 and fifth.headers["Retry-After"] == "1"
        assert "too many failed sign-ins" in fifth.text.lower()
        waits = []
        for round_ in range(3):
            locked = _sign_in(browser, srv.key, ATTACKER)  # even the right key: not looked at
            assert locked.status_code == 429, locked.text
            assert "Too many failed sign-ins from this address; try again in" in locked.text
            assert "recalled_console=" not in locked.headers.get("set-cookie", "")
            waits.append(int(locked.headers["Retry-After"]))
            if round_ == 2:
                break
            time.sleep(waits[-1] + 0.1)
            again = _sign_in(browser, WRONG_KEY, ATTACKER)
            assert again.status_code == 401 and int(again.headers["Retry-After"]) == 2 * waits[-1]
        assert waits[0] < waits[1] < waits[2], waits
        assert waits == [1, 2, 4]
    # Meanwhile another address signs in with the right key.
    with httpx.Client(base_url=srv.url, follow_redirects=False, timeout=30) as other:
        answer = _sign_in(other, srv.key, HONEST)
        assert answer.status_code == 303 and "recalled_console=" in answer.headers["set-cookie"]
        assert other.get("/console/", headers=from_address(HONEST)).status_code == 200
    lockouts = [line for line in srv.log_text().splitlines() if '"msg":"lockout"' in line]
    assert len(lockouts) == 3 and all(ATTACKER in line and '"kind":"console"' in line for line in lockouts)
    with srv.client(key=None) as anon:
        assert 'recalled_lockouts_total{kind="console"} 3.0' in anon.get("/metrics").text


def test_ratelimit_headers_on_200s_of_rate_limited_routes(make_server):
    # A slow refill (one token per 0.5 s), so that the second request is seen to take one
    # whatever the two lists cost on this machine and backend (at 100/s, 10 ms gave it back).
    srv: ServerProcess = make_server(config_text=PROXY + "[limits]\nrate_limit_per_second = 2.0\n"
                                     "rate_limit_burst = 4\n")
    with srv.client(headers=from_address(HONEST)) as c:
        first = c.get("/v1/events", params={"limit": 1})
        second = c.get("/v1/events", params={"limit": 1})
    assert first.status_code == 200 and second.status_code == 200
    assert first.headers["RateLimit-Policy"] == '"key";q=4;w=2'
    left = [int(re.match(r'"key";r=(\d+);t=(\d+)$', r.headers["RateLimit"]).group(1)) for r in (first, second)]
    assert left[0] <= 3 and left[1] < left[0]
    # A public route: the per-address policy, on its 200.
    with srv.client(key=None, headers=from_address(HONEST)) as anon:
        for _ in range(50):
            ready = anon.get("/readyz")
            if ready.status_code == 200:
                break
            time.sleep(0.1)
        assert ready.status_code == 200
        assert ready.headers["RateLimit-Policy"] == '"addr";q=100;w=5'
        assert re.fullmatch(r'"addr";r=\d+;t=\d+', ready.headers["RateLimit"])
        # /healthz is free: no policy, nothing taken
        assert "RateLimit" not in anon.get("/healthz").headers


def _events(srv: ServerProcess, n: int, org: str) -> None:
    with srv.client() as c:
        r = c.post("/v1/events/batch", json={"events": [{"action": "embed.seen", "organization": org}] * n})
        assert r.status_code == 200, r.text


def _token(srv: ServerProcess, org: str) -> str:
    with srv.client() as c:
        r = c.post("/v1/embed/token", json={"organization": org})
        assert r.status_code == 200, r.text
        return r.json()["data"]["token"]


def test_embed_feed_limits_per_token_the_limit_cap_and_pages_per_minute(make_server):
    srv: ServerProcess = make_server(config_text=PROXY + "[abuse]\nembed_token_per_second = 0.1\n"
                                     "embed_token_burst = 6\nembed_pages_per_minute = 3\nembed_max_limit = 10\n")
    _events(srv, 12, "org_embed")
    token = _token(srv, "org_embed")
    with srv.client(key=None, headers=from_address(HONEST)) as widget:
        for i in range(6):
            r = widget.get("/v1/embed/events", params={"token": token, "limit": 2})
            assert r.status_code == 200, r.text
            assert r.headers["RateLimit-Policy"] == '"addr";q=100;w=5, "embed";q=6;w=60'
            assert re.fullmatch(r'"addr";r=\d+;t=\d+, "embed";r=\d+;t=\d+', r.headers["RateLimit"])
        refused = widget.get("/v1/embed/events", params={"token": token})
        assert error_of(refused) == (429, "RATE_LIMITED")
        assert refused.json()["error"]["details"]["policy"] == "embed"
        assert refused.headers["Access-Control-Allow-Origin"] == "*"  # the widget can read why
        assert "retry-after" in refused.headers["Access-Control-Expose-Headers"]
        # Another token (another viewer) has its own budget.
        fresh = _token(srv, "org_embed")
        over = widget.get("/v1/embed/events", params={"token": fresh, "limit": 11})
        assert error_of(over) == (400, "VALIDATION_ERROR") and "between 1 and 10" in over.text
        page = widget.get("/v1/embed/events", params={"token": fresh, "limit": 10})
        assert page.status_code == 200 and len(page.json()["data"]) == 10
        # Depth: pages with a cursor, 3 per token per minute.
        deep = _token(srv, "org_embed")
        cursor = widget.get("/v1/embed/events", params={"token": deep, "limit": 1}).json()["nextCursor"]
        for _ in range(3):
            r = widget.get("/v1/embed/events", params={"token": deep, "limit": 1, "cursor": cursor})
            assert r.status_code == 200, r.text
            cursor = r.json()["nextCursor"]
        too_deep = widget.get("/v1/embed/events", params={"token": deep, "limit": 1, "cursor": cursor})
        assert error_of(too_deep) == (429, "RATE_LIMITED"), too_deep.text
        assert too_deep.json()["error"]["details"]["policy"] == "embed-pages"
        assert int(too_deep.headers["Retry-After"]) >= 15  # 3 a minute: one back in 20 s
        # ...but the first page still comes (a widget refreshing its view is not digging).
        assert widget.get("/v1/embed/events", params={"token": deep, "limit": 1}).status_code == 200


def test_embed_feed_and_receipt_pages_take_from_the_address_budget(make_server):
    srv: ServerProcess = make_server(config_text=PROXY + "[abuse]\nper_second = 0.1\nburst = 6\n")
    token = _token(srv, "org_embed_addr")
    with srv.client(key=None, headers=from_address(ATTACKER)) as anon:
        codes = [anon.get("/v1/embed/events", params={"token": token}).status_code for _ in range(3)]
        codes += [anon.get("/r/rcpt_nosuchreceipt.forged").status_code for _ in range(3)]
        assert codes == [200, 200, 200, 404, 404, 404]
        refused = anon.get("/r/rcpt_nosuchreceipt.forged")
        assert error_of(refused) == (429, "RATE_LIMITED")
        assert error_of(anon.get("/v1/embed/events", params={"token": token})) == (429, "RATE_LIMITED")
        assert error_of(anon.get("/v1/checkpoint/key")) == (429, "RATE_LIMITED")
        assert anon.get("/healthz").status_code == 200  # free
    with srv.client(key=None, headers=from_address(HONEST)) as other:
        assert other.get("/v1/embed/events", params={"token": token}).status_code == 200


# -- units: the order of the checks, the bounded tables, the lockout arithmetic (fake clock) --

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """key_by_prefix finds nothing in memory; load_key is the database read we count."""

    def __init__(self) -> None:
        self.loads = 0

    def key_by_prefix(self, prefix):
        return None

    async def load_key(self, prefix):
        self.loads += 1
        return None


def test_an_address_over_its_budget_or_locked_out_costs_no_database_read():
    import asyncio

    from recalled_lite.api.common import AppContext, authenticate
    from recalled_lite.config import Config
    from recalled_lite.errors import RateLimited, Unauthorized

    config = Config()
    config.abuse.burst, config.abuse.lockout_after_failures = 3, 0
    store = CountingStore()
    ctx = AppContext(config=config, store=store)

    async def attempt(address: str):
        try:
            await authenticate(ctx, WRONG_KEY, "nosuchky", {}, address=address)
        except (RateLimited, Unauthorized) as exc:
            return exc.status

    assert [asyncio.run(attempt(ATTACKER)) for _ in range(5)] == [401, 401, 401, 429, 429]
    assert store.loads == 3  # the refused ones never reached the database
    assert asyncio.run(attempt(HONEST)) == 401 and store.loads == 4

    config.abuse.burst, config.abuse.lockout_after_failures = 100, 2
    ctx = AppContext(config=config, store=store)
    store.loads = 0
    assert [asyncio.run(attempt(ATTACKER)) for _ in range(4)] == [401, 401, 429, 429]
    assert store.loads == 2


def test_the_address_table_is_bounded_least_recently_used_first():
    from recalled_lite.abuse import Buckets

    clock = FakeClock()
    buckets = Buckets("addr", 1.0, 2, max_entries=16, clock=clock)
    for _ in range(2):
        buckets.take("flooder")
    assert isinstance(buckets.take("flooder"), int)  # empty
    for i in range(15):
        buckets.take(f"10.0.0.{i}")
        buckets.take("flooder")  # still refused, and the most recently seen: stays
    assert len(buckets) == 16 and isinstance(buckets.take("flooder"), int)
    buckets.take("10.0.1.1")  # one more: the least recently seen (10.0.0.0) goes
    assert len(buckets) == 16 and "10.0.0.0" not in buckets._table and "flooder" in buckets._table


def test_lockout_arithmetic_window_doubling_cap_and_reset():
    from recalled_lite.abuse import Lockouts

    clock = FakeClock()
    started: list[str] = []
    lockouts = Lockouts("api", failures=3, window=60, first=1, cap=5, max_entries=100,
                        on_lockout=started.append, clock=clock)
    assert lockouts.failed("a") is None and lockouts.failed("a") is None
    clock.now += 61  # the window passed: typos spread out never lock out
    assert lockouts.failed("a") is None and lockouts.failed("a") is None
    assert lockouts.failed("a") == 1 and lockouts.retry_after("a") == 1
    assert lockouts.failed("a") is None  # refused while locked out: counts no further
    seen = []
    for _ in range(5):
        clock.now = clock.now + lockouts.retry_after("a")
        seen.append(lockouts.failed("a"))
    assert seen == [2, 4, 5, 5, 5]  # doubling to the cap
    assert lockouts.retry_after("b") is None
    lockouts.succeeded("a")  # still locked out: a success does not cut it short
    clock.now += 5
    lockouts.succeeded("a")
    assert lockouts.retry_after("a") is None and len(lockouts) == 0
    assert started == ["api"] * 6


def test_ipv6_addresses_share_their_64_for_budgets_and_lockouts():
    from recalled_lite.abuse import Abuse
    from recalled_lite.config import AbuseConfig
    from recalled_lite.errors import RateLimited

    abuse = Abuse(AbuseConfig(burst=2, lockout_after_failures=2))
    abuse.charge({}, "2001:db8:1:2::1")
    abuse.charge({}, "2001:db8:1:2:ffff::9")
    with pytest.raises(RateLimited):
        abuse.charge({}, "2001:db8:1:2::77")  # same /64: same budget
    abuse.charge({}, "2001:db8:1:3::1")  # the next /64 has its own
    lockouts = abuse.api_lockouts
    lockouts.failed("2001:db8:1:2::1")
    assert lockouts.failed("2001:db8:1:2::2") == 1.0
    assert lockouts.retry_after("2001:db8:1:2::3") is not None
    assert lockouts.retry_after("2001:db8:1:3::3") is None
