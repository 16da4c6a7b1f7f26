-- Only scheduled jobs need the fire-time uniqueness and the active-job
-- lookup; jobs started through the API skip both indexes on insert.
ALTER TABLE jobs DROP CONSTRAINT jobs_schedule_id_scheduled_for_key;
CREATE UNIQUE INDEX jobs_schedule_fire ON jobs (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL;
DROP INDEX jobs_schedule_active;
CREATE INDEX jobs_schedule_active ON jobs (schedule_id) WHERE schedule_id IS NOT NULL AND status IN ('pending', 'running');
