-- Fair share in one round trip each (see db/fairshare.go).
--
-- Every statement of a PL/pgSQL function at READ COMMITTED takes a new
-- snapshot, so a count made after pg_advisory_xact_lock sees every start
-- committed before the lock was taken: the caps stay exact, without the
-- BEGIN, lock, query, COMMIT round trips of a client-side transaction.
--
-- The lock is the user's fair-share lock, the same two keys as the Go
-- side's: 1398031955 is 0x53544653, "STFS".
--
-- A cap's queue: a pending job that is not held is queued (its task is in
-- Redis). Admission lets held jobs go while the queued ones of a cap are
-- fewer than twice its free places (free = cap - running), so that a slot
-- that frees finds the next job already queued; the start below keeps the
-- caps exact and gives each last free place to the best job waiting for it.

-- scrapethis_admit lets go (held = false) as many of the user's held jobs as
-- the caps' queues have room for, best first: highest priority, then
-- oldest, skipping spiders at their cap (no head-of-line blocking), never
-- p_exclude. It returns the jobs let go: the caller enqueues them.
--
-- It takes no lock: the caps are kept by the start, and a queue's depth is
-- only how far ahead jobs are queued, so two admissions at once letting go
-- a little more than the room (each counts before the other's commit)
-- cost at most a few jobs held back again at their start. Nor can it miss
-- a place that frees: whoever frees one (a finish, a cancel) calls this
-- after its own commit, and whoever holds a job calls it after its own, so
-- of any two such calls the later sees the other's write.
CREATE FUNCTION scrapethis_admit(p_user uuid, p_user_max int, p_exclude uuid) RETURNS SETOF jobs
LANGUAGE plpgsql AS $$
DECLARE
    room int;
    running_u int;
    queued_u int;
    ids uuid[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM jobs WHERE user_id = p_user AND status = 'pending' AND held) THEN
        RETURN;
    END IF;
    room := 1000; -- the most one admission lets go
    IF p_user_max > 0 THEN
        SELECT count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'pending')
        INTO running_u, queued_u
        FROM jobs WHERE user_id = p_user AND (status = 'running' OR (status = 'pending' AND NOT held));
        IF running_u >= p_user_max THEN
            RETURN;
        END IF;
        room := least(room, 2 * (p_user_max - running_u) - queued_u);
        IF room <= 0 THEN
            RETURN;
        END IF;
    END IF;
    WITH s AS (
        SELECT sp.id,
            CASE WHEN sp.max_running IS NULL THEN room
                WHEN a.running >= sp.max_running THEN 0
                ELSE 2 * (sp.max_running - a.running) - a.queued END AS n
        FROM spiders sp
        CROSS JOIN LATERAL (
            SELECT count(*) FILTER (WHERE j.status = 'running') AS running, count(*) FILTER (WHERE j.status = 'pending') AS queued
            FROM jobs j WHERE j.user_id = p_user AND j.spider_id = sp.id
                AND (j.status = 'running' OR (j.status = 'pending' AND NOT j.held))
        ) a
        WHERE sp.user_id = p_user
            AND EXISTS (SELECT 1 FROM jobs h WHERE h.user_id = p_user AND h.spider_id = sp.id AND h.status = 'pending' AND h.held)
    ), c AS (
        SELECT k.id FROM s CROSS JOIN LATERAL (
            SELECT j.id, j.priority, j.created_at FROM jobs j
            WHERE j.user_id = p_user AND j.spider_id = s.id AND j.status = 'pending' AND j.held
                AND j.id IS DISTINCT FROM p_exclude
            ORDER BY j.priority DESC, j.created_at, j.id LIMIT greatest(s.n, 0)
        ) k
        ORDER BY k.priority DESC, k.created_at, k.id LIMIT room
    )
    SELECT array_agg(c.id) INTO ids FROM c;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    -- By primary key: written as the held-jobs index's predicate, the
    -- condition would have the planner walk that whole index instead.
    RETURN QUERY UPDATE jobs SET held = false WHERE id = ANY(ids) AND coalesce(status = 'pending' AND held, false) RETURNING *;
END $$;

-- scrapethis_start_capped starts a job that a cap may hold back, under its
-- user's lock. It returns the job's row when it decided about it:
--   running: started (its user and spider run fewer jobs than their caps);
--   held: held back, either because a cap is reached (then it also returns
--     the jobs of the user's other spiders that its place lets go), or
--     because it would take the last free place of a cap from a better job
--     waiting for it (higher priority, or equal and older) - then that job
--     takes its place: if it was held it is let go and returned too.
-- No row for p_id: the job is not pending, is cancelled or already held;
-- nothing to run.
CREATE FUNCTION scrapethis_start_capped(p_id uuid, p_worker text, p_user_max int) RETURNS SETOF jobs
LANGUAGE plpgsql AS $$
DECLARE
    r jobs;
    smax int;
    free_u int; -- null: no cap
    free_s int;
    user_tight boolean;
    b_id uuid;
    b_held boolean;
    uid uuid;
    slots bigint;
BEGIN
    SELECT j.user_id, s.max_running INTO uid, smax FROM jobs j JOIN spiders s ON s.id = j.spider_id WHERE j.id = p_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Caps at or above the live workers' slots cannot be exceeded: no more
    -- jobs start at once than there are slots (a worker heartbeats before
    -- it takes tasks, and one silent for 15 s is dead, its jobs reaped).
    -- Such a start needs neither the lock nor a count.
    SELECT coalesce(sum(w.concurrency), 0) INTO slots FROM workers w WHERE w.heartbeat_at > now() - interval '15 seconds';
    IF slots > 0 AND (p_user_max = 0 OR p_user_max >= slots) AND (smax IS NULL OR smax >= slots) THEN
        RETURN QUERY UPDATE jobs SET status = 'running', worker_id = p_worker, started_at = now(), attempts = attempts + 1
            WHERE id = p_id AND status = 'pending' AND cancel_requested_at IS NULL AND NOT held RETURNING *;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(1398031955, hashtext(uid::text));
    -- After the lock: the job as it is now; then its spider's cap and the
    -- free places of its user and spider, in one statement.
    SELECT * INTO r FROM jobs WHERE id = p_id;
    IF r.status <> 'pending' OR r.cancel_requested_at IS NOT NULL OR r.held THEN
        RETURN;
    END IF;
    SELECT s.max_running,
            CASE WHEN p_user_max > 0 THEN p_user_max - (SELECT count(*) FROM jobs x WHERE x.user_id = r.user_id AND x.status = 'running') END,
            CASE WHEN s.max_running IS NOT NULL THEN s.max_running - (SELECT count(*) FROM jobs x
                WHERE x.user_id = r.user_id AND x.spider_id = r.spider_id AND x.status = 'running') END
        INTO smax, free_u, free_s
        FROM spiders s WHERE s.id = r.spider_id;
    IF coalesce(free_u <= 0, false) OR coalesce(free_s <= 0, false) THEN
        RETURN QUERY UPDATE jobs SET held = true WHERE id = p_id RETURNING *;
        RETURN QUERY SELECT * FROM scrapethis_admit(r.user_id, p_user_max, p_id);
        RETURN;
    END IF;
    IF coalesce(free_u = 1, false) OR coalesce(free_s = 1, false) THEN
        -- The last free place of the user's cap is wanted by any of its
        -- spiders with room; that of the spider's cap by its own jobs.
        user_tight := coalesce(free_u = 1, false);
        SELECT k.id, k.held INTO b_id, b_held FROM (
            SELECT q.id, q.held, q.priority, q.created_at, q.spider_id FROM jobs q
            WHERE q.user_id = r.user_id AND q.status = 'pending' AND NOT q.held AND q.cancel_requested_at IS NULL
                AND q.id <> r.id AND (user_tight OR q.spider_id = r.spider_id)
            UNION ALL
            SELECT h.id, h.held, h.priority, h.created_at, h.spider_id FROM spiders hs CROSS JOIN LATERAL (
                SELECT j.id, j.held, j.priority, j.created_at, j.spider_id FROM jobs j
                WHERE j.user_id = r.user_id AND j.spider_id = hs.id AND j.status = 'pending' AND j.held
                ORDER BY j.priority DESC, j.created_at, j.id LIMIT 1
            ) h
            WHERE hs.user_id = r.user_id AND (user_tight OR hs.id = r.spider_id)
        ) k JOIN spiders ks ON ks.id = k.spider_id
        WHERE (k.priority > r.priority OR (k.priority = r.priority AND (k.created_at, k.id) < (r.created_at, r.id)))
            AND (ks.max_running IS NULL OR ks.id = r.spider_id
                OR (SELECT count(*) FROM jobs x WHERE x.user_id = r.user_id AND x.spider_id = ks.id AND x.status = 'running') < ks.max_running)
        ORDER BY k.priority DESC, k.created_at, k.id LIMIT 1;
        IF b_id IS NOT NULL THEN
            RETURN QUERY UPDATE jobs SET held = true WHERE id = p_id RETURNING *;
            IF b_held THEN
                RETURN QUERY UPDATE jobs SET held = false WHERE id = b_id AND coalesce(status = 'pending' AND held, false) RETURNING *;
            END IF;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY UPDATE jobs SET status = 'running', worker_id = p_worker, started_at = now(), attempts = attempts + 1
        WHERE id = p_id RETURNING *;
END $$;
