-- Signing out ends that one session at once, on every instance: each session carries a random
-- id (`sid` in its token), and a signed-out one is kept here until it would have expired anyway,
-- when the server's upkeep forgets it. The user's other sessions are untouched.
CREATE TABLE signed_out_sessions (
    session_id bigint PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL
);
CREATE INDEX signed_out_sessions_expires_at ON signed_out_sessions (expires_at);
