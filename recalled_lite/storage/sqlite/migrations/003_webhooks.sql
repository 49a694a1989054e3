-- 003: webhooks (SPEC §5): event subscriptions, the delivery outbox, attempts, durable jobs.
--
-- The outbox lives in the same file as the events: the intake hook writes one
-- webhook_messages row per matching subscription inside the event's own transaction, so
-- an acknowledged event is always queued for delivery (at-least-once). Times are integer
-- milliseconds since the Unix epoch, like 001. See docs/webhooks.md.

CREATE TABLE webhook_subscriptions (
    id                          TEXT PRIMARY KEY,          -- sub_<ULID>
    url                         TEXT    NOT NULL,          -- normalised (delivery/ssrf.check_url)
    description                 TEXT    NOT NULL DEFAULT '',
    event_types                 TEXT    NOT NULL DEFAULT '[]',  -- JSON array of patterns
    organization                TEXT,                      -- NULL = every organization
    disabled                    INTEGER NOT NULL DEFAULT 0,
    state                       TEXT    NOT NULL
                                CHECK (state IN ('new', 'valid', 'invalid', 'deactivated')),
    state_reason                TEXT,
    state_changed_at            INTEGER NOT NULL,
    -- Signing secrets are sealed with the server secret (never stored in clear): a copy of
    -- the database alone does not let anyone forge deliveries.
    secret                      TEXT    NOT NULL,
    previous_secret             TEXT,                      -- still signs until ...expires_at
    previous_secret_expires_at  INTEGER,
    test_message_id             TEXT,                      -- the test that decides `new`
    first_failure_at            INTEGER,                   -- start of the current failure streak
    last_success_at             INTEGER,
    created_at                  INTEGER NOT NULL,
    updated_at                  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX webhook_subscriptions_by_org ON webhook_subscriptions (organization, id);

-- One row per (event, subscription) - or per test/example - kept across retries: `id` is
-- the webhook-id receivers de-duplicate on. The payload is NOT stored: the event is read
-- from `events` at send time, so erasure applies to later deliveries too.
CREATE TABLE webhook_messages (
    id               TEXT PRIMARY KEY,                     -- whd_<ULID>
    subscription_id  TEXT    NOT NULL,
    event_seq        INTEGER,                              -- NULL for webhook.test / event.example
    type             TEXT    NOT NULL,                     -- event.created | webhook.test | event.example
    example_action   TEXT,                                 -- event.example only
    status           TEXT    NOT NULL
                     CHECK (status IN ('pending', 'sending', 'success', 'failed')),
    trigger          TEXT    NOT NULL,                     -- of the open (or last) attempt
    attempts         INTEGER NOT NULL DEFAULT 0,           -- attempts made, all triggers
    run_attempts     INTEGER NOT NULL DEFAULT 0,           -- attempts in the current retry run
    attempt_id       TEXT,                                 -- id of the open attempt; NULL = atm_<same ULID>
    created_at       INTEGER NOT NULL,
    queued_at        INTEGER NOT NULL,                     -- when the open attempt was scheduled
    next_attempt_at  INTEGER,
    lease_until      INTEGER
) WITHOUT ROWID;

-- "Never twice": at most one message per (subscription, event). replay_missing relies on it.
CREATE UNIQUE INDEX webhook_messages_once
    ON webhook_messages (subscription_id, event_seq) WHERE event_seq IS NOT NULL;
-- Open work only (finished rows drop out, so it stays small): claims and restarts.
CREATE INDEX webhook_messages_open
    ON webhook_messages (subscription_id, status, next_attempt_at)
    WHERE status IN ('pending', 'sending');
-- What `recover` scans.
CREATE INDEX webhook_messages_failed
    ON webhook_messages (subscription_id, id) WHERE status = 'failed';

-- One row per finished attempt. The open attempt of a pending/sending message is shown
-- from the message row until it finishes, then written here under the same id.
CREATE TABLE webhook_attempts (
    id                    TEXT PRIMARY KEY,                -- atm_<ULID>
    message_id            TEXT    NOT NULL,
    subscription_id       TEXT    NOT NULL,
    event_seq             INTEGER,
    attempt               INTEGER NOT NULL,
    status                TEXT    NOT NULL CHECK (status IN ('success', 'failed')),
    trigger               TEXT    NOT NULL,
    url                   TEXT    NOT NULL,
    response_status_code  INTEGER,
    response_body         TEXT,
    error                 TEXT,
    duration_ms           INTEGER,
    created_at            INTEGER NOT NULL,
    next_attempt_at       INTEGER
) WITHOUT ROWID;

CREATE INDEX webhook_attempts_by_sub ON webhook_attempts (subscription_id, created_at, id);
CREATE INDEX webhook_attempts_by_event ON webhook_attempts (event_seq) WHERE event_seq IS NOT NULL;

-- recover / replay_missing run as jobs: a cursor and counters, advanced one chunk per
-- transaction, so a restart resumes where the last committed chunk ended.
CREATE TABLE webhook_jobs (
    id               TEXT PRIMARY KEY,                     -- job_<ULID>
    subscription_id  TEXT    NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('recover', 'replay_missing')),
    status           TEXT    NOT NULL CHECK (status IN ('running', 'completed', 'cancelled')),
    begin_at         INTEGER NOT NULL,
    end_at           INTEGER,
    cursor_seq       INTEGER,                              -- replay: last event seq scanned
    stop_seq         INTEGER,                              -- replay: head seq when created
    cursor_id        TEXT,                                 -- recover: last message id scanned
    stop_id          TEXT,                                 -- recover: upper bound
    total            INTEGER NOT NULL DEFAULT 0,
    scanned          INTEGER NOT NULL DEFAULT 0,
    queued           INTEGER NOT NULL DEFAULT 0,
    skipped          INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
) WITHOUT ROWID;

CREATE INDEX webhook_jobs_by_sub ON webhook_jobs (subscription_id, id);
CREATE INDEX webhook_jobs_running ON webhook_jobs (status) WHERE status = 'running';
