-- The alerts channel: geofences, per-vehicle rule state, and the alerts raised.

CREATE TABLE geofences (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    name             text NOT NULL,
    -- The area as drawn (a circle is stored as its polygon too, so PostGIS and the map see one
    -- shape); a circle also keeps its centre and radius, which the engine tests exactly.
    area             geography(Polygon, 4326) NOT NULL,
    center           geography(Point, 4326),
    radius_m         double precision,
    -- Empty: every vehicle of the organisation. Otherwise only these vehicles, or the vehicle
    -- carrying this shipment.
    vehicle_ids      bigint[] NOT NULL DEFAULT '{}',
    shipment_id      bigint REFERENCES shipments (id) ON DELETE CASCADE,
    -- Seconds a vehicle must stay on one side of the boundary before enter or exit fires;
    -- NULL: the organisation's setting.
    debounce_s       integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX geofences_organisation_idx ON geofences (organisation_id);
CREATE INDEX geofences_area_idx ON geofences USING gist (area);

-- Bumped with every geofence change, in the same transaction. The writer reads it with the
-- vehicle under the seq lock and reloads its in-memory index of the organisation's geofences
-- when it moved, so every instance evaluates against what is committed.
ALTER TABLE organisations ADD COLUMN geofence_version bigint NOT NULL DEFAULT 0;

-- What the rules remember about a vehicle between positions (inside which geofences, an open
-- overspeed episode, where it stopped, ...). Read with the vehicle under the seq lock and
-- written in the same statement as its positions, so it survives restarts and every instance
-- continues from the same state.
ALTER TABLE vehicles ADD COLUMN alert_state jsonb NOT NULL DEFAULT '{}';
-- Keys of the organisation's `alerts` settings that this vehicle sets otherwise (a lower speed
-- limit for a truck, say); merged over the organisation's with `||` wherever settings are read.
ALTER TABLE vehicles ADD COLUMN alert_overrides jsonb NOT NULL DEFAULT '{}';

CREATE TABLE alerts (
    -- The seq of the event that raised it: unique, in commit order, and known to the writer
    -- before the insert, so rule state can point at the alert it opened.
    id               bigint PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    rule             text NOT NULL CHECK (rule IN ('geofence_enter', 'geofence_exit', 'overspeed',
                         'stopped', 'silent', 'off_route', 'arrived', 'late')),
    vehicle_id       bigint REFERENCES vehicles (id) ON DELETE CASCADE,
    shipment_id      bigint REFERENCES shipments (id) ON DELETE SET NULL,
    -- No foreign key: a geofence deleted while a batch is judged against the index must not fail
    -- the batch's positions. Its name is kept in details.
    geofence_id      bigint,
    -- The position that raised it (NULL for clock-driven alerts): its device time and place.
    position_at      timestamptz,
    point            geography(Point, 4326),
    raised_at        timestamptz NOT NULL,
    details          jsonb NOT NULL DEFAULT '{}',
    -- The end of the condition (back on route, reporting again, the overspeed episode over).
    cleared_at       timestamptz,
    acknowledged_at  timestamptz,
    acknowledged_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    -- The seq of the latest change (cleared or acknowledged), published as its own event.
    updated_seq      bigint,
    last_event       text NOT NULL DEFAULT 'raised'
                     CHECK (last_event IN ('raised', 'cleared', 'acknowledged'))
);
CREATE INDEX alerts_organisation_idx ON alerts (organisation_id, id DESC);
CREATE INDEX alerts_unacknowledged_idx ON alerts (organisation_id) WHERE acknowledged_at IS NULL;
CREATE INDEX alerts_shipment_idx ON alerts (shipment_id, id) WHERE shipment_id IS NOT NULL;
CREATE INDEX alerts_vehicle_idx ON alerts (vehicle_id, id);
CREATE INDEX alerts_updated_seq_idx ON alerts (updated_seq) WHERE updated_seq IS NOT NULL;
-- A shipment arrives once and is late once, whichever instance or task notices.
CREATE UNIQUE INDEX alerts_once_per_shipment ON alerts (shipment_id, rule)
    WHERE rule IN ('arrived', 'late');
