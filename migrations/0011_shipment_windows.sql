-- A fix belongs to the shipment whose time window holds the time it was taken, not to whatever
-- shipment its vehicle carries when it arrives: a phone's backlog from yesterday's delivery
-- must not join today's. A shipment's window on its vehicle runs from `fixes_from` to `ended_at`
-- (when it arrived, was delivered or was cancelled; open while it is active). `fixes_from` is
-- when it was assigned its vehicle, less a grace for device clocks that run a little behind,
-- never before the vehicle's previous shipment ended. A shipment that never started took no
-- fixes, so its window claims none.
ALTER TABLE shipments ADD COLUMN fixes_from timestamptz;
ALTER TABLE shipments ADD COLUMN ended_at timestamptz;
UPDATE shipments SET fixes_from = LEAST(created_at, COALESCE(started_at, created_at))
    WHERE vehicle_id IS NOT NULL;
UPDATE shipments SET ended_at = GREATEST(updated_at, COALESCE(started_at, updated_at))
    WHERE status IN ('arrived', 'delivered', 'cancelled');
-- The writer asks, per vehicle, for the windows that ended after a late fix was taken.
CREATE INDEX shipments_vehicle_ended_idx ON shipments (vehicle_id, ended_at)
    WHERE started_at IS NOT NULL AND ended_at IS NOT NULL;
