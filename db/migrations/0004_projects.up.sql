-- Deployed code: a user's projects, their immutable versions, and the
-- archives behind them (the embedded storage; see package storage).
CREATE TABLE projects (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    -- versions uploaded so far, for the default labels v1, v2, ...
    uploads       integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX projects_user_name ON projects (user_id, name) WHERE deleted_at IS NULL;
CREATE INDEX projects_user_created ON projects (user_id, created_at DESC, id DESC);

-- Archive bytes by their sha256 (lower-case hex), shared by every version
-- with the same bytes.
CREATE TABLE archives (
    sha256     text PRIMARY KEY,
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE versions (
    id              uuid PRIMARY KEY,
    project_id      uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    label           text NOT NULL,
    sha256          text NOT NULL,
    size_bytes      bigint NOT NULL,
    content_type    text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('scrapy', 'bundle')),
    settings_module text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'building' CHECK (status IN ('building', 'ready', 'failed')),
    error           text,
    -- {"NAME": "path/of/the/file"} once ready
    spiders         jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    ready_at        timestamptz,
    UNIQUE (project_id, sha256),
    UNIQUE (project_id, label)
);
CREATE INDEX versions_project_created ON versions (project_id, created_at DESC, id DESC);
CREATE INDEX versions_building ON versions (created_at) WHERE status = 'building';

ALTER TABLE spiders ADD COLUMN project_id uuid REFERENCES projects (id);
CREATE INDEX spiders_project ON spiders (project_id) WHERE project_id IS NOT NULL AND deleted_at IS NULL;

ALTER TABLE jobs
    ADD COLUMN version_id uuid REFERENCES versions (id),
    ADD COLUMN settings   jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN memory_mb  integer CHECK (memory_mb > 0),
    ADD COLUMN stats      jsonb;
CREATE INDEX jobs_version_active ON jobs (version_id) WHERE status IN ('pending', 'running');
