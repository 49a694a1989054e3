"""The server audits itself: every administrative action is also an event in the log.

An action (actions.AuditAction) is described by an `AdminAction`, the audit hook a store
runs inside the action's own transaction (storage.base.AuditHook): it turns what the
write returned into an ordinary PreparedEvent (the intake rules, intake.prepare_resolved),
chained like any other. After the commit it writes the operator's log line. Nothing here
touches a database, so every backend builds the same events.

What an audit event holds:

* actor: who acted, `{"type": "api_key", "id", "name"}`, or `{"type": "cli", "id": "local",
  "name": <OS user>}` for the command line;
* targets: the object, `{"type": "api_key" | "event_subscription" | "actor", "id", "name"}`;
* organization: the acting key's organization (null for a key bound to none, and for the
  CLI), so a key bound to an organization sees its own admin actions, and the admin actions of
  unbound keys (the operator's) never show up in an organization's view, its embed feed
  included; the object's own organization is in the metadata;
* metadata: facts worth keeping (scopes, url, changed fields, counts), never a secret or a
  key's plaintext; ip_address and user_agent: where the request came from.
"""

from __future__ import annotations

import getpass
import hmac
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from .actions import AuditAction
from .config import EventsConfig
from .intake import prepare_resolved
from .schemas import ActorIn, EventIn, TargetIn
from .storage.base import ApiKeyRecord, EventRecord, PreparedEvent
from .timefmt import format_ms, now_ms

log = logging.getLogger("recalled_lite.audit")

# Audit metadata is built by the server from bounded inputs (a subscription body is at most
# 64 KiB, and an update keeps both versions of what changed); a client's 32 KiB metadata limit
# must never make an administrative action fail.
AUDIT_LIMITS = EventsConfig(max_metadata_bytes=1024 * 1024, max_metadata_depth=16)


@dataclass(frozen=True, slots=True)
class AuditActor:
    type: str
    id: str
    name: str | None

    @classmethod
    def api_key(cls, key: ApiKeyRecord) -> "AuditActor":
        return cls("api_key", key.id, key.name)

    @classmethod
    def command_line(cls) -> "AuditActor":
        return cls("cli", "local", _os_user())


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container's arbitrary uid)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who performs an administrative action, and from where."""

    actor: AuditActor
    organization: str | None  # the acting key's; None for an unbound key and the CLI
    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    command: str | None = None  # the CLI command

    @classmethod
    def for_key(cls, key: ApiKeyRecord, *, ip_address: str | None, user_agent: str | None,
                request_id: str | None) -> "Caller":
        return cls(AuditActor.api_key(key), key.organization, ip_address, user_agent, request_id)

    @classmethod
    def for_command(cls, command: str) -> "Caller":
        return cls(AuditActor.command_line(), None, command=command)


@dataclass(frozen=True, slots=True)
class Described:
    """What one action did to which object."""

    target: dict[str, Any]
    metadata: dict[str, Any]


# (what the write returned, what `before` saw just before it) -> the audit facts, or None
# when the write changed nothing.
Describe = Callable[[Any, Any], "Described | None"]


class AdminAction:
    """The audit hook of one administrative action (storage.base.AuditHook).

    `before`, if given, runs on the writer just before the action (inside its transaction),
    so an update is compared with the object exactly as the write found it, not with a copy
    another thread may not have refreshed yet.
    """

    __slots__ = ("caller", "action", "describe", "before", "_seen")

    def __init__(self, caller: Caller, action: AuditAction, describe: Describe,
                 before: Callable[[], Any] | None = None) -> None:
        self.caller = caller
        self.action = action
        self.describe = describe
        self.before = before
        self._seen: Any = None

    def begin(self) -> None:
        self._seen = self.before() if self.before is not None else None

    def prepare(self, result: Any) -> list[PreparedEvent]:
        """On the writer, inside the action's transaction, right after it."""
        described = self.describe(result, self._seen)
        if described is None:
            return []
        return [audit_event(self.caller, self.action, described, now_ms())]

    def committed(self, records: list[EventRecord]) -> None:
        for record in records:
            log.info("state change", extra={"fields": state_change_fields(record)})


def audit_event(caller: Caller, action: AuditAction, described: Described, at: int) -> PreparedEvent:
    metadata = dict(described.metadata)
    if caller.request_id is not None:
        metadata["request_id"] = caller.request_id
    if caller.command is not None:
        metadata["command"] = caller.command
    target = {key: _clean(value) if isinstance(value, str) else value for key, value in described.target.items()}
    event = EventIn(
        actor=ActorIn(type=caller.actor.type, id=_clean(caller.actor.id), name=_clean(caller.actor.name)),
        targets=[TargetIn(type=target["type"], id=target["id"], name=target.get("name"))],
        metadata=metadata,
        ip_address=_clean(caller.ip_address),
        user_agent=_clean(caller.user_agent),
    )
    return prepare_resolved(event, str(action), _clean(caller.organization), AUDIT_LIMITS, at)


def _clean(value: str | None) -> str | None:
    # The intake refuses NUL in these fields; an audit event must never fail on one (a key
    # name, an actor id from a URL), so it is shown as U+FFFD instead.
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


def state_change_fields(record: EventRecord) -> dict[str, Any]:
    """The operator's log line for one audit event (nothing secret is in the event)."""
    return {
        "action": record.action,
        "event_id": record.id,
        "seq": record.seq,
        "organization": record.organization,
        "actor": {"type": record.actor_type, "id": record.actor_id, "name": record.actor_name},
        "targets": json.loads(record.targets) if record.targets else None,
        "metadata": json.loads(record.metadata) if record.metadata else None,
        "client": record.ip_address,
    }


# -- what each action records -----------------------------------------------------------------


def _key_facts(key: ApiKeyRecord) -> Described:
    return Described(
        target={"type": "api_key", "id": key.id, "name": key.name},
        # The prefix is public (GET /v1/keys lists it); the secret part never leaves auth.py.
        metadata={"name": key.name, "prefix": key.prefix, "scopes": sorted(key.scopes),
                  "organization": key.organization},
    )


def key_created(key: ApiKeyRecord) -> Describe:
    return lambda _result, _before: _key_facts(key)


def key_revoked(key: ApiKeyRecord, _before: Any) -> Described:
    return _key_facts(key)


def public_url(url: str) -> str:
    """A webhook URL without what often carries a credential: user:password@ and the query."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "[unparseable url]"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


SUBSCRIPTION_FIELDS = ("url", "description", "event_types", "organization", "disabled", "state")


def _subscription_fields(sub: Any) -> dict[str, Any]:
    return {"url": public_url(sub.url), "description": sub.description, "event_types": list(sub.event_types),
            "organization": sub.organization, "disabled": sub.disabled, "state": sub.state}


def _subscription_target(sub: Any) -> dict[str, Any]:
    return {"type": "event_subscription", "id": sub.id, "name": sub.description or None}


def subscription_created(sub: Any, _before: Any) -> Described:
    return Described(_subscription_target(sub), _subscription_fields(sub))


def subscription_deleted(sub: Any, _before: Any) -> Described:
    return Described(_subscription_target(sub), _subscription_fields(sub))


def subscription_updated(after: Any, before: Any) -> Described | None:
    """Which fields changed, from what to what (None: the update changed nothing)."""
    new = _subscription_fields(after)
    old = _subscription_fields(before) if before is not None else {}
    changed = [name for name in SUBSCRIPTION_FIELDS if old.get(name) != new[name]]
    if not changed:
        return None
    return Described(_subscription_target(after), {
        "changed": changed,
        "before": {name: old.get(name) for name in changed},
        "after": {name: new[name] for name in changed},
    })


def subscription_secret_rotated(sub: Any, _before: Any) -> Described:
    expires = sub.previous_secret_expires_at if sub.previous_secret is not None else None
    return Described(_subscription_target(sub), {
        # When the old secret stops signing; the secrets themselves are never recorded.
        "previous_secret_expires_at": format_ms(expires) if expires else None,
    })


# derive_key purpose of the key that turns an erased actor's id into its reference.
ERASED_ACTOR_KEY_PURPOSE = "audit: erased actor"


def erased_actor_reference(key: bytes, actor_id: str) -> str:
    """What the erasure's audit event calls the actor: a keyed digest, never the id.

    The erasure takes the actor id out of every row, the index and the file; writing it
    back in clear, in an event that itself can never be erased, would undo that. The
    digest still answers "was this actor erased, and when?" for whoever holds the server
    secret (docs/api.md shows how), and nobody else can reverse it.
    """
    return "hmac-sha256:" + hmac.new(key, actor_id.encode("utf-8", "surrogatepass"), "sha256").hexdigest()


def actor_erased(actor_reference: str, organization: str | None) -> Describe:
    def describe(count: int, _before: Any) -> Described:
        return Described({"type": "actor", "id": actor_reference},
                         {"anonymized_events": count, "organization": organization})

    return describe


# -- retention (docs/retention.md) -------------------------------------------------------------


def _rule_facts(rule: Any) -> dict[str, Any]:
    return {"organization": rule.organization, "action_prefix": rule.action_prefix, "days": rule.days}


def retention_rule_set(result: Any, _before: Any) -> Described | None:
    """`result` is (the rule, the rule of the same scope before the write, None if new)."""
    rule, before = result
    if before is not None and before.days == rule.days:
        return None
    return Described({"type": "retention_rule", "id": rule.id},
                     {**_rule_facts(rule), "previous_days": before.days if before is not None else None})


def retention_rule_deleted(rule: Any, _before: Any) -> Described:
    return Described({"type": "retention_rule", "id": rule.id}, _rule_facts(rule))


def _hold_facts(hold: Any) -> dict[str, Any]:
    # The reason is the operator's own text (a case reference): kept, like a key's name.
    return {"organization": hold.organization, "actor_id": hold.actor_id, "action": hold.action,
            "reason": hold.reason}


def legal_hold_created(hold: Any, _before: Any) -> Described:
    return Described({"type": "legal_hold", "id": hold.id}, _hold_facts(hold))


def legal_hold_released(result: Any, _before: Any) -> Described | None:
    hold, released = result
    if not released:
        return None  # already released: nothing changed
    return Described({"type": "legal_hold", "id": hold.id}, _hold_facts(hold))


def retention_run_requested(result: Any, _before: Any) -> Described | None:
    job, created = result
    if not created:
        return None  # the running job was returned
    return Described({"type": "retention_job", "id": job.id}, {"reason": job.reason, "stop_seq": job.stop_seq})
