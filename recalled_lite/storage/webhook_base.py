"""What the delivery loop and the webhook API may ask of webhook storage (nothing about SQLite).

``storage/sqlite/webhooks.py`` implements ``WebhookStore`` on SQLite; a PostgreSQL backend
would implement the same methods over the same records. Rules that do not need SQL
(classification, backoff, re-tests, sealing) live in ``delivery/`` and are called by both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

from ..delivery.subscriptions import SubscriptionInfo
from .base import EventRecord


class InvalidWebhookOperation(Exception):
    """A request that is well-formed but not allowed in the current state (-> 400)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class OpenItem(NamedTuple):
    """A delivery the loop should attempt now (its row is ``sending``, leased to this instance)."""

    message_id: str
    subscription_id: str
    event_seq: int | None
    type: str
    example_action: str | None
    trigger: str
    attempt_id: str
    attempt: int  # number of the attempt about to be made (1 = first)
    created_at: int
    queued_at: int
    handoff: bool  # came through the in-memory hand-off (counts against its limit)


class AttemptOutcome(NamedTuple):
    item: OpenItem
    sent: bool  # False: not sent at all (subscription deactivated/invalid meanwhile)
    url: str
    status_code: int | None
    response_body: str | None
    error: str | None
    duration_ms: int | None
    started_at: int
    retry_after: str | None
    # What was wrong with a response that still counts by its status (delivery/outcomes.py).
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule: tuple[float, ...]
    jitter: float
    disable_after_ms: int
    lease_ms: int
    # Re-tests of invalid subscriptions (delivery/healing.py); 0 = off.
    retest_initial_ms: int = 60_000
    retest_max_ms: int = 3_600_000
    retest_enabled: bool = True
    replay_after_retest: bool = True


@dataclass(slots=True)
class NewSubscription:
    url: str
    description: str
    event_types: list[str]
    organization: str | None
    disabled: bool
    secret: str


@dataclass(slots=True)
class SubscriptionPatch:
    url: str | None = None
    description: str | None = None
    event_types: list[str] | None = None
    organization: str | None = None
    set_organization: bool = False
    disabled: bool | None = None
    state: str | None = None


def attempt_id_for(message_id: str, attempt_id: str | None) -> str:
    # The first attempt of a message shares its ULID: no second id on the intake hot path.
    return attempt_id if attempt_id is not None else "atm_" + message_id[4:]


# (id, message_id, event_id, subscription_id, attempt, status, trigger, url,
#  response_status_code, response_body, error, duration_ms, created_at, next_attempt_at, warning)
AttemptRow = tuple
# (id, subscription_id, kind, status, begin_at, end_at, total, scanned, queued, skipped, error,
#  created_at, updated_at, finished_at)
JobRow = tuple

# Called on the writer thread after every COMMIT that changed something the loop must know:
# (new subscriptions snapshot or None, deliveries to send now, subscription -> earliest due
# time of pending rows, ids of jobs to run).
Sink = Callable[[dict[str, SubscriptionInfo] | None, list[OpenItem], dict[str, int], list[str]], None]


class WebhookStore(Protocol):
    """The webhook tables of one store (see storage/sqlite/webhooks.py for the SQLite one)."""

    subs: dict[str, SubscriptionInfo]
    taken: Callable[[], int]
    sink: Sink
    # This instance's name on the leases it holds.
    instance: str
    # How many stored secrets the start-up upgrade sealed as v2 (for the start log line).
    secrets_upgraded: int

    async def attach(self) -> tuple[dict[str, SubscriptionInfo], dict[str, int], list[str]]: ...

    # subscriptions
    # `audit` (storage.base.AuditHook): the action's audit events, appended in the same transaction.
    async def create_subscription(self, spec: NewSubscription, audit: Any = None) -> SubscriptionInfo: ...
    async def update_subscription(self, sub_id: str, organization: str | None,
                                  patch: SubscriptionPatch, audit: Any = None) -> SubscriptionInfo: ...
    async def delete_subscription(self, sub_id: str, organization: str | None,
                                  audit: Any = None) -> SubscriptionInfo: ...
    async def test_subscription(self, sub_id: str, organization: str | None) -> tuple[SubscriptionInfo, str]: ...
    async def rotate_secret(self, sub_id: str, organization: str | None, new_secret: str,
                            overlap_ms: int, audit: Any = None) -> SubscriptionInfo: ...
    async def retest(self, sub_id: str) -> bool: ...

    # one-off deliveries and jobs
    async def resend(self, event_id: str, sub_id: str, organization: str | None) -> AttemptRow: ...
    async def send_example(self, sub_id: str, organization: str | None, action: str) -> AttemptRow: ...
    async def create_job(self, kind: str, sub_id: str, organization: str | None, begin: int,
                         end: int | None) -> JobRow: ...
    async def job_step(self, job_id: str, chunk: int, max_backlog: int) -> str: ...
    async def fail_job(self, job_id: str, error: str) -> None: ...
    async def get_job(self, sub_id: str, job_id: str) -> JobRow | None: ...
    async def list_jobs(self, sub_id: str, limit: int, before_id: str | None) -> list[JobRow]: ...

    # the delivery loop
    async def claim(self, requests: list[tuple[str, int]]) -> tuple[list[OpenItem], dict[str, int | None]]: ...
    async def apply_results(self, results: list[AttemptOutcome]) -> None: ...
    async def quarantine_results(self, results: list[tuple[AttemptOutcome, str]]) -> None: ...
    async def renew_leases(self, message_ids: list[str]) -> None: ...
    async def reclaim_expired(self, held: frozenset[str]) -> int: ...
    # At a graceful stop, after the last results are recorded: hand what this instance still
    # holds (`sending` rows, job leases) back, for the other instances sharing the tables.
    async def release(self) -> None: ...
    async def load_for_send(self, items: list[OpenItem]) -> tuple[set[str], dict[int, EventRecord]]: ...
    async def due_snapshot(self) -> dict[str, int]: ...

    # attempts (API reads)
    async def list_attempts(self, *, sub_ids: list[str], event_id: str | None, status: str | None,
                            begin: int | None, end: int | None, cursor: tuple[int, str] | None,
                            limit: int) -> list[AttemptRow] | None: ...
    async def event_visible(self, event_id: str, organization: str | None) -> bool: ...
    async def open_attempt(self, message_id: str) -> AttemptRow | None: ...


