-- 002: webhooks (SPEC §5) on PostgreSQL: subscriptions, the delivery outbox, attempts and
-- durable jobs, in the final shape of SQLite's 003 + 004 (docs/webhooks.md), plus what
-- several instances on one database need: a lease owner on every `sending` row and on every
-- running job, and a version counter of the subscriptions (webhook_state) that each
-- instance's cached view is checked against.
--
-- The outbox lives beside the events: the intake hook writes one webhook_messages row per
-- matching subscription inside the event's own transaction, so an acknowledged event is
-- always queued for delivery (at-least-once). Times are bigint milliseconds, like 001.
-- Ids are COLLATE "C" (recover scans message ids as ranges, lists page by id):
-- ULID order is byte order, which a locale's collation need not keep.

CREATE TABLE webhook_subscriptions (
    id                          text    COLLATE "C" PRIMARY KEY,  -- sub_<ULID>
    url                         text    NOT NULL,          -- normalised (delivery/ssrf.check_url)
    description                 text    NOT NULL DEFAULT '',
    event_types                 text    NOT NULL DEFAULT '[]',  -- JSON array of patterns, as on SQLite
    organization                text,                      -- NULL = every organization
    disabled                    boolean NOT NULL DEFAULT false,
    state                       text    NOT NULL
                                CHECK (state IN ('new', 'valid', 'invalid', 'deactivated')),
    state_reason                text,
    state_changed_at            bigint  NOT NULL,
    -- Sealed with the server secret (delivery/sealing.py): a copy of the database alone does
    -- not let anyone forge deliveries.
    secret                      text    NOT NULL,
    previous_secret             text,
    previous_secret_expires_at  bigint,
    test_message_id             text,
    first_failure_at            bigint,
    last_success_at             bigint,
    created_at                  bigint  NOT NULL,
    updated_at                  bigint  NOT NULL,
    -- Re-tests of `invalid` subscriptions (delivery/healing.py).
    invalid_since               bigint,
    invalid_cause               text,
    retest_at                   bigint,
    retests                     integer NOT NULL DEFAULT 0
);
CREATE INDEX webhook_subscriptions_by_org ON webhook_subscriptions (organization, id);

-- One row. Every change to webhook_subscriptions bumps subs_version in the same
-- transaction (and so takes this row's lock: subscription changes serialize across
-- instances); an instance whose cached view has another version reloads it before it
-- matches events or applies results. NOTIFY makes that prompt; this makes it exact.
CREATE TABLE webhook_state (
    id            integer PRIMARY KEY CHECK (id = 1),
    subs_version  bigint  NOT NULL
);
INSERT INTO webhook_state (id, subs_version) VALUES (1, 0);

-- One row per (event, subscription), or per test/example, kept across retries: `id` is the
-- webhook-id receivers de-duplicate on. The payload is not stored: the event is read from
-- `events` at send time, so erasure applies to later deliveries too.
CREATE TABLE webhook_messages (
    id               text    COLLATE "C" PRIMARY KEY,      -- whd_<ULID>; byte order = time order
    subscription_id  text    NOT NULL,
    event_seq        bigint,                               -- NULL for webhook.test / event.example
    type             text    NOT NULL,
    example_action   text,
    status           text    NOT NULL
                     CHECK (status IN ('pending', 'sending', 'success', 'failed')),
    trigger          text    NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    run_attempts     integer NOT NULL DEFAULT 0,
    attempt_id       text    COLLATE "C",                  -- NULL = atm_<same ULID>
    created_at       bigint  NOT NULL,
    queued_at        bigint  NOT NULL,
    next_attempt_at  bigint,
    -- Which instance holds a `sending` row, until when. It renews the lease while it holds
    -- the row; a row whose lease ran out (its instance died) goes back to `pending` and is
    -- sent by whichever instance claims it, with the same id.
    lease_until      bigint,
    lease_owner      text
);

-- "Never twice": at most one message per (subscription, event). replay_missing relies on it.
CREATE UNIQUE INDEX webhook_messages_once
    ON webhook_messages (subscription_id, event_seq) WHERE event_seq IS NOT NULL;
-- Open work only (finished rows drop out, so it stays small): claims, leases, restarts.
CREATE INDEX webhook_messages_open
    ON webhook_messages (subscription_id, status, next_attempt_at)
    WHERE status IN ('pending', 'sending');
-- What `recover` scans.
CREATE INDEX webhook_messages_failed
    ON webhook_messages (subscription_id, id) WHERE status = 'failed';

CREATE TABLE webhook_attempts (
    id                    text    COLLATE "C" PRIMARY KEY, -- atm_<ULID>
    message_id            text    NOT NULL,
    subscription_id       text    NOT NULL,
    event_seq             bigint,
    attempt               integer NOT NULL,
    status                text    NOT NULL CHECK (status IN ('success', 'failed')),
    trigger               text    NOT NULL,
    url                   text    NOT NULL,
    response_status_code  integer,
    response_body         text,
    error                 text,
    duration_ms           integer,
    created_at            bigint  NOT NULL,
    next_attempt_at       bigint,
    -- A 2xx whose framing was sloppy: what was wrong, in plain words.
    warning               text
);
CREATE INDEX webhook_attempts_by_sub ON webhook_attempts (subscription_id, created_at, id);
CREATE INDEX webhook_attempts_by_event ON webhook_attempts (event_seq) WHERE event_seq IS NOT NULL;

-- recover / replay_missing: a cursor and counters, advanced one chunk per transaction. A
-- running job is run by one instance at a time: the one holding its lease (claimed with
-- FOR UPDATE SKIP LOCKED, renewed by every step); when the lease ends, another takes it.
CREATE TABLE webhook_jobs (
    id               text    COLLATE "C" PRIMARY KEY,      -- job_<ULID>
    subscription_id  text    NOT NULL,
    kind             text    NOT NULL CHECK (kind IN ('recover', 'replay_missing')),
    status           text    NOT NULL CHECK (status IN ('running', 'completed', 'cancelled', 'failed')),
    begin_at         bigint  NOT NULL,
    end_at           bigint,
    cursor_seq       bigint,
    stop_seq         bigint,
    cursor_id        text,
    stop_id          text,
    total            bigint  NOT NULL DEFAULT 0,
    scanned          bigint  NOT NULL DEFAULT 0,
    queued           bigint  NOT NULL DEFAULT 0,
    skipped          bigint  NOT NULL DEFAULT 0,
    error            text,
    created_at       bigint  NOT NULL,
    updated_at       bigint  NOT NULL,
    finished_at      bigint,
    lease_owner      text,
    lease_until      bigint
);
CREATE INDEX webhook_jobs_by_sub ON webhook_jobs (subscription_id, id);
CREATE INDEX webhook_jobs_running ON webhook_jobs (status) WHERE status = 'running';
