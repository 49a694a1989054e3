"""Retention rules and legal holds: which rule governs an event, and which hold shields it.

Pure (no database): storage/sqlite/retention.py applies it inside the purge batch, the API
validates with it. docs/retention.md is the user-facing description.

The most specific rule wins: organization + action prefix (the longest prefix first), then
organization alone, then action prefix alone (the longest first), then
`retention.default_days`. days = 0 keeps for ever. An event's age counts from its
occurredAt, so a back-dated import falls under the same policy as live traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .errors import ValidationError

DAY_MS = 86_400_000
DEFAULT_RULE = "default"
MAX_PREFIX = 128


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    organization: str | None   # None: every organization
    action_prefix: str | None  # None: every action
    days: int                  # 0: for ever
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    organization: str
    actor_id: str | None   # None: every actor of the organization
    action: str | None     # None: every action; "invoice.*": a prefix; else exact
    reason: str
    created_at: int
    released_at: int | None


class LegalHoldActive(Exception):
    """An erasure would touch events a legal hold shields (409 LEGAL_HOLD)."""

    def __init__(self, hold_id: str) -> None:
        super().__init__(hold_id)
        self.hold_id = hold_id


def normalize_prefix(value: str | None) -> str | None:
    """"invoice.*" and "invoice." are the same prefix; "" or "*" is no prefix (every action)."""
    if value is None:
        return None
    prefix = value.strip()
    if prefix.endswith("*"):
        prefix = prefix[:-1]
    if "*" in prefix:
        raise ValidationError.field("actionPrefix", "actionPrefix may end with one '*', and hold no other")
    if len(prefix) > MAX_PREFIX:
        raise ValidationError.field("actionPrefix", f"actionPrefix is longer than {MAX_PREFIX} characters")
    return prefix or None


def check_days(days: int, min_days: int, max_days: int) -> None:
    """The floor and ceiling of `[retention]` (0 = for ever, which no ceiling allows)."""
    if days < 0:
        raise ValidationError.field("days", "days must be 0 (keep for ever) or a positive number of days")
    if days == 0:
        if max_days:
            raise ValidationError(f"days = 0 keeps events for ever, above retention.max_days ({max_days})",
                                  {"field": "days", "max_days": max_days})
        return
    if days < min_days:
        raise ValidationError(f"days must be at least retention.min_days ({min_days})",
                              {"field": "days", "min_days": min_days})
    if max_days and days > max_days:
        raise ValidationError(f"days must be at most retention.max_days ({max_days})",
                              {"field": "days", "max_days": max_days})


class Policy:
    """The effective rule of every (organization, action), with a small cache: a purge batch
    asks for the same few pairs again and again."""

    def __init__(self, rules: Iterable[Rule], default_days: int) -> None:
        self.default_days = default_days
        self.default_rule: Rule | None = None
        by_org_prefix: list[Rule] = []
        by_org: dict[str, Rule] = {}
        by_prefix: list[Rule] = []
        for rule in rules:
            if rule.organization is not None and rule.action_prefix is not None:
                by_org_prefix.append(rule)
            elif rule.organization is not None:
                by_org[rule.organization] = rule
            elif rule.action_prefix is not None:
                by_prefix.append(rule)
            else:  # a rule for every organization and action overrides the configured default
                self.default_days = rule.days
                self.default_rule = rule
        self._org_prefix = sorted(by_org_prefix, key=lambda r: -len(r.action_prefix or ""))
        self._org = by_org
        self._prefix = sorted(by_prefix, key=lambda r: -len(r.action_prefix or ""))
        self._cache: dict[tuple[str | None, str], tuple[str, int, Rule | None]] = {}
        self.rules = [*self._org_prefix, *by_org.values(), *self._prefix,
                      *([self.default_rule] if self.default_rule else [])]

    def effective(self, organization: str | None, action: str) -> tuple[str, int, Rule | None]:
        """(rule key, days, rule) for an event: the rule's id, or "default"."""
        key = (organization, action)
        found = self._cache.get(key)
        if found is not None:
            return found
        rule = None
        if organization is not None:
            rule = next((r for r in self._org_prefix
                         if r.organization == organization and action.startswith(r.action_prefix or "")), None)
            if rule is None:
                rule = self._org.get(organization)
        if rule is None:
            rule = next((r for r in self._prefix if action.startswith(r.action_prefix or "")), None)
        if rule is None:
            rule = self.default_rule
        found = (rule.id, rule.days, rule) if rule is not None else (DEFAULT_RULE, self.default_days, None)
        if len(self._cache) < 100_000:
            self._cache[key] = found
        return found

    def shortest_days(self) -> int:
        """The shortest non-zero retention anywhere (0: nothing ever expires)."""
        days = [r.days for r in self.rules if r.days > 0]
        if self.default_days > 0:
            days.append(self.default_days)
        return min(days, default=0)


def action_matches(pattern: str | None, action: str) -> bool:
    if pattern is None:
        return True
    if pattern.endswith("*"):
        return action.startswith(pattern[:-1])
    return action == pattern


def hold_matches(hold: Hold, organization: str | None, actor_id: str | None, action: str) -> bool:
    return (hold.released_at is None and hold.organization == organization
            and (hold.actor_id is None or hold.actor_id == actor_id)
            and action_matches(hold.action, action))
