-- 008: retention (docs/retention.md): rules, legal holds, durable purge jobs, and the proof of
-- what was purged (signed retention checkpoints plus one tombstone per purged event).

-- How long events are kept. organization NULL = every organization; action_prefix NULL = every
-- action. The most specific rule wins (storage/sqlite/retention.py): organization + prefix, then
-- organization, then prefix (the longest), then `retention.default_days`. days = 0: forever.
CREATE TABLE retention_rules (
    id            TEXT PRIMARY KEY,              -- rrl_<ULID>
    organization  TEXT,
    action_prefix TEXT,
    days          INTEGER NOT NULL CHECK (days >= 0),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX retention_rules_by_scope
    ON retention_rules (ifnull(organization, ''), ifnull(action_prefix, ''));

-- A legal hold shields the events it matches from purge and erasure while released_at is NULL.
-- Released holds stay, for the record.
CREATE TABLE legal_holds (
    id            TEXT PRIMARY KEY,              -- hold_<ULID>
    organization  TEXT    NOT NULL,
    actor_id      TEXT,                          -- NULL = every actor
    action        TEXT,                          -- NULL = every action; "invoice.*" = a prefix
    reason        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    released_at   INTEGER
) WITHOUT ROWID;
CREATE INDEX legal_holds_active ON legal_holds (organization) WHERE released_at IS NULL;

-- A purge job: scans seqs (cursor_seq, stop_seq] one batch per write transaction, so a restart
-- resumes after the last committed batch. Ages are measured against `now_at`, fixed when the
-- job was created, so a resumed job purges exactly what it would have.
CREATE TABLE retention_jobs (
    id           TEXT PRIMARY KEY,               -- rjob_<ULID>
    status       TEXT    NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    trigger      TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    reason       TEXT    NOT NULL,
    now_at       INTEGER NOT NULL,
    cursor_seq   INTEGER NOT NULL DEFAULT 0,
    stop_seq     INTEGER NOT NULL,
    scanned      INTEGER NOT NULL DEFAULT 0,
    purged       INTEGER NOT NULL DEFAULT 0,
    held         INTEGER NOT NULL DEFAULT 0,     -- expired but shielded by a legal hold
    batches      INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX retention_jobs_running ON retention_jobs (status) WHERE status = 'running';

-- One per purge batch, chained (prev_hash) and signed with the server secret like events:
-- what was purged (seq range, count, the last purged event's hash, a digest over the batch's
-- tombstones), under which rules, when and why. Append-only.
CREATE TABLE retention_checkpoints (
    id                INTEGER PRIMARY KEY,
    job_id            TEXT    NOT NULL,
    first_seq         INTEGER NOT NULL,
    last_seq          INTEGER NOT NULL,
    count             INTEGER NOT NULL,
    last_hash         TEXT    NOT NULL,
    tombstones_digest TEXT    NOT NULL,
    rules             TEXT    NOT NULL,          -- JSON [{rule, organization, actionPrefix, days, count}]
    reason            TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    prev_hash         TEXT,
    hash              TEXT    NOT NULL,
    signature         TEXT    NOT NULL
);

-- (seq, hash, signature) of every purged event: the next event's prevHash still links to it,
-- the Merkle leaf is still computable from it (tile/entries bundles), and verification counts
-- the seq as accounted for. A seq missing WITHOUT a tombstone is tampering.
CREATE TABLE retention_tombstones (
    seq           INTEGER PRIMARY KEY,
    hash          TEXT    NOT NULL,
    signature     TEXT    NOT NULL,
    checkpoint_id INTEGER NOT NULL
);

-- Events purged per rule (GET /v1/retention/status).
CREATE TABLE retention_purged (
    rule_key TEXT PRIMARY KEY,                   -- a rule id, or 'default'
    count    INTEGER NOT NULL
) WITHOUT ROWID;

-- Holds a row only inside a purge batch's own transaction (the batch inserts it first and
-- deletes it last), so it is never committed: a DELETE from anywhere else finds it empty.
CREATE TABLE retention_guard (
    token INTEGER PRIMARY KEY
);

CREATE TRIGGER retention_checkpoints_append_only_update
BEFORE UPDATE ON retention_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'retention checkpoints are append-only');
END;
CREATE TRIGGER retention_checkpoints_append_only_delete
BEFORE DELETE ON retention_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'retention checkpoints are append-only');
END;
CREATE TRIGGER retention_tombstones_append_only_update
BEFORE UPDATE ON retention_tombstones
BEGIN
    SELECT RAISE(ABORT, 'retention tombstones are append-only');
END;
CREATE TRIGGER retention_tombstones_append_only_delete
BEFORE DELETE ON retention_tombstones
BEGIN
    SELECT RAISE(ABORT, 'retention tombstones are append-only');
END;

-- Events: a row may be deleted only by a purge batch (the guard row is there) and only once
-- its tombstone, with the same seq and hash, is written. A plain `DELETE FROM events` from the
-- sqlite3 shell is refused as before.
DROP TRIGGER events_append_only_delete;
CREATE TRIGGER events_append_only_delete
BEFORE DELETE ON events
WHEN NOT EXISTS (SELECT 1 FROM retention_guard)
  OR NOT EXISTS (SELECT 1 FROM retention_tombstones t WHERE t.seq = OLD.seq AND t.hash = OLD.hash)
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: rows can be deleted only by a retention purge');
END;

-- The filter keys (events_keys, 007) are an FTS5 table, which takes no triggers: the purge
-- deletes an event's keys row in the same transaction as the event.
