-- 005: the web console (/console/): sign-in sessions, one-time sign-in links, the record of
-- whole-chain verifications, and when each API key was last used.

-- Set at most once a minute per key, by a background flush of what `authorize` noted in
-- memory (never on the request path). NULL: not used since this column existed.
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;

-- A console session. The browser holds only a random id; this keeps its SHA-256, so a copy
-- of the database does not let anyone sign in. A session is as strong as its key: the key
-- is checked (revoked or not) on every request, and the session ends after a configurable
-- idle time (`console.session_idle_hours`). last_seen_at is written at most once a minute.
CREATE TABLE console_sessions (
    token_hash    TEXT PRIMARY KEY,              -- sha256 hex of the cookie value
    key_id        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX console_sessions_by_key ON console_sessions (key_id);

-- `recalled-lite console-link`: a one-time sign-in URL for an operator who has the shell
-- but not the key. Only the token's SHA-256 is kept; used_at makes it single-use.
CREATE TABLE console_links (
    token_hash  TEXT PRIMARY KEY,
    key_id      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
) WITHOUT ROWID;

-- Whole-chain verifications started from the console, for the overview ("last verified").
CREATE TABLE chain_verifications (
    id             TEXT PRIMARY KEY,             -- ver_<ULID>
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER NOT NULL,
    valid          INTEGER NOT NULL,
    checked        INTEGER NOT NULL,
    head_seq       INTEGER NOT NULL,             -- the last seq covered
    head_hash      TEXT,
    first_invalid  TEXT,                         -- JSON {seq, id, reason} or NULL
    key_id         TEXT                          -- who started it
) WITHOUT ROWID;
