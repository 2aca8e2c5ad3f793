-- The fleet map's box is compared in plain lon/lat (a box as geography has geodesic edges, and
-- none at all once it spans a hemisphere), so the comparison needs an index of its own.
CREATE INDEX vehicles_last_point_geometry_idx ON vehicles USING gist ((last_point::geometry));
