-- ETA accuracy, measured by the product itself.
--
-- Every ETA the writer gives a shipment, at the time of the fix that gave it and with the method
-- that made it (NULL for the arrival itself): the history of `shipments.eta`, which is rewritten
-- only when it moves by 30 s or more, so a row every few fixes at most.
CREATE TABLE shipment_etas (
    shipment_id  bigint NOT NULL REFERENCES shipments (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL,
    eta          timestamptz NOT NULL,
    method       text,
    PRIMARY KEY (shipment_id, at)
);

-- The ETA each arrived shipment showed 30, 20, 10 and 5 minutes before it arrived (the one in
-- force at its latest fix at or before that moment, if that fix is at most 2 minutes old), and
-- how far off it was: `error_s` = ETA − arrival, positive when it said later. Written once, in
-- the transaction in which the shipment arrives.
CREATE TABLE eta_errors (
    shipment_id      bigint NOT NULL REFERENCES shipments (id) ON DELETE CASCADE,
    horizon_min      smallint NOT NULL CHECK (horizon_min IN (30, 20, 10, 5)),
    organisation_id  bigint NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    vehicle_id       bigint REFERENCES vehicles (id) ON DELETE SET NULL,
    arrived_at       timestamptz NOT NULL,
    shown_at         timestamptz NOT NULL,
    eta              timestamptz NOT NULL,
    error_s          double precision NOT NULL,
    method           text,
    PRIMARY KEY (shipment_id, horizon_min)
);
CREATE INDEX eta_errors_organisation_idx ON eta_errors (organisation_id, arrived_at);
