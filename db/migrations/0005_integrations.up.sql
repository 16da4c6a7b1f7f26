-- Idempotency-Key of POST /api/v1/jobs: a key row is written in the same
-- statement as its job, so a crash never splits them. A key is its user's
-- for 24 hours from created_at; an older row may be taken over.
CREATE TABLE idempotency_keys (
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    job_id       uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
