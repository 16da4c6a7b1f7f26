-- The jobs whose tasks a worker has pulled from Redis (waiting for a slot
-- or running), published with each heartbeat: a pending job whose task is
-- active in Redis but held by no live worker was pulled by one that died.
ALTER TABLE workers ADD COLUMN holding uuid[] NOT NULL DEFAULT '{}';
