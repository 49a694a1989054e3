"""Retention on PostgreSQL: rules, legal holds, purge jobs, tombstones and retention
checkpoints, with the meaning (and the pure rules of recalled_lite/retention.py) of
storage/sqlite/retention.py.

A purge batch is one write op: it locks its job row (so two instances never run batches of
one job at once, and a batch always starts at the cursor the last one committed), picks the
expired events no legal hold shields in a bounded window of seqs, and in ONE transaction
writes a tombstone per event plus the batch's signed retention checkpoint, deletes the
events with their webhook messages, attempts and receipts (events_append_only in 001 lets a
DELETE through only under the transaction-local flag recalled.retention_purge, and 003's
trigger only once the row's tombstone is written), and moves the job's cursor. The filter
keys and full-text document are columns of the row: they go with it.

A crash mid-batch loses the uncommitted batch entirely; the job, still `running`, resumes
from the last committed cursor. The chain head is never purged.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator

import psycopg

from ...ids import new_id
from ...integrity.retention import RetentionCheckpoint, Tombstone
from ...retention import Hold, LegalHoldActive, Policy, Rule, hold_matches
from ..base import RecordNotFound
from ..retention_batch import (
    CP_COLUMNS as _CP_COLUMNS, HOLD_COLUMNS as _HOLD_COLUMNS, JOB_COLUMNS as _JOB_COLUMNS,
    RULE_COLUMNS as _RULE_COLUMNS, RetentionJob, checkpoint_row, choose_batch,
)
from .erasure import erase_chunk

log = logging.getLogger("recalled_lite.retention")


def _marks(n: int) -> str:
    return ",".join(["%s"] * n)


# -- rules ----------------------------------------------------------------------------------------


def list_rules(conn: Any, organization: str | None = None) -> list[Rule]:
    """Every rule, or (an organization-bound caller) only its organization's."""
    if organization is None:
        rows = conn.execute(f"SELECT {_RULE_COLUMNS} FROM retention_rules ORDER BY id")
    else:
        rows = conn.execute(f"SELECT {_RULE_COLUMNS} FROM retention_rules WHERE organization = %s ORDER BY id",
                            (organization,))
    return [Rule(*r) for r in rows]


def get_rule(conn: Any, organization: str | None, action_prefix: str | None) -> Rule | None:
    row = conn.execute(
        f"SELECT {_RULE_COLUMNS} FROM retention_rules WHERE coalesce(organization, '') = %s "
        "AND coalesce(action_prefix, '') = %s", (organization or "", action_prefix or "")).fetchone()
    return Rule(*row) if row else None


def put_rule(conn: Any, organization: str | None, action_prefix: str | None, days: int,
             at: int) -> tuple[Rule, Rule | None]:
    """Create the rule of this scope, or change its days: (the rule, the one it replaced)."""
    # Another instance may create the same scope at once: the unique index makes the loser
    # wait for the winner's COMMIT, then it finds the rule and updates it, as if it came second.
    new = Rule(new_id("rrl"), organization, action_prefix, days, at, at)
    inserted = conn.execute(
        f"INSERT INTO retention_rules ({_RULE_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s) "
        "ON CONFLICT ((coalesce(organization, '')), (coalesce(action_prefix, ''))) DO NOTHING",
        (new.id, organization, action_prefix, days, at, at)).rowcount
    if inserted:
        return new, None
    old = get_rule(conn, organization, action_prefix)
    assert old is not None
    if old.days == days:
        return old, old
    conn.execute("UPDATE retention_rules SET days = %s, updated_at = %s WHERE id = %s", (days, at, old.id))
    return Rule(old.id, organization, action_prefix, days, old.created_at, at), old


def delete_rule(conn: Any, rule_id: str, organization_wall: str | None) -> Rule:
    row = conn.execute(f"SELECT {_RULE_COLUMNS} FROM retention_rules WHERE id = %s FOR UPDATE",
                       (rule_id,)).fetchone()
    if row is None or (organization_wall is not None and row[1] != organization_wall):
        raise RecordNotFound(rule_id)
    conn.execute("DELETE FROM retention_rules WHERE id = %s", (rule_id,))
    return Rule(*row)


# -- legal holds ----------------------------------------------------------------------------------


def insert_hold(conn: Any, hold: Hold) -> Hold:
    conn.execute(f"INSERT INTO legal_holds ({_HOLD_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s)",
                 (hold.id, hold.organization, hold.actor_id, hold.action, hold.reason, hold.created_at,
                  hold.released_at))
    return hold


def list_holds(conn: Any, organization: str | None, include_released: bool) -> list[Hold]:
    clauses, params = [], []
    if organization is not None:
        clauses.append("organization = %s")
        params.append(organization)
    if not include_released:
        clauses.append("released_at IS NULL")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return [Hold(*r) for r in conn.execute(f"SELECT {_HOLD_COLUMNS} FROM legal_holds{where} ORDER BY id", params)]


def get_hold(conn: Any, hold_id: str, organization_wall: str | None, *, lock: bool = False) -> Hold:
    row = conn.execute(f"SELECT {_HOLD_COLUMNS} FROM legal_holds WHERE id = %s"
                       + (" FOR UPDATE" if lock else ""), (hold_id,)).fetchone()
    if row is None or (organization_wall is not None and row[1] != organization_wall):
        raise RecordNotFound(hold_id)
    return Hold(*row)


def release_hold(conn: Any, hold_id: str, organization_wall: str | None, at: int) -> tuple[Hold, bool]:
    """(the hold, released now?): releasing a released hold changes nothing."""
    hold = get_hold(conn, hold_id, organization_wall, lock=True)
    if hold.released_at is not None:
        return hold, False
    conn.execute("UPDATE legal_holds SET released_at = %s WHERE id = %s", (at, hold_id))
    return Hold(hold.id, hold.organization, hold.actor_id, hold.action, hold.reason, hold.created_at, at), True


def active_holds(conn: Any) -> list[Hold]:
    return [Hold(*r) for r in conn.execute(f"SELECT {_HOLD_COLUMNS} FROM legal_holds WHERE released_at IS NULL")]


def erasure_hold(conn: Any, actor_id: str, organization: str | None) -> str | None:
    """The id of an active hold that shields one of the actor's not-yet-erased events, if any."""
    for hold in active_holds(conn):
        if organization is not None and hold.organization != organization:
            continue
        if hold.actor_id is not None and hold.actor_id != actor_id:
            continue
        rows = conn.execute(
            "SELECT DISTINCT action FROM events WHERE actor_id = %s AND organization = %s AND erased_at IS NULL",
            (actor_id, hold.organization))
        if any(hold_matches(hold, hold.organization, actor_id, action) for (action,) in rows):
            return hold.id
    return None


def erase_chunk_unless_held(conn: Any, actor_id: str, organization: str | None, erased_at: int) -> int:
    """erasure.erase_chunk, refused (LegalHoldActive) while a hold shields one of the events."""
    hold_id = erasure_hold(conn, actor_id, organization)
    if hold_id is not None:
        raise LegalHoldActive(hold_id)
    return erase_chunk(conn, actor_id, organization, erased_at)


# -- jobs ------------------------------------------------------------------------------------------


def get_job(conn: Any, job_id: str, *, lock: bool = False) -> RetentionJob | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM retention_jobs WHERE id = %s"
                       + (" FOR UPDATE" if lock else ""), (job_id,)).fetchone()
    return RetentionJob(*row) if row else None


def running_job(conn: Any) -> RetentionJob | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM retention_jobs WHERE status = 'running' "
                       "ORDER BY id LIMIT 1").fetchone()
    return RetentionJob(*row) if row else None


def last_finished_job(conn: Any) -> RetentionJob | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM retention_jobs WHERE status <> 'running' "
                       "ORDER BY finished_at DESC, id DESC LIMIT 1").fetchone()
    return RetentionJob(*row) if row else None


def create_job(conn: Any, trigger: str, reason: str, at: int) -> tuple[RetentionJob, bool]:
    """(the job, created?): one job runs at a time in the whole database (a unique partial
    index); asking again, from any instance, returns the running one."""
    running = running_job(conn)
    if running is not None:
        return running, False
    stop = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    job = RetentionJob(new_id("rjob"), "running", trigger, reason, at, 0, stop, 0, 0, 0, 0, None, at, at, None)
    inserted = conn.execute(
        f"INSERT INTO retention_jobs ({_JOB_COLUMNS}) VALUES ({_marks(15)}) "
        "ON CONFLICT (status) WHERE status = 'running' DO NOTHING",
        (job.id, job.status, job.trigger, job.reason, job.now_at, job.cursor_seq, job.stop_seq,
         job.scanned, job.purged, job.held, job.batches, job.error, job.created_at, job.updated_at,
         job.finished_at)).rowcount
    if not inserted:  # another instance's job committed first
        running = running_job(conn)
        assert running is not None
        return running, False
    return job, True


def fail_job(conn: Any, job_id: str, error: str, at: int) -> None:
    conn.execute("UPDATE retention_jobs SET status = 'failed', error = %s, updated_at = %s, finished_at = %s "
                 "WHERE id = %s AND status = 'running'", (error[:1000], at, at, job_id))


# -- the purge batch -------------------------------------------------------------------------------


def purge_batch(conn: Any, job_id: str, project_id: str, secret: bytes, default_days: int,
                batch_size: int, at: int, pause_seconds: float = 0.0) -> RetentionJob:
    """One batch of job `job_id` (see the module doc). Returns the job as it now stands.

    `pause_seconds` (tests only) holds the batch's open transaction after its deletes."""
    job = get_job(conn, job_id, lock=True)
    if job is None:
        raise RecordNotFound(job_id)
    if job.status != "running":
        return job
    policy = Policy(list_rules(conn), default_days)
    holds = active_holds(conn)
    head = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    choice = choose_batch(job, policy, holds, head, batch_size, lambda after, upto, before: conn.execute(
        "SELECT seq, organization, action, actor_id, occurred_at FROM events "
        "WHERE seq > %s AND seq <= %s AND occurred_at < %s ORDER BY seq", (after, upto, before)).fetchall())
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
        "UPDATE retention_jobs SET cursor_seq = %s, scanned = scanned + %s, purged = purged + %s, "
        "held = held + %s, batches = batches + %s, updated_at = %s, status = %s, finished_at = %s WHERE id = %s",
        (scanned_to, scanned, len(chosen), held, 1 if chosen else 0, at,
         "completed" if done else "running", at if done else None, job_id))
    return get_job(conn, job_id)  # type: ignore[return-value]


def _delete_events(conn: Any, job: RetentionJob, project_id: str, secret: bytes, seqs: list[int],
                   per_rule: dict[str, dict[str, Any]], at: int) -> None:
    stones = conn.execute("SELECT seq, hash, signature FROM events WHERE seq = ANY(%b::bigint[]) ORDER BY seq",
                          (seqs,)).fetchall()
    previous = conn.execute("SELECT id, hash FROM retention_checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    row = checkpoint_row(job, project_id, secret, stones, previous, per_rule, at)
    cp_id = row[0]
    conn.execute(f"INSERT INTO retention_checkpoints ({_CP_COLUMNS}) VALUES ({_marks(13)})", row)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO retention_tombstones (seq, hash, signature, checkpoint_id) "
                        "VALUES (%s,%s,%s,%s)", [(seq, h, s, cp_id) for seq, h, s in stones])
    for table in ("webhook_attempts", "webhook_messages", "receipts"):
        conn.execute(f"DELETE FROM {table} WHERE event_seq = ANY(%b::bigint[])", (seqs,))
    # Set only around the DELETE and cleared right after: the flag is transaction-local, and
    # the rest of the write group must not run with it.
    conn.execute("SELECT set_config('recalled.retention_purge', 'on', true)")
    deleted = conn.execute("DELETE FROM events WHERE seq = ANY(%b::bigint[])", (seqs,)).rowcount
    conn.execute("SELECT set_config('recalled.retention_purge', 'off', true)")
    if deleted != len(seqs):
        raise psycopg.DataError(f"retention: {deleted} of {len(seqs)} events deleted; batch abandoned")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO retention_purged (rule_key, count) VALUES (%s, %s) "
            "ON CONFLICT (rule_key) DO UPDATE SET count = retention_purged.count + excluded.count",
            [(key, entry["count"]) for key, entry in per_rule.items()])


# -- reads for verification, status, exports --------------------------------------------------------


def tombstones_between(conn: Any, first: int, last: int | None) -> Iterator[Tombstone]:
    sql = "SELECT seq, hash, signature, checkpoint_id FROM retention_tombstones WHERE seq >= %s"
    params: list[Any] = [first]
    if last is not None:
        sql += " AND seq <= %s"
        params.append(last)
    for row in conn.execute(sql + " ORDER BY seq", params).fetchall():
        yield Tombstone(*row)


def tombstone_at(conn: Any, seq: int) -> Tombstone | None:
    row = conn.execute("SELECT seq, hash, signature, checkpoint_id FROM retention_tombstones WHERE seq = %s",
                       (seq,)).fetchone()
    return Tombstone(*row) if row else None


def max_tombstone_seq(conn: Any) -> int:
    return conn.execute("SELECT coalesce(max(seq), 0) FROM retention_tombstones").fetchone()[0]


def checkpoint(conn: Any, cp_id: int) -> RetentionCheckpoint | None:
    row = conn.execute(f"SELECT {_CP_COLUMNS} FROM retention_checkpoints WHERE id = %s", (cp_id,)).fetchone()
    return RetentionCheckpoint(*row) if row else None


def checkpoint_tombstones(conn: Any, cp_id: int) -> list[tuple[int, str]]:
    return [tuple(r) for r in conn.execute(
        "SELECT seq, hash FROM retention_tombstones WHERE checkpoint_id = %s ORDER BY seq", (cp_id,))]


def status(conn: Any, organization: str | None) -> dict[str, Any]:
    """What GET /v1/retention/status shows (for a bound caller: its organization only). The
    read's own transaction (REPEATABLE READ on the reader pool) makes it one snapshot."""
    running = running_job(conn)
    last = last_finished_job(conn)
    rules = {r.id: r for r in list_rules(conn, organization)}
    purged = []
    for key, count in conn.execute("SELECT rule_key, count FROM retention_purged ORDER BY rule_key").fetchall():
        rule = rules.get(key)
        if organization is not None and rule is None:
            continue  # another organization's rule, the default, or one since deleted
        purged.append({"rule": key, "organization": rule.organization if rule else None,
                       "actionPrefix": rule.action_prefix if rule else None,
                       "days": rule.days if rule else None, "purged": count})
    if organization is None:
        oldest = conn.execute("SELECT seq, id, occurred_at FROM events ORDER BY occurred_at, seq LIMIT 1").fetchone()
    else:
        oldest = conn.execute("SELECT seq, id, occurred_at FROM events WHERE organization = %s "
                              "ORDER BY occurred_at, seq LIMIT 1", (organization,)).fetchone()
    total = (conn.execute("SELECT count(*) FROM retention_tombstones").fetchone()[0]
             if organization is None else None)
    return {"running": running, "last": last, "purged_by_rule": purged,
            "oldest": tuple(oldest) if oldest else None, "tombstones": total}
