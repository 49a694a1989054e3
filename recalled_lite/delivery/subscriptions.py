"""Event subscriptions in memory: event-type patterns, states, and the matcher the intake
hook uses (spec §5.1). Pure Python, no storage and no I/O.

Patterns (``event_types``): an exact action (``invoice.paid``) or a prefix ending in ``.*``
(``invoice.*`` matches ``invoice.paid`` and ``invoice.line.added``, not ``invoice``). ``*``
alone, or an empty list, means every event of the application: the server's own audit
events (``recalled.*``, recalled_lite/actions.py) are sent only to subscriptions that name
them (``recalled.*``, ``recalled.key.*``, ``recalled.key.created``), so a receiver that
subscribed to "everything" does not start getting admin events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..actions import is_server_action

STATES = ("new", "valid", "invalid", "deactivated")
#: States whose subscriptions get new events queued (spec §5.1).
RECEIVING_STATES = frozenset({"new", "valid"})
#: Triggers of attempts that follow the retry schedule (the others are one-shot).
SCHEDULED_TRIGGERS = frozenset({"scheduled", "replay", "recover"})
#: `retest`: the automatic re-test of an `invalid` subscription (delivery/healing.py).
TRIGGERS = ("scheduled", "manual", "test", "retest", "example", "recover", "replay")

MAX_PATTERNS = 100
MAX_PATTERN_LENGTH = 255
_PATTERN = re.compile(r"^[^\s*]+(?:\.\*)?$")


def validate_pattern(pattern: str) -> str | None:
    """None if ``pattern`` is acceptable, else why not."""
    if not isinstance(pattern, str) or not pattern:
        return "event type patterns must be non-empty strings"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"event type patterns are at most {MAX_PATTERN_LENGTH} characters"
    if pattern == "*":
        return None
    if _PATTERN.match(pattern) is None or pattern == ".*":
        return (f"invalid event type pattern {pattern!r}: use an exact action (invoice.paid) "
                "or a prefix ending in .* (invoice.*), without spaces")
    return None


class TypeFilter:
    """Compiled ``event_types``."""

    __slots__ = ("all", "exact", "prefixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        self.all = not patterns or "*" in patterns
        self.exact = frozenset(p for p in patterns if not p.endswith(".*"))
        # "invoice.*" -> "invoice." : matches "invoice.paid", not "invoice" nor "invoices.x".
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith(".*"))

    def matches(self, action: str) -> bool:
        if action in self.exact:
            return True
        if self.all and not is_server_action(action):
            return True
        for prefix in self.prefixes:
            if action.startswith(prefix):
                return True
        return False


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """One subscription, as the sender and the API see it (secrets in clear, in memory only)."""

    id: str
    url: str
    description: str
    event_types: tuple[str, ...]
    organization: str | None
    disabled: bool
    state: str
    state_reason: str | None
    state_changed_at: int
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: int | None
    test_message_id: str | None
    first_failure_at: int | None
    last_success_at: int | None
    created_at: int
    updated_at: int
    # Since when it has been missing events (set while `invalid`, kept through a re-test).
    invalid_since: int | None = None
    invalid_cause: str | None = None  # a delivery/healing.InvalidCause value
    # When the next automatic re-test is due (None: none, e.g. after a 410 Gone).
    retest_at: int | None = None
    retests: int = 0
    # Why the stored signing secret (or the row) cannot be used; nothing is signed with a
    # wrong key: deliveries fail with this error until the secret is rotated.
    secret_error: str | None = None

    @property
    def receiving(self) -> bool:
        return self.state in RECEIVING_STATES and not self.disabled

    def signing_secrets(self, now_ms: int) -> list[str]:
        """The secrets that sign a message sent now: the current one, plus the previous one
        during a rotation overlap (one ``v1,`` signature each)."""
        if self.previous_secret and (self.previous_secret_expires_at or 0) > now_ms:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def visible_to(self, organization: str | None) -> bool:
        """The tenant wall: a key bound to an organization sees only that organization's."""
        return organization is None or self.organization == organization

    def accepts(self, organization: str | None, action: str) -> bool:
        if self.organization is not None and organization != self.organization:
            return False
        return TypeFilter(self.event_types).matches(action)


class SubscriptionIndex:
    """Which receiving subscriptions an event goes to. Built once per subscription change;
    ``match`` is memoised per action so the intake hook does no per-event pattern work."""

    __slots__ = ("_subs", "_memo", "active")

    _MEMO_LIMIT = 10_000

    def __init__(self, subs: Iterable[SubscriptionInfo]) -> None:
        self._subs = [(s.id, s.organization, TypeFilter(s.event_types)) for s in subs if s.receiving]
        self._memo: dict[str, tuple[tuple[str, str | None], ...]] = {}
        self.active = bool(self._subs)

    def match(self, organization: str | None, action: str) -> list[str]:
        candidates = self._memo.get(action)
        if candidates is None:
            candidates = tuple((sid, org) for sid, org, f in self._subs if f.matches(action))
            if len(self._memo) >= self._MEMO_LIMIT:
                self._memo.clear()
            self._memo[action] = candidates
        return [sid for sid, org in candidates if org is None or org == organization]
