"""The backend-neutral part of a retention purge batch: the job record, which events of the
scanned window a batch deletes, and the batch's signed retention checkpoint.

Each backend's retention module (storage/<backend>/retention.py) runs the SQL around these
(selecting the window, writing tombstones, deleting rows), inside its one write op per batch;
the choice and the checkpoint must be the same on every backend, so they live here once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..integrity.retention import checkpoint_document, sign_checkpoint, tombstones_digest
from ..retention import DAY_MS, Hold, Policy, hold_matches

# Seqs one batch looks at (at most): bounds a batch's time when little or nothing is expired.
SCAN_WINDOW_FACTOR = 8

RULE_COLUMNS = "id, organization, action_prefix, days, created_at, updated_at"
HOLD_COLUMNS = "id, organization, actor_id, action, reason, created_at, released_at"
JOB_COLUMNS = ("id, status, trigger, reason, now_at, cursor_seq, stop_seq, scanned, purged, held, "
               "batches, error, created_at, updated_at, finished_at")
CP_COLUMNS = ("id, job_id, first_seq, last_seq, count, last_hash, tombstones_digest, rules, reason, "
              "created_at, prev_hash, hash, signature")


@dataclass(slots=True)
class RetentionJob:
    id: str
    status: str
    trigger: str
    reason: str
    now_at: int
    cursor_seq: int
    stop_seq: int
    scanned: int
    purged: int
    held: int
    batches: int
    error: str | None
    created_at: int
    updated_at: int
    finished_at: int | None


@dataclass(slots=True)
class BatchChoice:
    scanned_to: int                  # the job's cursor after this batch
    chosen: list[int] = field(default_factory=list)  # seqs to delete, ascending
    per_rule: dict[str, dict[str, Any]] = field(default_factory=dict)
    scanned: int = 0
    held: int = 0


# (after_seq, upto_seq, occurred_before) -> rows (seq, organization, action, actor_id, occurred_at)
# in seq order: the backend's query of the window.
FetchWindow = Callable[[int, int, int], Iterable[tuple]]


def choose_batch(job: RetentionJob, policy: Policy, holds: list[Hold], head: int, batch_size: int,
                 fetch: FetchWindow) -> BatchChoice:
    """The expired events of the job's next window that no legal hold shields, at most
    `batch_size`; the chain head (`head`, the newest seq) always stays."""
    high = min(job.cursor_seq + batch_size * SCAN_WINDOW_FACTOR, job.stop_seq)
    shortest = policy.shortest_days()
    if shortest <= 0:
        return BatchChoice(job.stop_seq)  # no rule lets anything expire: nothing to scan
    choice = BatchChoice(high)
    for seq, organization, action, actor_id, occurred_at in fetch(job.cursor_seq, high,
                                                                   job.now_at - shortest * DAY_MS):
        choice.scanned += 1
        if seq >= head:
            continue
        key, days, rule = policy.effective(organization, action)
        if days <= 0 or occurred_at >= job.now_at - days * DAY_MS:
            continue
        if any(hold_matches(h, organization, actor_id, action) for h in holds):
            choice.held += 1
            continue
        choice.chosen.append(seq)
        entry = choice.per_rule.get(key)
        if entry is None:
            entry = choice.per_rule[key] = {
                "rule": key, "organization": rule.organization if rule else None,
                "actionPrefix": rule.action_prefix if rule else None, "days": days, "count": 0}
        entry["count"] += 1
        if len(choice.chosen) >= batch_size:
            choice.scanned_to = seq  # the rest of the window is the next batch's
            break
    return choice


def checkpoint_row(job: RetentionJob, project_id: str, secret: bytes, stones: list[tuple[int, str, Any]],
                   previous: tuple[int, str] | None, per_rule: dict[str, dict[str, Any]], at: int) -> tuple:
    """The retention_checkpoints row (CP_COLUMNS order) of a batch that deletes `stones`
    ((seq, hash, signature), ascending), chained after `previous` ((id, hash) or None)."""
    digest = tombstones_digest((seq, h) for seq, h, _ in stones)
    cp_id = (previous[0] + 1) if previous else 1
    prev_hash = previous[1] if previous else None
    rules = json.dumps(sorted(per_rule.values(), key=lambda e: e["rule"]), sort_keys=True, separators=(",", ":"))
    first_seq, last_seq, last_hash = stones[0][0], stones[-1][0], stones[-1][1]
    document = checkpoint_document(project_id, cp_id, job.id, first_seq, last_seq, len(stones), last_hash,
                                   digest, rules, job.reason, at)
    cp_hash, signature = sign_checkpoint(prev_hash, document, secret)
    return (cp_id, job.id, first_seq, last_seq, len(stones), last_hash, digest, rules, job.reason, at,
            prev_hash, cp_hash, signature)
