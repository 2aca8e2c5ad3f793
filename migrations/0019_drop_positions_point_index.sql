-- No query searches the stored fixes by place: history is read by vehicle and time (the primary
-- key), by shipment (`positions_shipment_time_idx`) and by seq (BRIN). The spatial index on
-- every fix cost about a fifth of the ingest rate and 29 % of the table's size on disk
-- (docs/BENCHMARKS.md). A search by place, when one is needed, belongs on the trips and stops
-- (`segments`), a hundredth of the rows.
DROP INDEX IF EXISTS positions_point_idx;
