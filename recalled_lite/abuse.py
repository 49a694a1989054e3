"""Abuse limits on the public edge: requests without a valid key, key guessing, the embed feed.

Everything here is in this process's memory and runs on the event loop thread without an
`await` between a check and its take, like limits.py. No I/O, no framework: the routes call it
before any database work (docs/security.md#abuse-limits).

* `Buckets`: token buckets keyed by a string (a client address, an IPv6 one by its /64; an
  embed token). The table is
  bounded (`max_entries`, least recently used first out): a bucket dropped from it comes back
  full, so the worst an address can gain by cycling through many others is that the oldest of
  them are forgiven. A flood from one address stays in the table and stays limited.
* `Lockouts`: failures per address. `failures` of them within `window` lock the address out for
  `first` seconds; each failure after a lockout (before the record is forgotten) locks it out
  again for twice as long, up to `cap`. A success clears the record. Each lockout is logged
  (warning) and counted for /metrics.
* `Abuse`: the policies of `[abuse]` (config.py), and the RateLimit header values they yield.

RateLimit headers (draft-ietf-httpapi-ratelimit-headers, structured-field form) are given on
every response these limits apply to, not only on 429s:

    RateLimit-Policy: "addr";q=<burst>;w=<seconds to refill the whole bucket>
    RateLimit: "addr";r=<whole tokens left>;t=<seconds until the bucket is full again>

and on a 429, `t` is the seconds until one token is back, as `Retry-After` says.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import Counter, OrderedDict
from typing import Any, Callable

from .errors import RateLimited

log = logging.getLogger("recalled_lite.abuse")

ADDR = "addr"          # requests without a valid key, per client address
EMBED = "embed"        # embed feed requests, per token
EMBED_PAGES = "embed-pages"  # embed feed pages fetched with a cursor, per token per minute
LOCKOUT = "lockout"    # repeated failures (sign-in, INVALID_API_KEY), per client address

# An address we cannot name (a Unix socket, a test client) shares one bucket: never unlimited.
UNKNOWN_ADDRESS = "unknown"


def address_key(address: str | None) -> str:
    """What one budget is kept for: an IPv4 address, or an IPv6 address's /64 (one subscriber
    line gets a whole /64, so counting its 2^64 addresses apart would be no limit at all)."""
    if not address:
        return UNKNOWN_ADDRESS
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    except ValueError:
        return address


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class Buckets:
    """Token buckets of one policy: `burst` tokens at most, refilled at `rate` per second."""

    def __init__(self, name: str, rate: float, burst: int, max_entries: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.rate = rate
        self.burst = burst
        self.max_entries = max_entries
        self.clock = clock
        self._table: OrderedDict[str, _Bucket] = OrderedDict()
        window = max(1, math.ceil(burst / rate))
        self.policy = f'"{name}";q={burst};w={window}'

    def __len__(self) -> int:
        return len(self._table)

    def _refilled(self, key: str, now: float) -> _Bucket | None:
        bucket = self._table.get(key)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            self._table.move_to_end(key)
        return bucket

    def has_token(self, key: str) -> bool:
        """Whether a request could take a token now (takes none)."""
        bucket = self._refilled(key, self.clock())
        return bucket is None or bucket.tokens >= 1.0

    def take(self, key: str) -> tuple[int, int] | int:
        """Take one token: (tokens left, seconds until full) on success, else the seconds until one
        token is back (an int alone)."""
        now = self.clock()
        bucket = self._refilled(key, now)
        if bucket is None:
            bucket = self._table[key] = _Bucket(float(self.burst), now)
            if len(self._table) > self.max_entries:
                self._table.popitem(last=False)  # the least recently used address
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return int(bucket.tokens), math.ceil((self.burst - bucket.tokens) / self.rate)
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))

    def wait(self, key: str) -> int:
        bucket = self._refilled(key, self.clock())
        tokens = bucket.tokens if bucket is not None else float(self.burst)
        return max(1, math.ceil((1.0 - tokens) / self.rate))


class _Record:
    __slots__ = ("failures", "first_at", "lockouts", "until", "last_at")

    def __init__(self, now: float) -> None:
        self.failures = 0
        self.first_at = now
        self.lockouts = 0
        self.until = 0.0
        self.last_at = now


class Lockouts:
    """Exponential lockouts per address after repeated failures. Also the console's
    `SignInLimiter` (console/service.py): retry_after / failed / succeeded."""

    def __init__(self, kind: str, failures: int, window: float, first: float, cap: float,
                 max_entries: int, on_lockout: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self.failures = failures
        self.window = window
        self.first = first
        self.cap = cap
        self.max_entries = max_entries
        self.on_lockout = on_lockout
        self.clock = clock
        self._table: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def _forgotten(self, record: _Record, now: float) -> bool:
        # Quiet for longer than the window and the longest lockout: a fresh start.
        return now >= record.until and now - record.last_at > max(self.window, self.cap)

    def retry_after(self, address: str) -> float | None:
        record = self._table.get(address_key(address))
        if record is None:
            return None
        now = self.clock()
        if now < record.until:
            return record.until - now
        return None

    def failed(self, address: str) -> float | None:
        """Count one failure; the lockout's seconds if this one starts a lockout."""
        address = address_key(address)
        now = self.clock()
        record = self._table.get(address)
        if record is None or self._forgotten(record, now):
            record = self._table[address] = _Record(now)
            if len(self._table) > self.max_entries:
                self._table.popitem(last=False)
        else:
            self._table.move_to_end(address)
        if now < record.until:
            return None  # already locked out: refused before it was checked, counts no further
        if record.lockouts == 0 and now - record.first_at > self.window:
            record.failures, record.first_at = 0, now  # a slow trickle of typos never locks out
        record.last_at = now
        record.failures += 1
        if record.lockouts == 0 and record.failures < self.failures:
            return None
        record.lockouts += 1
        seconds = min(self.cap, self.first * 2 ** (record.lockouts - 1))
        record.until = now + seconds
        log.warning("lockout", extra={"fields": {
            "kind": self.kind, "client": address, "failures": record.failures,
            "lockouts": record.lockouts, "seconds": round(seconds, 3)}})
        if self.on_lockout is not None:
            self.on_lockout(self.kind)
        return seconds

    def succeeded(self, address: str) -> None:
        if self._table:
            address = address_key(address)
            record = self._table.get(address)
            if record is not None and self.clock() >= record.until:
                del self._table[address]


def _ceil_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class Abuse:
    """The `[abuse]` policies of one app. Any of them may be None (turned off)."""

    def __init__(self, config: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.refused: Counter = Counter()   # 429s by policy, for /metrics
        self.lockout_count: Counter = Counter()  # lockouts started, by kind
        size = config.max_tracked_addresses
        self.addresses = (Buckets(ADDR, config.per_second, config.burst or max(1, math.ceil(config.per_second)),
                                  size, clock) if config.per_second > 0 else None)
        self.embed_tokens = (Buckets(EMBED, config.embed_token_per_second,
                                     config.embed_token_burst or max(1, math.ceil(config.embed_token_per_second)),
                                     size, clock) if config.embed_token_per_second > 0 else None)
        pages = config.embed_pages_per_minute
        self.embed_pages = Buckets(EMBED_PAGES, pages / 60.0, pages, size, clock) if pages > 0 else None
        self.embed_max_limit = config.embed_max_limit

        def lockouts(kind: str) -> Lockouts | None:
            if config.lockout_after_failures <= 0:
                return None
            return Lockouts(kind, config.lockout_after_failures, config.lockout_window_seconds,
                            config.lockout_first_seconds, config.lockout_max_seconds, size,
                            self._count_lockout, clock)

        self.api_lockouts = lockouts("api")
        self.console_lockouts = lockouts("console")

    def _count_lockout(self, kind: str) -> None:
        self.lockout_count[kind] += 1

    # -- the per-address bucket -----------------------------------------------------------

    def over_budget(self, address: str | None) -> bool:
        return self.addresses is not None and not self.addresses.has_token(address_key(address))

    def refuse_over_budget(self, address: str | None) -> None:
        """429 when the address has no token left, taking none: the check before database work
        for a request that may still turn out to carry a valid key."""
        if self.over_budget(address):
            assert self.addresses is not None
            raise self._limited(self.addresses, self.addresses.wait(address_key(address)),
                                "requests without a valid API key from this address")

    def charge(self, state: dict[str, Any] | None, address: str | None) -> None:
        """Take a token from the address's bucket (429 when none is left) and note the RateLimit
        header values for the response (RequestContextMiddleware adds them)."""
        if self.addresses is None:
            return
        self._take(self.addresses, address_key(address), state,
                   "requests without a valid API key from this address")

    def charge_embed_token(self, state: dict[str, Any], token_key: str, paging: bool) -> None:
        """The embed feed's own limits, per token: requests, and pages with a cursor per minute."""
        if self.embed_tokens is not None:
            self._take(self.embed_tokens, token_key, state, "embed feed requests with this token")
        if paging and self.embed_pages is not None:
            self._take(self.embed_pages, token_key, state, "embed feed pages (requests with a cursor) "
                                                            "per minute with this token")

    def _take(self, buckets: Buckets, key: str, state: dict[str, Any] | None, what: str) -> None:
        taken = buckets.take(key)
        if isinstance(taken, int):
            raise self._limited(buckets, taken, what)
        if state is not None:
            left, reset = taken
            state.setdefault("ratelimit", []).append((buckets.policy, f'"{buckets.name}";r={left};t={reset}'))

    def _limited(self, buckets: Buckets, wait: int, what: str) -> RateLimited:
        self.refused[buckets.name] += 1
        return RateLimited(
            f"rate limit of {buckets.rate:g}/s (burst {buckets.burst}) for {what} exceeded; retry in {wait} s",
            {"policy": buckets.name, "limit": buckets.burst, "per_second": buckets.rate, "retry_after": wait},
            headers={
                "Retry-After": str(wait),
                "RateLimit-Reset": str(wait),
                "RateLimit-Policy": buckets.policy,
                "RateLimit": f'"{buckets.name}";r=0;t={wait}',
            },
        )

    # -- lockouts ---------------------------------------------------------------------------

    def lockout_error(self, seconds: float, what: str) -> RateLimited:
        self.refused[LOCKOUT] += 1
        wait = _ceil_seconds(seconds)
        return RateLimited(
            f"too many {what} from this address; locked out, try again in {wait} s",
            {"policy": LOCKOUT, "retry_after": wait},
            # RATE_LIMITED carries RateLimit-Reset wherever it comes from (the error table).
            headers={"Retry-After": str(wait), "RateLimit-Reset": str(wait)},
        )

    # -- /metrics ---------------------------------------------------------------------------

    def metric_families(self) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        refused = CounterMetricFamily("recalled_abuse_refused", "Requests refused with 429 by the abuse "
                                      "limits, by policy (addr, embed, embed-pages, lockout).", labels=["policy"])
        for policy in (ADDR, EMBED, EMBED_PAGES, LOCKOUT):
            refused.add_metric([policy], self.refused.get(policy, 0))
        lockouts = CounterMetricFamily("recalled_lockouts", "Lockouts started after repeated failures from "
                                       "one address, by kind (console sign-in, api key).", labels=["kind"])
        for kind in ("api", "console"):
            lockouts.add_metric([kind], self.lockout_count.get(kind, 0))
        tracked = GaugeMetricFamily("recalled_abuse_tracked_addresses", "Client addresses in the abuse "
                                    "limiter's bounded table (requests without a valid key).")
        tracked.add_metric([], len(self.addresses) if self.addresses is not None else 0)
        return [refused, lockouts, tracked]
