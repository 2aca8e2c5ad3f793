-- Waymark core schema: tenants, people, vehicles, shipments, share links, and the positions log.
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE organisations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    email            text NOT NULL,
    password_hash    text NOT NULL,
    role             text NOT NULL CHECK (role IN ('admin', 'dispatcher', 'driver')),
    disabled         boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE vehicles (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id   bigint NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    name              text NOT NULL,
    -- SHA-256 of the ingest token: the token itself has >= 128 random bits, so a fast hash is
    -- as safe as a slow one and keeps the ingest lookup cheap.
    token_hash        bytea NOT NULL,
    speed_unit        text NOT NULL DEFAULT 'knots' CHECK (speed_unit IN ('knots', 'mps', 'kmh', 'mph')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- The current position: the newest accepted (not late, not filtered) point, kept here so that
    -- the fleet, nearby and snapshot reads never scan the positions log.
    last_recorded_at  timestamptz,
    last_point        geography(Point, 4326),
    last_position     jsonb
);
CREATE UNIQUE INDEX vehicles_token_hash_key ON vehicles (token_hash);
CREATE INDEX vehicles_organisation_idx ON vehicles (organisation_id);
CREATE INDEX vehicles_last_point_idx ON vehicles USING gist (last_point);

CREATE TABLE shipments (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id   bigint NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    reference         text NOT NULL,
    status            text NOT NULL DEFAULT 'planned'
                      CHECK (status IN ('planned', 'in_transit', 'arrived', 'delivered', 'cancelled')),
    origin            geography(Point, 4326) NOT NULL,
    origin_name       text,
    destination       geography(Point, 4326) NOT NULL,
    destination_name  text,
    planned_route     geography(LineString, 4326),
    vehicle_id        bigint REFERENCES vehicles (id) ON DELETE SET NULL,
    driver_id         bigint REFERENCES users (id) ON DELETE SET NULL,
    due_at            timestamptz,
    eta               timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    CONSTRAINT shipments_reference_key UNIQUE (organisation_id, reference)
);
-- A vehicle carries at most one active shipment: its positions attach to it.
CREATE UNIQUE INDEX shipments_one_active_per_vehicle ON shipments (vehicle_id)
    WHERE status IN ('planned', 'in_transit');
CREATE INDEX shipments_organisation_idx ON shipments (organisation_id, created_at DESC);
CREATE INDEX shipments_driver_idx ON shipments (driver_id) WHERE driver_id IS NOT NULL;

CREATE TABLE share_links (
    token_hash       bytea PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    shipment_id      bigint NOT NULL REFERENCES shipments (id) ON DELETE CASCADE,
    created_by       bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    revoked_at       timestamptz
);
CREATE INDEX share_links_shipment_idx ON share_links (shipment_id);

-- One counter for every event that carries a seq. Writers take this row's lock for the length of
-- their transaction, so seqs are handed out in commit order across all writers and instances:
-- a reader that has seen seq N has seen every event committed before it.
CREATE TABLE event_seq (
    id     boolean PRIMARY KEY DEFAULT true CHECK (id),
    value  bigint NOT NULL
);
INSERT INTO event_seq (id, value) VALUES (true, 0);

CREATE TABLE positions (
    organisation_id  bigint NOT NULL,
    vehicle_id       bigint NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    shipment_id      bigint,
    seq              bigint NOT NULL,
    recorded_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    point            geography(Point, 4326) NOT NULL,
    accuracy         real,
    speed            real,
    heading          real,
    altitude         real,
    battery          real,
    -- Older than the vehicle's newest point when it arrived: part of the track, never current.
    late             boolean NOT NULL DEFAULT false,
    -- Why a stored point was judged implausible (never published, never current); NULL if fine.
    filter_reason    text,
    attributes       jsonb,
    PRIMARY KEY (vehicle_id, recorded_at)
) PARTITION BY RANGE (recorded_at);
CREATE INDEX positions_shipment_time_idx ON positions (shipment_id, recorded_at) WHERE shipment_id IS NOT NULL;
-- seq grows with insertion order, so a BRIN index finds "everything after seq N" cheaply.
CREATE INDEX positions_seq_idx ON positions USING brin (seq);
CREATE INDEX positions_point_idx ON positions USING gist (point);

-- Anything outside the monthly partitions (old imports, far history) lands here.
CREATE TABLE positions_default PARTITION OF positions DEFAULT;

-- Creates the monthly partitions from the current month through `months_ahead` months ahead.
-- Run at start-up and daily by the server, so retention is a matter of dropping old partitions.
CREATE FUNCTION waymark_ensure_position_partitions(months_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    created integer := 0;
    part_name text;
BEGIN
    FOR i IN 0..months_ahead LOOP
        part_name := format('positions_%s', to_char(month_start, 'YYYY_MM'));
        IF to_regclass(part_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF positions FOR VALUES FROM (%L) TO (%L)',
                part_name,
                month_start::timestamp AT TIME ZONE 'UTC',
                (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        month_start := (month_start + interval '1 month')::date;
    END LOOP;
    RETURN created;
END;
$$;

SELECT waymark_ensure_position_partitions(2);
