-- Idempotency-Key of POST /api/v1/jobs: a key row is written in the same
-- statement as its job, so a crash never splits them. A key is its user's
-- for 24 hours from created_at; an older row may be taken over. No foreign
-- keys: their checks (a share lock on the user's row from every insert)
-- cost more than the rows are worth; a key outlives nothing for long, as
-- expired rows are swept (created_at is BRIN-indexed: keys come in time
-- order, and a BRIN index costs next to nothing per insert).
CREATE TABLE idempotency_keys (
    user_id      uuid NOT NULL,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    job_id       uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys USING brin (created_at);

-- Webhooks: a user's endpoints, and an outbox of deliveries written in
-- the same statement as the job's final status (see db FinishJob,
-- ReapLostJobs, CancelJob, HandBackJob). next_attempt_at is when a
-- delivery is due; a deliverer that claims one moves it forward by a
-- lease, so a deliverer that dies leaves it due again.
CREATE TABLE webhooks (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url        text NOT NULL,
    events     text[] NOT NULL,
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_user ON webhooks (user_id, created_at DESC, id DESC);

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY, -- the webhook-id header, the same on every attempt
    webhook_id      uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    job_id          uuid NOT NULL,
    event           text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz DEFAULT now(), -- NULL once delivered or given up
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

-- The delivery log: one row per attempt.
CREATE TABLE webhook_attempts (
    delivery_id     uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt         integer NOT NULL,
    webhook_id      uuid NOT NULL,
    response_status integer,
    error           text,
    duration_ms     integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, attempt)
);
CREATE INDEX webhook_attempts_webhook ON webhook_attempts (webhook_id, created_at DESC);

-- Retention: a job whose items and logs were deleted keeps its row.
ALTER TABLE jobs ADD COLUMN purged_at timestamptz;
CREATE INDEX jobs_unpurged_final ON jobs (finished_at) WHERE purged_at IS NULL AND finished_at IS NOT NULL;

-- A new delivery wakes the deliverers at once (they also poll): one
-- notification per transaction, whatever the rows.
CREATE FUNCTION scrapethis_webhook_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('scrapethis_webhook_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_deliveries_notify AFTER INSERT ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION scrapethis_webhook_outbox_notify();
