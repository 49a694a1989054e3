"""Per-key rate limits (token buckets) and per-organization monthly quotas (SPEC §1, 429 rows).

Both live in this process's memory and are exact within it: every check-and-take runs on the
event loop thread without an `await` in between, so two requests can never both take the last
token or the last unit of quota.

Rate limit: one token bucket per API key id. `burst` tokens at most, refilled at `per_second`.
A request takes one token; none left -> 429 RATE_LIMITED with, per
draft-ietf-httpapi-ratelimit-headers (structured-field form):

    RateLimit-Policy: "key";q=<burst>;w=<seconds to refill the whole bucket>
    RateLimit: "key";r=<tokens left>;t=<seconds until one token is back>
    RateLimit-Reset: <same seconds>          Retry-After: <same seconds>

Seconds are whole numbers rounded UP, and at least 1, so a client that waits them gets in.
Every other response of a limited key carries the two headers as well, with the whole tokens
left and `t` = the seconds until the bucket is full again (api.common.admit notes them, the
middleware in app.py adds them).

Quota: events stored per organization per calendar month (UTC, by receive time). An event with
no organization counts under the organization "" (configure it like any other). The count is
rebuilt from the events table on the first write after a start, so it survives restarts (the
server's own `recalled.*` audit events never count). A request
reserves its events before it writes (a batch reserves all of them: all or nothing) and gives back
what was not stored (deduplicated repeats, failed writes) when the write settles, even if the
request was cancelled meanwhile (the write commits anyway).
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime, timezone
from typing import Any, Callable

from .actions import SERVER_ACTION_PREFIX

from .errors import PlanLimitReached, RateLimited

POLICY = "key"
# How stale the monthly counts may get when other instances write the same log.
SHARED_REFRESH_SECONDS = 2.0


class Bucket:
    __slots__ = ("rate", "burst", "tokens", "stamp", "policy")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now
        window = max(1, math.ceil(burst / rate))
        self.policy = f'"{POLICY}";q={burst};w={window}'


class RateLimiter:
    """Token buckets keyed by API key id; `overrides` match a key id or a key prefix."""

    def __init__(self, per_second: float, burst: int, overrides: dict[str, Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.burst = burst
        self.overrides = overrides
        self.clock = clock
        self.buckets: dict[str, Bucket | None] = {}

    def _bucket(self, key_id: str, prefix: str, now: float) -> Bucket | None:
        override = self.overrides.get(key_id) or self.overrides.get(prefix)
        rate = override.per_second if override is not None else self.per_second
        burst = override.burst if override is not None else self.burst
        if rate <= 0:
            return None  # unlimited
        return Bucket(rate, burst or max(1, math.ceil(rate)), now)

    def take(self, key_id: str, prefix: str) -> tuple[str, str] | None:
        """Take a token: the (RateLimit-Policy, RateLimit) values for the response, None when the
        key is not limited; 429 RATE_LIMITED when its bucket is empty."""
        now = self.clock()
        try:
            bucket = self.buckets[key_id]
        except KeyError:
            bucket = self.buckets[key_id] = self._bucket(key_id, prefix, now)
        if bucket is None:
            return None
        tokens = min(bucket.burst, bucket.tokens + (now - bucket.stamp) * bucket.rate)
        bucket.stamp = now
        if tokens >= 1.0:
            bucket.tokens = tokens = tokens - 1.0
            full = math.ceil((bucket.burst - tokens) / bucket.rate)
            return bucket.policy, f'"{POLICY}";r={int(tokens)};t={full}'
        bucket.tokens = tokens
        wait = max(1, math.ceil((1.0 - tokens) / bucket.rate))
        raise RateLimited(
            f"rate limit of {bucket.rate:g} requests/s (burst {bucket.burst}) for this API key exceeded; "
            f"retry in {wait} s",
            {"limit": bucket.burst, "per_second": bucket.rate, "retry_after": wait},
            headers={
                "Retry-After": str(wait),
                "RateLimit-Reset": str(wait),
                "RateLimit-Policy": bucket.policy,
                "RateLimit": f'"{POLICY}";r=0;t={wait}',
            },
        )


def month_of(ms: int) -> tuple[int, int]:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.year, moment.month


def month_start_ms(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def next_month_start_ms(year: int, month: int) -> int:
    return month_start_ms(year + month // 12, month % 12 + 1)


class Quotas:
    """Monthly event quotas per organization; `limits` maps organization -> events (0 = none)."""

    def __init__(self, limits: dict[str, int], default: int) -> None:
        self.limits = limits
        self.default = default
        self.month: tuple[int, int] | None = None
        self.counts: dict[str, int] = {}
        # Reserved by requests whose write has not settled yet: a reload from the table must
        # add them back, or a request in flight could be counted by neither.
        self.in_flight: dict[str, int] = {}
        self.loaded_at = 0.0  # time.monotonic() of the last load
        self.refresh_after = SHARED_REFRESH_SECONDS
        self._lock = asyncio.Lock()

    def limit_for(self, organization: str) -> int:
        return self.limits.get(organization, self.default)

    def _fresh(self, store: Any, month: tuple[int, int]) -> bool:
        if month != self.month:
            return False
        # Other instances append to a shared log (PostgreSQL): what they stored this month is
        # read back every SHARED_REFRESH_SECONDS, so together they overshoot a quota by at most
        # what the others accept in that time (docs/scaling.md).
        return not getattr(store, "shared_writers", False) or \
            time.monotonic() - self.loaded_at < self.refresh_after

    async def ensure_month(self, store: Any, now_ms: int) -> None:
        """Load this month's counts from the table (at the first write, at a month change, and
        every few seconds when other instances write the same log)."""
        month = month_of(now_ms)
        if self._fresh(store, month):
            return
        async with self._lock:
            if self._fresh(store, month):
                return
            # The server's own audit events (recalled.*) are not the organization's events: they
            # never take quota when written, so they are not counted back in either.
            started = time.monotonic()
            counts = await store.events_per_organization(month_start_ms(*month), SERVER_ACTION_PREFIX)
            for org, n in self.in_flight.items():
                counts[org] = counts.get(org, 0) + n
            self.counts, self.month, self.loaded_at = counts, month, time.monotonic()
            # The count scans this month's rows: on a month of many millions it is slow, and
            # re-reading it is then spaced out so it takes at most ~5 % of the time.
            self.refresh_after = max(SHARED_REFRESH_SECONDS, 20 * (self.loaded_at - started))

    def reserve(self, wanted: dict[str, int], now_ms: int) -> None:
        """Take `wanted[org]` events from each organization's quota, all or none."""
        for org, n in wanted.items():
            limit = self.limit_for(org)
            if limit > 0 and self.counts.get(org, 0) + n > limit:
                used = self.counts.get(org, 0)
                reset_ms = next_month_start_ms(*month_of(now_ms))
                seconds = max(1, math.ceil((reset_ms - now_ms) / 1000))
                raise PlanLimitReached(
                    f"organization {org or '(none)'!r} has used {used} of its {limit} events this month; "
                    f"this request would store {n} more",
                    {"limit": limit, "used": used, "requested": n, "organization": org or None,
                     "resets_at": _iso(reset_ms)},
                    headers={"Retry-After": str(seconds)},
                )
        for org, n in wanted.items():
            self.counts[org] = self.counts.get(org, 0) + n
            self.in_flight[org] = self.in_flight.get(org, 0) + n

    def settled(self, wanted: dict[str, int]) -> None:
        """The write of a reservation finished (stored or not): the table now tells."""
        for org, n in wanted.items():
            left = self.in_flight.get(org, 0) - n
            if left > 0:
                self.in_flight[org] = left
            else:
                self.in_flight.pop(org, None)

    def release(self, given_back: dict[str, int]) -> None:
        for org, n in given_back.items():
            self.counts[org] = max(0, self.counts.get(org, 0) - n)


def _iso(ms: int) -> str:
    from .timefmt import format_ms
    return format_ms(ms)


class Limits:
    def __init__(self, rate: RateLimiter | None, quotas: Quotas | None) -> None:
        self.rate = rate
        self.quotas = quotas

    @classmethod
    def from_config(cls, config: Any) -> "Limits":
        rate = None
        if config.rate_limit_per_second > 0 or config.keys:
            rate = RateLimiter(config.rate_limit_per_second, config.rate_limit_burst, dict(config.keys))
        quotas = None
        if config.monthly_events_default > 0 or any(v > 0 for v in config.monthly_events.values()):
            quotas = Quotas(dict(config.monthly_events), config.monthly_events_default)
        return cls(rate, quotas)


def count_by_org(organizations: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for org in organizations:
        org = org or ""
        counts[org] = counts.get(org, 0) + 1
    return counts


async def append_within_quota(quotas: Quotas, store: Any, prepared: list[Any], received_at: int) -> list[Any]:
    """store.append_events(prepared), refused with 429 PLAN_LIMIT_REACHED (storing nothing) when
    any organization's monthly quota cannot take all of its events in this request."""
    await quotas.ensure_month(store, received_at)
    wanted = count_by_org(ev.organization for ev in prepared)
    quotas.reserve(wanted, received_at)  # no await between the check and the take
    # The reservation is settled by the write's outcome, not by this request's: once
    # submitted, the write commits even if the client goes away and this task is
    # cancelled, so a cancellation must not give the quota back.
    write = asyncio.ensure_future(store.append_events(prepared))
    write.add_done_callback(lambda done: _settle_reservation(quotas, wanted, done))
    return await asyncio.shield(write)


def _settle_reservation(quotas: Quotas, wanted: dict[str, int], write: "asyncio.Future[Any]") -> None:
    quotas.settled(wanted)
    if write.cancelled() or write.exception() is not None:
        quotas.release(wanted)  # nothing was stored
        return
    replayed = count_by_org(r.event.organization for r in write.result() if r.deduplicated)
    if replayed:
        quotas.release(replayed)
