-- Dwell: a geofence may say how long a vehicle may stay inside before `geofence_dwell` is
-- raised (once per visit, cleared when it leaves). NULL: never.
ALTER TABLE geofences ADD COLUMN dwell_s integer CHECK (dwell_s BETWEEN 60 AND 86400);

ALTER TABLE alerts DROP CONSTRAINT alerts_rule_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_rule_check CHECK (rule IN ('geofence_enter',
    'geofence_exit', 'geofence_dwell', 'overspeed', 'stopped', 'silent', 'off_route', 'arrived',
    'late'));
