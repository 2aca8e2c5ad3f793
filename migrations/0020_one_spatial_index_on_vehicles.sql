-- A vehicle's current point had two spatial indexes: on the geography, for the search by
-- distance, and on the lon/lat geometry, for the fleet map's box. Every position rewrites the
-- point, so each was one more index entry per fix. The search by distance now finds its
-- candidates through the geometry index, by a box around its circle (`fleet::Bbox::around`).
DROP INDEX IF EXISTS vehicles_last_point_idx;
