-- The positions log is written at fleet rate; a foreign key adds a lookup and a row lock on the
-- vehicle for every inserted point. Vehicles are never deleted through the API, and the writer
-- only stores points for vehicles whose token it has just resolved, so the check buys nothing.
ALTER TABLE positions DROP CONSTRAINT positions_vehicle_id_fkey;
