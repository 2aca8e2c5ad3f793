-- One-time links that sign a driver in on their phone: the dispatcher shows one (as a QR code),
-- the phone opens it once. Only the SHA-256 of the link's random code is kept.
CREATE TABLE device_links (
    token_hash       bytea PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    user_id          bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_by       bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    used_at          timestamptz
);
CREATE INDEX device_links_user_idx ON device_links (user_id);
