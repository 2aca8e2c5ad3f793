//! A shipment's planned route in memory: how far a point is from it and how much of it is
//! left, for the off-route rule and the ETA. Planned routes never change once a shipment is
//! created, so each is read from the database once per instance.
use geo::{Distance, Haversine, Point};

/// Metres per degree of latitude (and of longitude at the equator).
const M_PER_DEG: f64 = 111_320.0;

/// The route on a local flat projection around its first vertex: exact enough at the scale of
/// one trip, and cheap (no trigonometry per segment). A geofence's boundary rings are kept the
/// same way, for the distance from a point to the boundary.
#[derive(Debug, Clone)]
pub struct Route {
    origin: (f64, f64),
    cos_lat: f64,
    /// Vertices in metres east and north of `origin`.
    vertices: Vec<(f64, f64)>,
    /// Distance along the route to each vertex.
    along: Vec<f64>,
}

impl Route {
    /// From `[lon, lat]` pairs; none if fewer than two.
    pub fn new(coordinates: &[[f64; 2]]) -> Option<Route> {
        let [lon0, lat0] = *coordinates.first()?;
        if coordinates.len() < 2 {
            return None;
        }
        let cos_lat = lat0.to_radians().cos();
        let vertices: Vec<(f64, f64)> = coordinates
            .iter()
            .map(|[lon, lat]| ((lon - lon0) * M_PER_DEG * cos_lat, (lat - lat0) * M_PER_DEG))
            .collect();
        let mut along = Vec::with_capacity(vertices.len());
        let mut total = 0.0;
        along.push(0.0);
        for w in vertices.windows(2) {
            total += (w[1].0 - w[0].0).hypot(w[1].1 - w[0].1);
            along.push(total);
        }
        Some(Route {
            origin: (lon0, lat0),
            cos_lat,
            vertices,
            along,
        })
    }

    /// From a GeoJSON LineString.
    pub fn from_geojson(value: &serde_json::Value) -> Option<Route> {
        let coordinates: Vec<[f64; 2]> = value
            .get("coordinates")?
            .as_array()?
            .iter()
            .filter_map(|c| Some([c.get(0)?.as_f64()?, c.get(1)?.as_f64()?]))
            .collect();
        Route::new(&coordinates)
    }

    pub fn length_m(&self) -> f64 {
        *self.along.last().expect("a route has vertices")
    }

    /// The distance from the point to the route, and how far along the route its nearest point
    /// lies.
    pub fn locate(&self, lat: f64, lon: f64) -> (f64, f64) {
        let p = (
            (lon - self.origin.0) * M_PER_DEG * self.cos_lat,
            (lat - self.origin.1) * M_PER_DEG,
        );
        let mut best = (f64::INFINITY, 0.0);
        for (i, w) in self.vertices.windows(2).enumerate() {
            let (a, b) = (w[0], w[1]);
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len2 = dx * dx + dy * dy;
            let t = if len2 > 0.0 {
                (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
            let d = (p.0 - cx).hypot(p.1 - cy);
            if d < best.0 {
                best = (d, self.along[i] + t * len2.sqrt());
            }
        }
        best
    }
}

/// Great-circle distance in metres.
pub fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
    Haversine::distance(Point::new(a.1, a.0), Point::new(b.1, b.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_points_beside_and_along_a_route() {
        // About 1.1 km due east along latitude 48.
        let route = Route::new(&[[11.0, 48.0], [11.015, 48.0]]).unwrap();
        assert!(
            (route.length_m() - 1117.0).abs() < 5.0,
            "{}",
            route.length_m()
        );
        let (d, along) = route.locate(48.0009, 11.0075);
        assert!((d - 100.0).abs() < 2.0, "{d}");
        assert!((along - route.length_m() / 2.0).abs() < 5.0, "{along}");
        let (d, along) = route.locate(48.0, 10.99);
        assert!((d - metres((48.0, 10.99), (48.0, 11.0))).abs() < 2.0);
        assert_eq!(along, 0.0);
    }
}
