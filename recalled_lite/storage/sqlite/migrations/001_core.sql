-- 001: the audit log itself, API keys, project metadata.
--
-- Times are integer milliseconds since the Unix epoch (UTC): compact, and they
-- compare and index as integers.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- One row per event. `seq` is the rowid, so inserts append to the right edge of
-- the b-tree. Personal fields (actor id/name/email, metadata, ip, user agent)
-- are chained only through `personal_digest`, a salted commitment, so erasure
-- can clear them (and the salt) without breaking the chain. See docs/integrity.md.
CREATE TABLE events (
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL,          -- evt_<ULID>, time-sortable
    organization     TEXT,
    action           TEXT    NOT NULL,
    actor_type       TEXT,
    actor_id         TEXT,
    actor_name       TEXT,
    actor_email      TEXT,
    targets          TEXT,                      -- JSON array or NULL
    metadata         TEXT,                      -- JSON object or NULL
    ip_address       TEXT,
    user_agent       TEXT,
    occurred_at      INTEGER NOT NULL,
    received_at      INTEGER NOT NULL,
    idempotency_key  TEXT,
    request_digest   BLOB,                      -- fingerprint of the request, for idempotent replays
    personal_salt    BLOB,                      -- 16 random bytes; NULL once erased
    personal_digest  TEXT    NOT NULL,          -- sha256:<hex> over salt + canonical personal fields
    prev_hash        TEXT,
    hash             TEXT    NOT NULL,
    signature        TEXT    NOT NULL,
    erased_at        INTEGER
);

CREATE UNIQUE INDEX events_by_id ON events (id);
-- Idempotency keys are scoped to (organization, key); NULL organization is its own scope.
CREATE UNIQUE INDEX events_by_idempotency
    ON events (ifnull(organization, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Newest-first listing, optionally narrowed to one organization.
CREATE INDEX events_by_time     ON events (occurred_at, seq);
CREATE INDEX events_by_org_time ON events (organization, occurred_at, seq);
CREATE INDEX events_by_actor    ON events (actor_id, occurred_at, seq) WHERE actor_id IS NOT NULL;

-- Targets, one row per (event, target), so target filters use an index.
CREATE TABLE event_targets (
    seq         INTEGER NOT NULL,
    target_type TEXT    NOT NULL,
    target_id   TEXT    NOT NULL,
    PRIMARY KEY (target_type, target_id, seq)
) WITHOUT ROWID;

-- Full-text index. Contentless: it keeps no copy of the text, so erased personal
-- data does not linger in a second table. rowid = events.seq. Rows are removed
-- with the FTS5 'delete' command, which needs the exact text indexed; that text
-- is a pure function of the event row (storage/sqlite/fts.py).
CREATE VIRTUAL TABLE events_fts USING fts5(
    action, actor, organization, targets, metadata,
    content = '',
    tokenize = "unicode61 remove_diacritics 2 tokenchars '_-@'"
);

-- The log is append-only. The only UPDATE allowed is erasure: it must leave
-- every chained column as it was, clear the salt and the personal fields, and
-- stamp erased_at. Nothing may be deleted.
CREATE TRIGGER events_append_only_update
BEFORE UPDATE ON events
WHEN NOT (
        NEW.seq IS OLD.seq AND NEW.id IS OLD.id
    AND NEW.organization IS OLD.organization AND NEW.action IS OLD.action
    AND NEW.actor_type IS OLD.actor_type AND NEW.targets IS OLD.targets
    AND NEW.occurred_at IS OLD.occurred_at AND NEW.received_at IS OLD.received_at
    AND NEW.idempotency_key IS OLD.idempotency_key
    AND NEW.personal_digest IS OLD.personal_digest
    AND NEW.prev_hash IS OLD.prev_hash AND NEW.hash IS OLD.hash
    AND NEW.signature IS OLD.signature
    AND NEW.personal_salt IS NULL AND NEW.erased_at IS NOT NULL
    AND NEW.metadata IS NULL AND NEW.ip_address IS NULL AND NEW.user_agent IS NULL
    AND ifnull(NEW.actor_id, '[deleted]') = '[deleted]'
    AND ifnull(NEW.actor_name, '[deleted]') = '[deleted]'
    AND ifnull(NEW.actor_email, '[deleted]') = '[deleted]'
)
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: only erasure may update a row');
END;

CREATE TRIGGER events_append_only_delete
BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: rows cannot be deleted');
END;

CREATE TRIGGER event_targets_append_only
BEFORE UPDATE ON event_targets
BEGIN
    SELECT RAISE(ABORT, 'event_targets are append-only');
END;

-- API keys. Only the SHA-256 of the full key is kept; lookup is by prefix.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,            -- key_<ULID>
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL UNIQUE,         -- the 8 alnum chars after rec_live_/rec_test_
    secret_hash  TEXT NOT NULL,               -- sha256 hex of the whole key string
    scopes       TEXT NOT NULL,               -- JSON array
    organization TEXT,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
) WITHOUT ROWID;
