-- A retired vehicle keeps its history (positions, tracks, alerts) but leaves the live fleet, and
-- its ingest token is answered `410`. `status` follows `retired_at`, so the two cannot disagree.
ALTER TABLE vehicles ADD COLUMN retired_at timestamptz;
ALTER TABLE vehicles ADD COLUMN status text NOT NULL
    GENERATED ALWAYS AS (CASE WHEN retired_at IS NULL THEN 'active' ELSE 'retired' END) STORED;

-- The seq of the vehicle's latest change (created, renamed, a new speed unit, retired, back in
-- service): its `vehicle` event on the fleet topic, read back by `since`.
ALTER TABLE vehicles ADD COLUMN updated_seq bigint;
CREATE INDEX vehicles_updated_seq_idx ON vehicles (organisation_id, updated_seq)
    WHERE updated_seq IS NOT NULL;
