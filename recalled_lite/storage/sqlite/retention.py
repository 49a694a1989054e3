"""Retention on SQLite: rules, legal holds, purge jobs, tombstones and retention checkpoints.

A purge job runs as a series of write ops, one batch each (`purge_batch`), submitted only
when the previous one has committed (retention service), so intake waits behind at most one
batch. A batch scans a bounded window of seqs after the job's cursor, picks the expired events
no legal hold shields (recalled_lite/retention.py decides), and in ONE transaction:

* writes a tombstone (seq, hash, signature) per event and the batch's retention checkpoint,
  chained and signed (integrity/retention.py);
* inserts the guard row the events trigger asks for (migration 008), deletes the events with
  their full-text entries (the exact indexed text: fts.py), targets, webhook messages and
  attempts and receipts, then deletes the guard row again, so it is never committed;
* moves the job's cursor and counters.

A crash (SIGKILL) mid-batch loses the uncommitted batch entirely; the job, still `running`,
resumes from the last committed cursor at the next start. The chain head is never purged:
the writer reloads the head from the last row, which must stay.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any, Iterator

from ...ids import new_id
from ...integrity.retention import (
    RetentionCheckpoint, Tombstone,
)
from ...retention import Hold, LegalHoldActive, Policy, Rule, hold_matches
from ..base import RecordNotFound
from ..retention_batch import (
    CP_COLUMNS as _CP_COLUMNS, HOLD_COLUMNS as _HOLD_COLUMNS, JOB_COLUMNS as _JOB_COLUMNS,
    RULE_COLUMNS as _RULE_COLUMNS, RetentionJob, checkpoint_row, choose_batch,
)
from .erasure import _BUMP, PURGE_MARKER, erase_chunk, erased_fts_columns
from ..fts import fts_columns
from ..keys import key

log = logging.getLogger("recalled_lite.retention")


def _rule(row: tuple) -> Rule:
    return Rule(*row)


def _hold(row: tuple) -> Hold:
    return Hold(*row)


def _job(row: tuple) -> RetentionJob:
    return RetentionJob(*row)


# -- rules ----------------------------------------------------------------------------------------


def list_rules(conn: sqlite3.Connection, organization: str | None = None) -> list[Rule]:
    """Every rule, or (an organization-bound caller) only its organization's."""
    if organization is None:
        rows = conn.execute(f"SELECT {_RULE_COLUMNS} FROM retention_rules ORDER BY id")
    else:
        rows = conn.execute(f"SELECT {_RULE_COLUMNS} FROM retention_rules WHERE organization = ? ORDER BY id",
                            (organization,))
    return [_rule(r) for r in rows]


def get_rule(conn: sqlite3.Connection, organization: str | None, action_prefix: str | None) -> Rule | None:
    row = conn.execute(
        f"SELECT {_RULE_COLUMNS} FROM retention_rules WHERE ifnull(organization, '') = ? "
        "AND ifnull(action_prefix, '') = ?", (organization or "", action_prefix or "")).fetchone()
    return _rule(row) if row else None


def put_rule(conn: sqlite3.Connection, organization: str | None, action_prefix: str | None, days: int,
             at: int) -> tuple[Rule, Rule | None]:
    """Create the rule of this scope, or change its days: (the rule, the one it replaced)."""
    old = get_rule(conn, organization, action_prefix)
    if old is None:
        rule = Rule(new_id("rrl"), organization, action_prefix, days, at, at)
        conn.execute(f"INSERT INTO retention_rules ({_RULE_COLUMNS}) VALUES (?,?,?,?,?,?)",
                     (rule.id, organization, action_prefix, days, at, at))
        return rule, None
    if old.days == days:
        return old, old
    conn.execute("UPDATE retention_rules SET days = ?, updated_at = ? WHERE id = ?", (days, at, old.id))
    return Rule(old.id, organization, action_prefix, days, old.created_at, at), old


def delete_rule(conn: sqlite3.Connection, rule_id: str, organization_wall: str | None) -> Rule:
    row = conn.execute(f"SELECT {_RULE_COLUMNS} FROM retention_rules WHERE id = ?", (rule_id,)).fetchone()
    if row is None or (organization_wall is not None and row[1] != organization_wall):
        raise RecordNotFound(rule_id)
    conn.execute("DELETE FROM retention_rules WHERE id = ?", (rule_id,))
    return _rule(row)


# -- legal holds ----------------------------------------------------------------------------------


def insert_hold(conn: sqlite3.Connection, hold: Hold) -> Hold:
    conn.execute(f"INSERT INTO legal_holds ({_HOLD_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                 (hold.id, hold.organization, hold.actor_id, hold.action, hold.reason, hold.created_at,
                  hold.released_at))
    return hold


def list_holds(conn: sqlite3.Connection, organization: str | None, include_released: bool) -> list[Hold]:
    clauses, params = [], []
    if organization is not None:
        clauses.append("organization = ?")
        params.append(organization)
    if not include_released:
        clauses.append("released_at IS NULL")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return [_hold(r) for r in conn.execute(f"SELECT {_HOLD_COLUMNS} FROM legal_holds{where} ORDER BY id", params)]


def get_hold(conn: sqlite3.Connection, hold_id: str, organization_wall: str | None) -> Hold:
    row = conn.execute(f"SELECT {_HOLD_COLUMNS} FROM legal_holds WHERE id = ?", (hold_id,)).fetchone()
    if row is None or (organization_wall is not None and row[1] != organization_wall):
        raise RecordNotFound(hold_id)
    return _hold(row)


def release_hold(conn: sqlite3.Connection, hold_id: str, organization_wall: str | None,
                 at: int) -> tuple[Hold, bool]:
    """(the hold, released now?): releasing a released hold changes nothing."""
    hold = get_hold(conn, hold_id, organization_wall)
    if hold.released_at is not None:
        return hold, False
    conn.execute("UPDATE legal_holds SET released_at = ? WHERE id = ?", (at, hold_id))
    return Hold(hold.id, hold.organization, hold.actor_id, hold.action, hold.reason, hold.created_at, at), True


def active_holds(conn: sqlite3.Connection) -> list[Hold]:
    return [_hold(r) for r in conn.execute(f"SELECT {_HOLD_COLUMNS} FROM legal_holds WHERE released_at IS NULL")]


def erasure_hold(conn: sqlite3.Connection, actor_id: str, organization: str | None) -> str | None:
    """The id of an active hold that shields one of the actor's not-yet-erased events, if any."""
    for hold in active_holds(conn):
        if organization is not None and hold.organization != organization:
            continue
        if hold.actor_id is not None and hold.actor_id != actor_id:
            continue
        # Through the actor's exact-value key (storage/keys.py): the events table has no
        # index by actor since the layout of migration 007.
        rows = conn.execute(
            "SELECT action FROM events_keys CROSS JOIN events ON events.seq = events_keys.rowid "
            "WHERE events_keys MATCH ? AND actor_id = ? AND organization = ? AND erased_at IS NULL",
            (key("a", actor_id), actor_id, hold.organization))
        if any(hold_matches(hold, hold.organization, actor_id, action) for (action,) in rows):
            return hold.id
    return None


def erase_chunk_unless_held(conn: sqlite3.Connection, actor_id: str, organization: str | None,
                            erased_at: int) -> int:
    """erasure.erase_chunk, refused (LegalHoldActive) while a hold shields one of the events."""
    hold_id = erasure_hold(conn, actor_id, organization)
    if hold_id is not None:
        raise LegalHoldActive(hold_id)
    return erase_chunk(conn, actor_id, organization, erased_at)


# -- jobs ------------------------------------------------------------------------------------------


def get_job(conn: sqlite3.Connection, job_id: str) -> RetentionJob | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM retention_jobs WHERE id = ?", (job_id,)).fetchone()
    return _job(row) if row else None


def running_job(conn: sqlite3.Connection) -> RetentionJob | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM retention_jobs WHERE status = 'running' "
                       "ORDER BY id LIMIT 1").fetchone()
    return _job(row) if row else None


def last_finished_job(conn: sqlite3.Connection) -> RetentionJob | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM retention_jobs WHERE status != 'running' "
                       "ORDER BY finished_at DESC, id DESC LIMIT 1").fetchone()
    return _job(row) if row else None


def create_job(conn: sqlite3.Connection, trigger: str, reason: str, at: int) -> tuple[RetentionJob, bool]:
    """(the job, created?): one job runs at a time; asking again returns the running one."""
    running = running_job(conn)
    if running is not None:
        return running, False
    stop = conn.execute("SELECT ifnull(max(seq), 0) FROM events").fetchone()[0]
    job = RetentionJob(new_id("rjob"), "running", trigger, reason, at, 0, stop, 0, 0, 0, 0, None, at, at, None)
    conn.execute(f"INSERT INTO retention_jobs ({_JOB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                 (job.id, job.status, job.trigger, job.reason, job.now_at, job.cursor_seq, job.stop_seq,
                  job.scanned, job.purged, job.held, job.batches, job.error, job.created_at, job.updated_at,
                  job.finished_at))
    return job, True


def fail_job(conn: sqlite3.Connection, job_id: str, error: str, at: int) -> None:
    conn.execute("UPDATE retention_jobs SET status = 'failed', error = ?, updated_at = ?, finished_at = ? "
                 "WHERE id = ? AND status = 'running'", (error[:1000], at, at, job_id))


# -- the purge batch -------------------------------------------------------------------------------

_FULL_ROW = ("SELECT seq, organization, action, actor_id, actor_name, actor_email, targets, metadata, "
             "erased_at, hash, signature FROM events WHERE seq IN ({})")
_FTS_DELETE = ("INSERT INTO events_fts (events_fts, rowid, action, actor, organization, targets, metadata) "
               "VALUES ('delete', ?, ?, ?, ?, ?, ?)")


def purge_batch(conn: sqlite3.Connection, job_id: str, project_id: str, secret: bytes, default_days: int,
                batch_size: int, at: int, pause_seconds: float = 0.0) -> RetentionJob:
    """One batch of job `job_id` (see the module doc). Returns the job as it now stands.

    `pause_seconds` (tests only: RECALLED_TEST_RETENTION_PAUSE_MS) holds the batch's open
    transaction after its deletes, so a SIGKILL lands mid-batch for sure."""
    job = get_job(conn, job_id)
    if job is None:
        raise RecordNotFound(job_id)
    if job.status != "running":
        return job
    policy = Policy(list_rules(conn), default_days)
    holds = active_holds(conn)
    head = conn.execute("SELECT ifnull(max(seq), 0) FROM events").fetchone()[0]
    choice = choose_batch(job, policy, holds, head, batch_size, lambda after, upto, before: conn.execute(
        "SELECT seq, organization, action, actor_id, occurred_at FROM events "
        "WHERE seq > ? AND seq <= ? AND occurred_at < ? ORDER BY seq", (after, upto, before)))
    chosen, per_rule, scanned, held, scanned_to = (choice.chosen, choice.per_rule, choice.scanned, choice.held,
                                                   choice.scanned_to)
    if chosen:
        _delete_events(conn, job, project_id, secret, chosen, per_rule, at)
        if pause_seconds > 0:
            log.warning("retention test pause: %d events deleted, the batch's transaction is held open",
                        len(chosen))
            time.sleep(pause_seconds)
    done = scanned_to >= job.stop_seq
    conn.execute(
        "UPDATE retention_jobs SET cursor_seq = ?, scanned = scanned + ?, purged = purged + ?, held = held + ?, "
        "batches = batches + ?, updated_at = ?, status = ?, finished_at = ? WHERE id = ?",
        (scanned_to, scanned, len(chosen), held, 1 if chosen else 0, at,
         "completed" if done else "running", at if done else None, job_id))
    return get_job(conn, job_id)  # type: ignore[return-value]


def _delete_events(conn: sqlite3.Connection, job: RetentionJob, project_id: str, secret: bytes,
                   seqs: list[int], per_rule: dict[str, dict[str, Any]], at: int) -> None:
    marks = ",".join("?" * len(seqs))
    rows = conn.execute(_FULL_ROW.format(marks) + " ORDER BY seq", seqs).fetchall()
    stones = [(r[0], r[9], r[10]) for r in rows]
    previous = conn.execute("SELECT id, hash FROM retention_checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    row = checkpoint_row(job, project_id, secret, stones, previous, per_rule, at)
    cp_id = row[0]
    conn.execute(f"INSERT INTO retention_checkpoints ({_CP_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
    conn.executemany("INSERT INTO retention_tombstones (seq, hash, signature, checkpoint_id) VALUES (?,?,?,?)",
                     [(seq, h, s, cp_id) for seq, h, s in stones])
    fts = []
    for seq, org, action, a_id, a_name, a_email, targets, metadata, erased_at, _h, _s in rows:
        columns = (erased_fts_columns(action, org, targets) if erased_at is not None
                   else fts_columns(action, a_id, a_name, a_email, org, targets, metadata))
        fts.append((seq, *columns))
    conn.execute("INSERT INTO retention_guard (token) VALUES (1)")
    conn.executemany(_FTS_DELETE, fts)
    conn.execute(f"DELETE FROM events_keys WHERE rowid IN ({marks})", seqs)
    conn.execute(f"DELETE FROM events_ahead WHERE seq IN ({marks})", seqs)
    conn.execute(f"DELETE FROM webhook_attempts WHERE event_seq IN ({marks})", seqs)
    conn.execute(f"DELETE FROM webhook_messages WHERE event_seq IN ({marks})", seqs)
    conn.execute(f"DELETE FROM receipts WHERE event_seq IN ({marks})", seqs)
    deleted = conn.execute(f"DELETE FROM events WHERE seq IN ({marks})", seqs).rowcount
    conn.execute("DELETE FROM retention_guard")
    if deleted != len(seqs):
        raise sqlite3.DatabaseError(f"retention: {deleted} of {len(seqs)} events deleted; batch abandoned")
    # A 'delete' in the contentless index only adds a tombstone: the terms stay in older
    # segments until they are merged. Owe the incremental merge erasure uses (erasure.py),
    # so purged text leaves the file as erased text does (the service runs it after the job).
    conn.execute(_BUMP, (PURGE_MARKER,))
    conn.executemany(
        "INSERT INTO retention_purged (rule_key, count) VALUES (?, ?) "
        "ON CONFLICT (rule_key) DO UPDATE SET count = count + excluded.count",
        [(key, entry["count"]) for key, entry in per_rule.items()])


def incremental_vacuum(conn: sqlite3.Connection, pages: int) -> int:
    """Give up to `pages` free pages back to the file system (auto_vacuum = INCREMENTAL only);
    returns the free pages left. Other databases keep free pages for later writes."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        return 0
    conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
    return conn.execute("PRAGMA freelist_count").fetchone()[0]


# -- reads for verification, status, exports --------------------------------------------------------


def tombstones_between(conn: sqlite3.Connection, first: int, last: int | None) -> Iterator[Tombstone]:
    sql = "SELECT seq, hash, signature, checkpoint_id FROM retention_tombstones WHERE seq >= ?"
    params: list[Any] = [first]
    if last is not None:
        sql += " AND seq <= ?"
        params.append(last)
    for row in conn.execute(sql + " ORDER BY seq", params):
        yield Tombstone(*row)


def tombstone_at(conn: sqlite3.Connection, seq: int) -> Tombstone | None:
    row = conn.execute("SELECT seq, hash, signature, checkpoint_id FROM retention_tombstones WHERE seq = ?",
                       (seq,)).fetchone()
    return Tombstone(*row) if row else None


def max_tombstone_seq(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT ifnull(max(seq), 0) FROM retention_tombstones").fetchone()[0]


def checkpoint(conn: sqlite3.Connection, cp_id: int) -> RetentionCheckpoint | None:
    row = conn.execute(f"SELECT {_CP_COLUMNS} FROM retention_checkpoints WHERE id = ?", (cp_id,)).fetchone()
    return RetentionCheckpoint(*row) if row else None


def checkpoint_tombstones(conn: sqlite3.Connection, cp_id: int) -> list[tuple[int, str]]:
    return conn.execute("SELECT seq, hash FROM retention_tombstones WHERE checkpoint_id = ? ORDER BY seq",
                        (cp_id,)).fetchall()


def status(conn: sqlite3.Connection, organization: str | None) -> dict[str, Any]:
    """What GET /v1/retention/status shows (for a bound caller: its organization only)."""
    conn.execute("BEGIN")
    try:
        running = running_job(conn)
        last = last_finished_job(conn)
        rules = {r.id: r for r in list_rules(conn, organization)}
        purged = []
        for key, count in conn.execute("SELECT rule_key, count FROM retention_purged ORDER BY rule_key"):
            rule = rules.get(key)
            if organization is not None and rule is None:
                continue  # another organization's rule, the default, or one since deleted
            purged.append({"rule": key, "organization": rule.organization if rule else None,
                           "actionPrefix": rule.action_prefix if rule else None,
                           "days": rule.days if rule else None, "purged": count})
        if organization is None:
            oldest = conn.execute("SELECT seq, id, occurred_at FROM events ORDER BY occurred_at, seq LIMIT 1").fetchone()
        else:
            oldest = conn.execute("SELECT seq, id, occurred_at FROM events WHERE organization = ? "
                                  "ORDER BY occurred_at, seq LIMIT 1", (organization,)).fetchone()
        total = conn.execute("SELECT count(*) FROM retention_tombstones").fetchone()[0] if organization is None else None
        return {"running": running, "last": last, "purged_by_rule": purged, "oldest": oldest, "tombstones": total}
    finally:
        conn.execute("COMMIT")
