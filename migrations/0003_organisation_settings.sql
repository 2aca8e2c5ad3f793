-- Per-organisation settings as one JSON document, one section per capability ("filter" for the
-- position filter, and so on). A missing key means the built-in default, so the defaults can
-- improve without rewriting every organisation, and the writer reads the document with the
-- vehicle it already reads under the seq lock: no cache to keep in step across instances.
ALTER TABLE organisations ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';
