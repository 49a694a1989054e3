-- 001: the audit log, its chain head, API keys, the console's tables, the Merkle tree,
-- checkpoints, signing keys and receipts: the PostgreSQL form of SQLite's 001, 002, 005,
-- 006 and 007 (docs/architecture.md). Times are bigint milliseconds since the Unix epoch
-- (UTC), as on SQLite, so both backends hand the same values to the same code.

CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- The one row every chain append locks (SELECT ... FOR UPDATE) inside its transaction:
-- seq, prev_hash and the Merkle tree are assigned under it, so several instances writing
-- at once still build one chain, in commit order. A sequence would not do: sequences hand
-- out numbers that commit out of order.
CREATE TABLE chain_head (
    id         integer PRIMARY KEY CHECK (id = 1),
    seq        bigint  NOT NULL,
    hash       text,
    tree_size  bigint  NOT NULL
);
INSERT INTO chain_head (id, seq, hash, tree_size) VALUES (1, 0, NULL, 0);

-- One row per event, the same columns as SQLite's `events`. Personal fields are chained
-- only through personal_digest (docs/integrity.md), so erasure can clear them.
CREATE TABLE events (
    seq              bigint  PRIMARY KEY,
    id               text    NOT NULL UNIQUE,
    organization     text,
    action           text    NOT NULL,
    actor_type       text,
    actor_id         text,
    actor_name       text,
    actor_email      text,
    targets          text,                      -- JSON text, byte for byte as chained
    metadata         text,
    ip_address       text,
    user_agent       text,
    occurred_at      bigint  NOT NULL,
    received_at      bigint  NOT NULL,
    idempotency_key  text,
    request_digest   bytea,
    personal_salt    bytea,
    personal_digest  text    NOT NULL,
    prev_hash        text,
    hash             text    NOT NULL,
    signature        text    NOT NULL,
    erased_at        bigint,
    -- The exact-value filter keys of storage/keys.py (organization, org + action, org +
    -- action family, actor, target type, type + id, id), one array element per key.
    keys             text[]  NOT NULL DEFAULT '{}',
    -- The full-text document (storage/postgres/search_doc.py), cleared with the personal
    -- fields on erasure.
    search           tsvector NOT NULL DEFAULT ''::tsvector
);

-- Idempotency keys are scoped to (organization, key); NULL organization is its own scope.
CREATE UNIQUE INDEX events_by_idempotency ON events ((coalesce(organization, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Newest-first listing (occurred_at DESC, seq DESC), optionally within one organization.
CREATE INDEX events_by_time     ON events (occurred_at, seq);
CREATE INDEX events_by_org_time ON events (organization, occurred_at, seq);

-- Append-only, as on SQLite: the only UPDATE allowed is erasure (chained columns kept,
-- personal fields and salt cleared, erased_at stamped), and no DELETE except a retention
-- purge, which sets the transaction-local flag recalled.retention_purge.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF coalesce(current_setting('recalled.retention_purge', true), '') = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'events are append-only: rows cannot be deleted';
    END IF;
    IF NOT (
            NEW.seq = OLD.seq AND NEW.id = OLD.id
        AND NEW.organization IS NOT DISTINCT FROM OLD.organization AND NEW.action = OLD.action
        AND NEW.actor_type IS NOT DISTINCT FROM OLD.actor_type
        AND NEW.targets IS NOT DISTINCT FROM OLD.targets
        AND NEW.occurred_at = OLD.occurred_at AND NEW.received_at = OLD.received_at
        AND NEW.idempotency_key IS NOT DISTINCT FROM OLD.idempotency_key
        AND NEW.personal_digest = OLD.personal_digest
        AND NEW.prev_hash IS NOT DISTINCT FROM OLD.prev_hash AND NEW.hash = OLD.hash
        AND NEW.signature = OLD.signature
        AND NEW.personal_salt IS NULL AND NEW.erased_at IS NOT NULL
        AND NEW.metadata IS NULL AND NEW.ip_address IS NULL AND NEW.user_agent IS NULL
        AND coalesce(NEW.actor_id, '[deleted]') = '[deleted]'
        AND coalesce(NEW.actor_name, '[deleted]') = '[deleted]'
        AND coalesce(NEW.actor_email, '[deleted]') = '[deleted]'
    ) THEN
        RAISE EXCEPTION 'events are append-only: only erasure may update a row';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- API keys. Only the SHA-256 of the full key is kept; lookup is by prefix.
CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    prefix       text NOT NULL UNIQUE,
    secret_hash  text NOT NULL,
    scopes       text NOT NULL,               -- JSON array, as on SQLite
    organization text,
    created_at   bigint NOT NULL,
    revoked_at   bigint,
    last_used_at bigint
);

-- The console (SQLite 005): sessions, one-time sign-in links, verification records.
CREATE TABLE console_sessions (
    token_hash    text   PRIMARY KEY,
    key_id        text   NOT NULL,
    created_at    bigint NOT NULL,
    last_seen_at  bigint NOT NULL
);
CREATE INDEX console_sessions_by_key ON console_sessions (key_id);

CREATE TABLE console_links (
    token_hash  text   PRIMARY KEY,
    key_id      text   NOT NULL,
    created_at  bigint NOT NULL,
    expires_at  bigint NOT NULL,
    used_at     bigint
);

CREATE TABLE chain_verifications (
    id             text    PRIMARY KEY,
    started_at     bigint  NOT NULL,
    finished_at    bigint  NOT NULL,
    valid          boolean NOT NULL,
    checked        bigint  NOT NULL,
    head_seq       bigint  NOT NULL,
    head_hash      text,
    first_invalid  text,
    key_id         text
);

-- The Merkle tree (SQLite 006): tiles in strips of 16 hashes; strips only grow.
CREATE TABLE merkle_tiles (
    level  integer NOT NULL,
    idx    bigint  NOT NULL,
    strip  integer NOT NULL,
    hashes bytea   NOT NULL,
    PRIMARY KEY (level, idx, strip)
);
CREATE FUNCTION merkle_tiles_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'merkle tiles cannot be deleted';
    END IF;
    IF NOT (NEW.level = OLD.level AND NEW.idx = OLD.idx AND NEW.strip = OLD.strip
            AND length(NEW.hashes) >= length(OLD.hashes)
            AND substr(NEW.hashes, 1, length(OLD.hashes)) = OLD.hashes) THEN
        RAISE EXCEPTION 'merkle tiles only grow: a stored hash cannot change';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER merkle_tiles_append_only BEFORE UPDATE OR DELETE ON merkle_tiles
    FOR EACH ROW EXECUTE FUNCTION merkle_tiles_append_only();

CREATE TABLE checkpoints (
    id         bigint  PRIMARY KEY,
    tree_size  bigint  NOT NULL,
    root_hash  bytea   NOT NULL,
    key_name   text    NOT NULL,
    created_at bigint  NOT NULL,
    note       text    NOT NULL
);
CREATE INDEX checkpoints_by_size ON checkpoints (tree_size, id);
CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION append_only();

CREATE TABLE signing_keys (
    verifier_key text   PRIMARY KEY,
    created_at   bigint NOT NULL,
    retired_at   bigint
);

CREATE TABLE receipts (
    id         text   PRIMARY KEY,
    event_seq  bigint NOT NULL,
    created_at bigint NOT NULL,
    revoked_at bigint
);
CREATE INDEX receipts_by_event ON receipts (event_seq);
