-- Trips and stops, kept up to date by the segmenter as fixes arrive (late ones included), so
-- that history and reports read a few rows per vehicle-day instead of scanning the positions log.
CREATE TABLE segments (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    vehicle_id       bigint NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('trip', 'stop')),
    started_at       timestamptz NOT NULL,
    ended_at         timestamptz NOT NULL,
    -- The time of the fix that ended it (after ended_at: the one that left, or came after a gap):
    -- a fix arriving late changes only the segments decided at or after its time.
    decided_at       timestamptz NOT NULL,
    -- false for the vehicle's segment going on now: it may still grow, or turn out otherwise.
    closed           boolean NOT NULL,
    -- A trip's first and last fix; a stop's place (its first fix) and its last fix.
    start_point      geography(Point, 4326) NOT NULL,
    end_point        geography(Point, 4326) NOT NULL,
    distance_m       double precision NOT NULL CHECK (distance_m >= 0),
    max_speed_mps    real NOT NULL CHECK (max_speed_mps >= 0),
    fixes            integer NOT NULL CHECK (fixes > 0),
    -- A closed trip's track, simplified, with a time and speed per vertex (history::path);
    -- NULL for stops and for the trip going on now, whose fixes are read as they are.
    path             bytea,
    CHECK (ended_at >= started_at)
);
CREATE INDEX segments_vehicle_time_idx ON segments (vehicle_id, started_at);
CREATE INDEX segments_organisation_time_idx ON segments (organisation_id, started_at);

-- Where the segmenter stands for each vehicle: the detector's state after the last fix it was
-- fed (`processed_until`), and the earliest stored fix it has not been fed yet (`dirty_from`;
-- older than `processed_until` when a late fix or an import arrived).
CREATE TABLE segmenter_vehicles (
    vehicle_id       bigint PRIMARY KEY REFERENCES vehicles (id) ON DELETE CASCADE,
    organisation_id  bigint NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    processed_until  timestamptz,
    state            jsonb,
    dirty_from       timestamptz
);
CREATE INDEX segmenter_vehicles_dirty_idx ON segmenter_vehicles (dirty_from)
    WHERE dirty_from IS NOT NULL;

-- The segmenter finds new fixes by seq: every position with a seq up to this one has been
-- noted in segmenter_vehicles. Starting at 0, it goes through the history already stored.
CREATE TABLE segmenter_cursor (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint NOT NULL
);
INSERT INTO segmenter_cursor (id, seq) VALUES (true, 0);

-- Geofence visits are read per vehicle and time from the alerts that open and close them.
CREATE INDEX alerts_vehicle_geofence_idx ON alerts (vehicle_id, position_at)
    WHERE geofence_id IS NOT NULL;
