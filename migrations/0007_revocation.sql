-- Taking access away while it is in use. A session names its user's session epoch; raising the
-- epoch (sign out everywhere, a disabled account, a new role or password) ends every session
-- issued before. Share links get a number, so that instances can tell each other which one was
-- revoked without passing its secret around.
ALTER TABLE users ADD COLUMN session_epoch integer NOT NULL DEFAULT 0;
ALTER TABLE share_links ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
