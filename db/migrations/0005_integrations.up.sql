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
