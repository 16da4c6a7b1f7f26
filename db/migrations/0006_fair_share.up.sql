-- Fair share: job priorities, and concurrency caps per user (the operator's
-- SCRAPETHIS_USER_MAX_RUNNING) and per spider (spiders.max_running).
--
-- A pending job is either queued (held = false: its task is in Redis, and
-- it counts against its user's and spider's caps) or held back by a cap
-- (held = true: it is in Postgres only, and waits to be let go in priority
-- order when a job of its user ends). Every decision that lets a job take
-- a slot is made under its user's advisory lock (see db/fairshare.go).
ALTER TABLE jobs
    ADD COLUMN priority smallint NOT NULL DEFAULT 2 CHECK (priority BETWEEN 0 AND 4),
    ADD COLUMN held     boolean  NOT NULL DEFAULT false;
ALTER TABLE schedules
    ADD COLUMN priority smallint NOT NULL DEFAULT 2 CHECK (priority BETWEEN 0 AND 4);
-- null: no cap; 0 holds every job of the spider until the cap is raised.
ALTER TABLE spiders ADD COLUMN max_running integer CHECK (max_running >= 0);

-- Held jobs of a user in the order they are let go.
CREATE INDEX jobs_held ON jobs (user_id, spider_id, priority DESC, created_at, id) WHERE status = 'pending' AND held;
-- What counts against the caps: a user's running and queued jobs.
CREATE INDEX jobs_active ON jobs (user_id, spider_id) WHERE status = 'running' OR (status = 'pending' AND NOT held);
