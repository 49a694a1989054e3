"""The actions the server writes about itself (`recalled.*`), and the rule that reserves them.

Every administrative action is also an event in the log (recalled_lite/audit.py). Their
actions share one prefix, which clients may not use: an event saying "recalled.key.revoked"
is then always the server's own record. Adding an audited action is one line here.
No imports: intake, audit and the webhook matcher all read this.
"""

from __future__ import annotations

from enum import StrEnum

SERVER_ACTION_PREFIX = "recalled."


class AuditAction(StrEnum):
    KEY_CREATED = "recalled.key.created"
    KEY_REVOKED = "recalled.key.revoked"
    SUBSCRIPTION_CREATED = "recalled.subscription.created"
    SUBSCRIPTION_UPDATED = "recalled.subscription.updated"
    SUBSCRIPTION_DELETED = "recalled.subscription.deleted"
    SUBSCRIPTION_SECRET_ROTATED = "recalled.subscription.secret_rotated"
    ACTOR_ERASED = "recalled.actor.erased"
    RETENTION_RULE_SET = "recalled.retention.rule_set"
    RETENTION_RULE_DELETED = "recalled.retention.rule_deleted"
    RETENTION_RUN_REQUESTED = "recalled.retention.run_requested"
    LEGAL_HOLD_CREATED = "recalled.legal_hold.created"
    LEGAL_HOLD_RELEASED = "recalled.legal_hold.released"


def is_server_action(action: str) -> bool:
    return action.startswith(SERVER_ACTION_PREFIX)
