-- Web console sessions (issue 16). The browser holds only a random token in
-- an HttpOnly cookie; the table holds its SHA-256, the user, and the API key
-- the session was opened with, so revoking that key ends the session too.
-- The CSRF token of the session's forms lives here, never in a cookie.
CREATE TABLE console_sessions (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
CREATE INDEX console_sessions_key ON console_sessions (api_key_id);
