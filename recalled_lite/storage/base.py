"""What the rest of the code may ask of storage (and nothing about SQLite).

A second backend implements the same Store protocol (and storage/webhook_base.WebhookStore);
the HTTP layer, CLI and delivery loop only see these records and methods, and open a store
through storage/backend.py. tests/test_storage_boundary.py keeps it that way; the boundary
is described in docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol


class EventRecord(NamedTuple):
    """One stored event, in the column order of storage.sqlite.rows.EVENT_COLUMNS."""

    seq: int
    id: str
    organization: str | None
    action: str
    actor_type: str | None
    actor_id: str | None
    actor_name: str | None
    actor_email: str | None
    targets: str | None  # JSON text
    metadata: str | None  # JSON text
    ip_address: str | None
    user_agent: str | None
    occurred_at: int  # ms since epoch, UTC
    received_at: int
    idempotency_key: str | None
    prev_hash: str | None
    hash: str
    signature: str


@dataclass(slots=True)
class PreparedEvent:
    """A validated event, ready for the writer to number, chain and store.

    Everything that does not depend on the position in the chain is computed
    before the writer sees it, to keep the single writer's critical path short.
    """

    organization: str | None
    action: str
    actor_type: str | None
    actor_id: str | None
    actor_name: str | None
    actor_email: str | None
    targets: list[dict[str, Any]] | None
    targets_json: str | None
    metadata_json: str | None
    ip_address: str | None
    user_agent: str | None
    occurred_at: int
    received_at: int
    idempotency_key: str | None
    request_digest: bytes | None  # set iff idempotency_key is
    personal_salt: bytes
    personal_digest: str
    fts: tuple[str, str, str, str, str]
    keys: str  # its events_keys document (storage/keys.py)


class ExportRecord(NamedTuple):
    """An EventRecord plus what an offline verifier needs (docs/integrity.md §4)."""

    seq: int
    id: str
    organization: str | None
    action: str
    actor_type: str | None
    actor_id: str | None
    actor_name: str | None
    actor_email: str | None
    targets: str | None
    metadata: str | None
    ip_address: str | None
    user_agent: str | None
    occurred_at: int
    received_at: int
    idempotency_key: str | None
    prev_hash: str | None
    hash: str
    signature: str
    personal_salt: bytes | None  # NULL once erased
    personal_digest: str
    erased_at: int | None


class AppendResult(NamedTuple):
    event: EventRecord
    deduplicated: bool


@dataclass(slots=True)
class ApiKeyRecord:
    id: str
    name: str
    prefix: str
    secret_hash: str
    scopes: frozenset[str]
    organization: str | None
    created_at: int
    revoked_at: int | None
    # Written at most once a minute from what `authorize` noted in memory (key_usage.py).
    last_used_at: int | None = None


@dataclass(slots=True)
class ConsoleSession:
    """A signed-in console browser: the cookie holds a random id, this its SHA-256."""

    token_hash: str
    key_id: str
    created_at: int
    last_seen_at: int


@dataclass(slots=True)
class ChainVerificationRecord:
    """One whole-chain verification started from the console (shown on the overview)."""

    id: str
    started_at: int
    finished_at: int
    valid: bool
    checked: int
    head_seq: int
    head_hash: str | None
    first_invalid: dict[str, Any] | None
    key_id: str | None


@dataclass(slots=True)
class StorageGauges:
    """What /metrics reads from storage at scrape time (recalled_lite/metrics.py)."""

    events: int                   # the chain head seq
    write_groups: int             # committed write transactions since start
    write_ops: int                # committed write operations since start
    deliveries: dict[str, int]    # webhook messages by status: pending, sending, failed
    subscriptions: dict[str, int]  # event subscriptions by state
    files: dict[str, int]         # bytes on disk by file ("database", "wal")


class CheckpointRecord(NamedTuple):
    """A signed checkpoint (docs/integrity.md §8); `note` is the signed note as served."""

    id: int
    tree_size: int
    root_hash: bytes
    key_name: str  # "<name>+<8 hex key id>" of the key that signed it
    created_at: int
    note: str


class SigningKeyRecord(NamedTuple):
    verifier_key: str
    created_at: int
    retired_at: int | None  # None for the current key


class ReceiptRecord(NamedTuple):
    id: str
    event_seq: int
    created_at: int
    revoked_at: int | None


class IdempotencyKeyReused(Exception):
    """Same idempotency key, different payload."""

    def __init__(self, event_id: str, index: int = 0) -> None:
        super().__init__(event_id)
        self.event_id = event_id
        self.index = index


class RecordNotFound(Exception):
    """The id does not exist (or is behind the caller's organization wall)."""


# Called inside the intake transaction, on the writer thread, with the events
# just inserted (used by the webhook outbox).
IntakeHook = Callable[[Any, list[EventRecord]], None]


class AuditHook(Protocol):
    """The audit events of one administrative action (recalled_lite/audit.py).

    A store runs it on the writer, in the action's own transaction: `begin()` just before
    the action, then `prepare(result)` right after it, with what the action returned; the
    events it gives are appended through the normal chain append as the op's last step, so
    the action and its audit events commit together or not at all. A business error in the
    action means nothing is appended. `committed(records)` runs after COMMIT with the
    stored events.
    """

    def begin(self) -> None: ...
    def prepare(self, result: Any) -> list[PreparedEvent]: ...
    def committed(self, records: list[EventRecord]) -> None: ...


class Store(Protocol):
    project_id: str
    # The effective journal_mode, synchronous, secure_delete and FTS state (for /metrics).
    durability: dict[str, str]

    # -- lifecycle: `start(loop)` before serving (the async methods need it); `close` flushes
    # the writer first and is idempotent. The CLI uses the *_sync methods without starting it.
    started: bool
    def start(self, loop: Any) -> None: ...
    def close(self) -> None: ...
    head_seq: int  # the writer's chain head (may include a group being committed)
    # Bring head_seq, tree_size and latest_checkpoint up to what other writers committed
    # (another instance on PostgreSQL, a CLI command beside the server on SQLite).
    async def sync_head(self) -> None: ...

    async def append_events(self, events: list[PreparedEvent]) -> list[AppendResult]: ...
    async def get_event(self, event_id: str, organization: str | None) -> EventRecord | None: ...
    # `audit`, on every administrative write: its events are appended in the same transaction,
    # only when the write changed something (revoking a revoked key audits nothing).
    async def create_key(self, record: ApiKeyRecord, audit: AuditHook | None = None) -> None: ...
    async def revoke_key(self, key_id: str, organization: str | None,
                         audit: AuditHook | None = None) -> ApiKeyRecord | None: ...
    def key_by_prefix(self, prefix: str) -> ApiKeyRecord | None: ...
    def list_keys(self) -> list[ApiKeyRecord]: ...
    # Keys created or revoked by another process (the CLI): one key, or all of them.
    async def load_key(self, prefix: str) -> ApiKeyRecord | None: ...
    async def refresh_keys(self) -> None: ...
    def create_key_sync(self, record: ApiKeyRecord, audit: AuditHook | None = None) -> None: ...
    def revoke_key_sync(self, key_id: str, organization: str | None,
                        audit: AuditHook | None = None) -> ApiKeyRecord | None: ...
    async def verify_chain(self, from_seq: int | None, to_seq: int | None) -> dict[str, Any]: ...
    # Read side (§4.5-4.8). `filters` is a storage.filters.ListFilters (plain data);
    # `organization_wall` is the organization of a bound key (every row belongs to it).
    async def list_events(self, filters: Any, organization_wall: str | None) -> tuple[list[EventRecord], bool]: ...
    async def search_events(self, query: Any, organization_wall: str | None, limit: int,
                            cursor: Any) -> tuple[list[EventRecord], bool]: ...
    async def chain_head(self) -> tuple[int, str | None]: ...
    # Events received at or after `since_ms` per organization ("" for none), leaving out the
    # actions that start with `excluded_prefix` (the monthly quotas of limits.py).
    async def events_per_organization(self, since_ms: int, excluded_prefix: str) -> dict[str, int]: ...
    async def export_chunk(self, filters: Any, organization_wall: str | None, after_seq: int, upto_seq: int,
                           render: Callable[[list[ExportRecord]], Any]) -> tuple[Any, int | None]: ...
    # The audit hook gets the total count; it runs with the chunk that finishes the erasure.
    async def erase_actor(self, actor_id: str, organization: str | None, erased_at: int,
                          audit: AuditHook | None = None) -> int: ...
    def derive_key(self, purpose: str) -> bytes: ...
    # The webhook outbox, subscriptions and jobs (a storage.webhook_base.WebhookStore), for
    # the delivery loop; `policy` is a storage.webhook_base.RetryPolicy.
    def webhook_storage(self, policy: Any, *, handoff_limit: int) -> Any: ...
    async def check_writable(self) -> None: ...
    # Metrics: library versions for the build info ({"sqlite": "3.40.1"}), a callback after
    # every committed write group (ops in it, COMMIT seconds; on the writer thread, so it
    # must be quick), and the gauges read at scrape time.
    engine_versions: dict[str, str]
    def observe_write_groups(self, observer: Callable[[int, float], None]) -> None: ...
    async def storage_gauges(self) -> StorageGauges: ...

    # An event with what verification needs (salt, digest, erasure mark), behind the wall.
    async def get_event_chain_record(self, event_id: str, organization: str | None) -> ExportRecord | None: ...

    # -- keys: last use, lookup by id (the console checks its session's key on every request)
    def key_by_id(self, key_id: str) -> ApiKeyRecord | None: ...
    async def record_key_usage(self, used: dict[str, int]) -> None: ...

    # -- console sessions, one-time sign-in links, chain verification records
    async def create_console_session(self, session: ConsoleSession) -> None: ...
    async def load_console_session(self, token_hash: str) -> ConsoleSession | None: ...
    async def touch_console_sessions(self, seen: dict[str, int]) -> None: ...
    async def delete_console_sessions(self, token_hashes: list[str]) -> None: ...
    # Deletes sessions idle since before `idle_before`, and links expired before `now`.
    async def purge_console_sessions(self, idle_before: int, now: int) -> int: ...
    def create_console_link_sync(self, token_hash: str, key_id: str, created_at: int, expires_at: int) -> None: ...
    # The link's key id if it exists, is unused and unexpired at `now` (and marks it used).
    async def redeem_console_link(self, token_hash: str, now: int, *, consume: bool) -> str | None: ...
    async def record_chain_verification(self, record: ChainVerificationRecord) -> None: ...
    async def last_chain_verification(self) -> ChainVerificationRecord | None: ...

    # -- webhooks, read-only figures for the console
    # Open (pending or sending) deliveries per subscription id.
    async def webhook_backlog(self) -> dict[str, int]: ...
    # How many messages a recover / replay_missing job over [begin, end] would queue now.
    async def preview_webhook_job(self, kind: str, subscription: Any, begin: int, end: int | None) -> int: ...

    # The Merkle tree and checkpoints (docs/integrity.md §7-§9). The tree math is pure code in
    # integrity/; storage persists tiles and checkpoints. `build_note(size, root)` returns
    # (signed note, key name) and runs inside the write transaction, so a checkpoint always
    # names committed events.
    latest_checkpoint: CheckpointRecord | None
    tree_size: int  # leaves in the writer's tree (may include a group being committed)
    async def append_checkpoint(self, build_note: Callable[[int, bytes], tuple[str, str]],
                                created_at: int) -> CheckpointRecord: ...
    async def checkpoint_with_size(self, tree_size: int) -> CheckpointRecord | None: ...
    async def checkpoints_page(self, after_size: int, after_id: int, limit: int) -> tuple[list[CheckpointRecord], bool]: ...
    # fn(read_tile) on a reader thread; read_tile(level, index) -> the stored tile or None.
    async def with_tiles(self, fn: Callable[[Callable[[int, int], bytes | None]], Any]) -> Any: ...
    # (hash, signature) of the events with first_seq <= seq < first_seq + count, in order.
    async def leaf_entries(self, first_seq: int, count: int) -> list[tuple[str, str]]: ...
    def signing_keys_sync(self) -> list[SigningKeyRecord]: ...
    def install_signing_key_sync(self, verifier_key: str, now: int) -> None: ...
    async def signing_keys(self) -> list[SigningKeyRecord]: ...
    async def receipt_for_event(self, event_seq: int, new_id: str, created_at: int) -> ReceiptRecord: ...
    async def get_receipt(self, receipt_id: str) -> ReceiptRecord | None: ...
    async def revoke_receipts(self, event_seq: int, revoked_at: int) -> int: ...
    async def get_event_by_seq(self, seq: int) -> EventRecord | None: ...

    # Retention (recalled_lite/retention.py holds the pure rules: precedence, floors, holds).
    # `organization_wall` narrows to a bound key's organization; writes take an audit hook.
    async def list_retention_rules(self, organization: str | None) -> list[Any]: ...
    async def put_retention_rule(self, organization: str | None, action_prefix: str | None, days: int,
                                 audit: AuditHook | None = None) -> tuple[Any, Any]: ...
    async def delete_retention_rule(self, rule_id: str, organization_wall: str | None,
                                    audit: AuditHook | None = None) -> Any: ...
    async def create_legal_hold(self, hold: Any, audit: AuditHook | None = None) -> Any: ...
    async def list_legal_holds(self, organization: str | None, include_released: bool) -> list[Any]: ...
    async def get_legal_hold(self, hold_id: str, organization_wall: str | None) -> Any: ...
    async def release_legal_hold(self, hold_id: str, organization_wall: str | None,
                                 audit: AuditHook | None = None) -> tuple[Any, bool]: ...
    # Purge jobs are durable: a job survives restarts and resumes at its cursor.
    async def create_retention_job(self, trigger: str, reason: str,
                                   audit: AuditHook | None = None) -> tuple[Any, bool]: ...
    async def get_retention_job(self, job_id: str) -> Any: ...
    async def running_retention_job(self) -> Any: ...
    # One batch is one write op (tombstones, retention checkpoint, deletes), so intake waits
    # behind at most one batch.
    async def retention_batch(self, job_id: str, default_days: int, batch_size: int,
                              pause_seconds: float = 0.0) -> Any: ...
    async def fail_retention_job(self, job_id: str, error: str) -> None: ...
    # After a job: the purged text leaves the file (index merge, WAL truncation), then free
    # pages go back (a no-op unless the file uses auto_vacuum=INCREMENTAL); returns pages freed.
    async def reclaim_purged_text(self) -> None: ...
    async def retention_vacuum(self, pages: int) -> int: ...
    async def retention_status(self, organization: str | None) -> dict[str, Any]: ...
