CREATE TABLE users (
    id         uuid PRIMARY KEY,
    email      text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       text NOT NULL DEFAULT '',
    prefix     text NOT NULL,
    key_hash   bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE spiders (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       text NOT NULL,
    repo_path  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
-- A name is unique among a user's live spiders; deleted spiders keep their
-- rows so that old jobs still show what they ran.
CREATE UNIQUE INDEX spiders_user_name ON spiders (user_id, name) WHERE deleted_at IS NULL;
CREATE INDEX spiders_user_created ON spiders (user_id, created_at DESC, id DESC);

CREATE TABLE schedules (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    spider_id       uuid NOT NULL REFERENCES spiders (id),
    name            text,
    cron            text NOT NULL,
    timezone        text NOT NULL DEFAULT 'UTC',
    arguments       jsonb NOT NULL DEFAULT '{}',
    enabled         boolean NOT NULL DEFAULT true,
    timeout_seconds integer,
    no_overlap      boolean NOT NULL DEFAULT false,
    next_run_at     timestamptz,
    last_run_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_user_created ON schedules (user_id, created_at DESC, id DESC);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled;
-- Static schedules declared in a file are keyed by (user, name).
CREATE UNIQUE INDEX schedules_user_name ON schedules (user_id, name) WHERE name IS NOT NULL;

CREATE TABLE jobs (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    spider_id           uuid NOT NULL REFERENCES spiders (id),
    status              text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'finished', 'cancelled', 'error')),
    arguments           jsonb NOT NULL DEFAULT '{}',
    timeout_seconds     integer CHECK (timeout_seconds > 0),
    items_scraped       bigint NOT NULL DEFAULT 0,
    error               text,
    schedule_id         uuid REFERENCES schedules (id) ON DELETE SET NULL,
    scheduled_for       timestamptz,
    worker_id           text,
    attempts            integer NOT NULL DEFAULT 0,
    cancel_requested_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    -- One job per schedule fire time, however many schedulers run.
    UNIQUE (schedule_id, scheduled_for)
);
-- Newest-first listings, with and without filters, walk these indexes.
CREATE INDEX jobs_user_created ON jobs (user_id, created_at DESC, id DESC);
CREATE INDEX jobs_user_status_created ON jobs (user_id, status, created_at DESC, id DESC);
CREATE INDEX jobs_user_spider_created ON jobs (user_id, spider_id, created_at DESC, id DESC);
-- The reconciler scans pending jobs; the reaper scans running ones.
CREATE INDEX jobs_pending ON jobs (created_at, id) WHERE status = 'pending';
CREATE INDEX jobs_running ON jobs (worker_id) WHERE status = 'running';
CREATE INDEX jobs_schedule_active ON jobs (schedule_id) WHERE status IN ('pending', 'running');

CREATE TABLE job_items (
    job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq    bigint NOT NULL,
    data   json NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE job_logs (
    job_id    uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq       bigint NOT NULL,
    line      text NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq)
);

-- Workers say they are alive here; a running job whose worker stopped
-- beating is lost and gets reaped.
CREATE TABLE workers (
    id           text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    concurrency  integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
