"""Time on the wire: RFC 3339 in, `YYYY-MM-DDTHH:MM:SS.mmmZ` out; ms integers inside."""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, timezone

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
# RFC 3339 date-time with a mandatory offset (Z or ±hh:mm).
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_BARE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAY_MS = 86_400_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# (second, its text). Replaced as one tuple, so threads never see a torn pair.
_last_second: tuple[int, str] = (-1, "")


def format_ms(ms: int) -> str:
    global _last_second
    seconds, millis = divmod(ms, 1000)
    # Most timestamps formatted in a row share their second: reuse its text.
    cached_seconds, text = _last_second
    if cached_seconds != seconds:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second = (seconds, text)
    return f"{text}.{millis:03d}Z"


def parse_rfc3339_ms(text: str) -> int:
    """Parse an RFC 3339 timestamp that carries an offset; raise ValueError otherwise."""
    if _RFC3339.match(text) is None:
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-04-14T09:12:45Z")
    match = _RFC3339.match(text)
    assert match is not None
    fraction = match.group(1) or ""
    if fraction:
        # fromisoformat takes at most 6 fractional digits; we keep milliseconds anyway.
        text = text.replace(fraction, "", 1)
    parsed = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T").replace(" ", "T"))
    if fraction:
        parsed = parsed.replace(microsecond=int(fraction[1:7].ljust(6, "0")))
    delta = parsed - _EPOCH
    ms = delta // timedelta(milliseconds=1)
    if ms < 0:
        raise ValueError("must not be before 1970-01-01T00:00:00Z")
    return ms


def parse_bound_ms(text: str, *, upper: bool) -> int:
    """A filter bound: RFC 3339, or a bare date (an upper bare date covers its whole day)."""
    if _BARE_DATE.match(text):
        day = date.fromisoformat(text)
        start = (datetime(day.year, day.month, day.day, tzinfo=_UTC) - _EPOCH) // timedelta(milliseconds=1)
        return start + DAY_MS - 1 if upper else start
    return parse_rfc3339_ms(text)
