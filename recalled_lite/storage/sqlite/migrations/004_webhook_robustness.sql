-- 004: webhook robustness (docs/webhooks.md): framing warnings on attempts, re-tests of
-- invalid subscriptions, enforced leases, and a `failed` status for quarantined jobs.

-- A 2xx whose framing was sloppy (a body on a 204, a truncated body, data after
-- `Connection: close`) is a success; what was wrong is kept here, in plain words.
ALTER TABLE webhook_attempts ADD COLUMN warning TEXT;

-- Re-tests of `invalid` subscriptions: since when it has been missing events and why
-- (delivery/healing.InvalidCause), when the next re-test is due (NULL = none: a 410 Gone,
-- re-tests off, or not invalid) and how many were made (the backoff doubles with each).
ALTER TABLE webhook_subscriptions ADD COLUMN invalid_since INTEGER;
ALTER TABLE webhook_subscriptions ADD COLUMN invalid_cause TEXT;
ALTER TABLE webhook_subscriptions ADD COLUMN retest_at INTEGER;
ALTER TABLE webhook_subscriptions ADD COLUMN retests INTEGER NOT NULL DEFAULT 0;

-- Subscriptions already invalid: missing events since they became invalid, and re-tested at
-- the first start (the reason text is what the first release wrote for each cause). A 410
-- Gone is the receiver asking us to stop: never re-tested on its own.
UPDATE webhook_subscriptions
   SET invalid_since = state_changed_at,
       invalid_cause = CASE
           WHEN state_reason = 'the receiver answered 410 Gone' THEN 'gone'
           WHEN state_reason LIKE 'no successful delivery for %' THEN 'no_success'
           ELSE 'test_failed' END,
       retest_at = CASE WHEN state_reason = 'the receiver answered 410 Gone' THEN NULL
                        ELSE state_changed_at END
 WHERE state = 'invalid';

-- Which running instance holds a `sending` row until `lease_until`. It renews the lease
-- while it holds the row; a row whose lease ran out is taken back and sent again (same
-- webhook-id), by this instance or another sharing the table.
ALTER TABLE webhook_messages ADD COLUMN lease_owner TEXT;

-- A job that fails again and again is quarantined as `failed` (with `error`) so that the
-- other jobs move on. SQLite cannot change a CHECK constraint in place: rebuild the table.
CREATE TABLE webhook_jobs_004 (
    id               TEXT PRIMARY KEY,                     -- job_<ULID>
    subscription_id  TEXT    NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('recover', 'replay_missing')),
    status           TEXT    NOT NULL CHECK (status IN ('running', 'completed', 'cancelled', 'failed')),
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

INSERT INTO webhook_jobs_004 (id, subscription_id, kind, status, begin_at, end_at, cursor_seq, stop_seq,
                              cursor_id, stop_id, total, scanned, queued, skipped, error, created_at,
                              updated_at, finished_at)
    SELECT id, subscription_id, kind, status, begin_at, end_at, cursor_seq, stop_seq, cursor_id, stop_id,
           total, scanned, queued, skipped, error, created_at, updated_at, finished_at
    FROM webhook_jobs;

DROP TABLE webhook_jobs;
ALTER TABLE webhook_jobs_004 RENAME TO webhook_jobs;

CREATE INDEX webhook_jobs_by_sub ON webhook_jobs (subscription_id, id);
CREATE INDEX webhook_jobs_running ON webhook_jobs (status) WHERE status = 'running';
