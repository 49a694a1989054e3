-- 003: the read indexes (lists, search, erasure) and retention (SQLite's 002 indexes and 008).

-- Lists. SQLite answers organization/actor/target filters through its events_keys FTS5
-- table because its b-trees grew with random inserts (BENCHMARKS.md); PostgreSQL's shared
-- buffers and b-tree page splits do not have that cliff, so plain b-trees drive the
-- newest-first pages (storage/postgres/search_sql.py notes the plans):
-- organization (+ action) pages walk these backwards and stop after one page.
CREATE INDEX events_by_org_action_time ON events (organization, action, occurred_at, seq);
-- An actor's page, and erasure's walk over an actor's events.
CREATE INDEX events_by_actor_time ON events (actor_id, occurred_at, seq) WHERE actor_id IS NOT NULL;
-- Target filters: the exact-value keys of storage/keys.py (`keys @> ARRAY[...]`).
CREATE INDEX events_keys_gin ON events USING gin (keys);
-- Full-text search (storage/postgres/search_doc.py).
CREATE INDEX events_search_gin ON events USING gin (search);

-- A purge batch deletes the webhook messages of the events it purges by event_seq; 002's
-- webhook_messages_once leads with subscription_id, so without this each batch would read
-- every message.
CREATE INDEX webhook_messages_by_event ON webhook_messages (event_seq) WHERE event_seq IS NOT NULL;

-- Retention (docs/retention.md): the same tables and meaning as SQLite's 008.
CREATE TABLE retention_rules (
    id            text    PRIMARY KEY,
    organization  text,
    action_prefix text,
    days          integer NOT NULL CHECK (days >= 0),
    created_at    bigint  NOT NULL,
    updated_at    bigint  NOT NULL
);
CREATE UNIQUE INDEX retention_rules_by_scope
    ON retention_rules ((coalesce(organization, '')), (coalesce(action_prefix, '')));

CREATE TABLE legal_holds (
    id            text    PRIMARY KEY,
    organization  text    NOT NULL,
    actor_id      text,
    action        text,
    reason        text    NOT NULL,
    created_at    bigint  NOT NULL,
    released_at   bigint
);
CREATE INDEX legal_holds_active ON legal_holds (organization) WHERE released_at IS NULL;

CREATE TABLE retention_jobs (
    id           text    PRIMARY KEY,
    status       text    NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    trigger      text    NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    reason       text    NOT NULL,
    now_at       bigint  NOT NULL,
    cursor_seq   bigint  NOT NULL DEFAULT 0,
    stop_seq     bigint  NOT NULL,
    scanned      bigint  NOT NULL DEFAULT 0,
    purged       bigint  NOT NULL DEFAULT 0,
    held         bigint  NOT NULL DEFAULT 0,
    batches      bigint  NOT NULL DEFAULT 0,
    error        text,
    created_at   bigint  NOT NULL,
    updated_at   bigint  NOT NULL,
    finished_at  bigint
);
-- At most one running job in the whole database, whichever instance created it.
CREATE UNIQUE INDEX retention_jobs_running ON retention_jobs (status) WHERE status = 'running';

CREATE TABLE retention_checkpoints (
    id                bigint  PRIMARY KEY,
    job_id            text    NOT NULL,
    first_seq         bigint  NOT NULL,
    last_seq          bigint  NOT NULL,
    count             bigint  NOT NULL,
    last_hash         text    NOT NULL,
    tombstones_digest text    NOT NULL,
    rules             text    NOT NULL,
    reason            text    NOT NULL,
    created_at        bigint  NOT NULL,
    prev_hash         text,
    hash              text    NOT NULL,
    signature         text    NOT NULL
);

CREATE TABLE retention_tombstones (
    seq           bigint  PRIMARY KEY,
    hash          text    NOT NULL,
    signature     text    NOT NULL,
    checkpoint_id bigint  NOT NULL
);

CREATE TABLE retention_purged (
    rule_key text   PRIMARY KEY,
    count    bigint NOT NULL
);

CREATE TRIGGER retention_checkpoints_append_only BEFORE UPDATE OR DELETE ON retention_checkpoints
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER retention_tombstones_append_only BEFORE UPDATE OR DELETE ON retention_tombstones
    FOR EACH ROW EXECUTE FUNCTION append_only();

-- As on SQLite (008): an event row is deleted only once its tombstone, same seq and hash, is
-- written (001's trigger already requires the purge's transaction-local flag); a second
-- trigger, so 001's function stays the one place that says what an UPDATE may change.
CREATE FUNCTION events_delete_needs_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM retention_tombstones t WHERE t.seq = OLD.seq AND t.hash = OLD.hash) THEN
        RAISE EXCEPTION 'events are append-only: rows can be deleted only by a retention purge';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER events_delete_needs_tombstone BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_delete_needs_tombstone();
