//! A shipment's planned route in memory: how far a point is from it and how much of it is
//! left, for the off-route rule and the ETA. Planned routes never change once a shipment is
//! created, so each is read from the database once per instance.
use std::sync::Arc;

use geo::{Distance, Haversine, Point};

use super::eta::History;

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
    /// How long earlier trips on it took, once learned.
    history: Option<Arc<History>>,
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
            history: None,
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

    /// The same route, timed by earlier trips on it (none if they teach nothing).
    pub fn with_history(mut self, history: History) -> Route {
        self.history = (!history.is_empty()).then(|| Arc::new(history));
        self
    }

    pub fn history(&self) -> Option<&History> {
        self.history.as_deref()
    }

    pub fn length_m(&self) -> f64 {
        *self.along.last().expect("a route has vertices")
    }

    /// How many vertices the route has: two is only a start and an end.
    pub fn vertex_count(&self) -> usize {
        self.vertices.len()
    }

    /// The distance from the point to the route, and how far along the route its nearest point
    /// lies.
    pub fn locate(&self, lat: f64, lon: f64) -> (f64, f64) {
        self.nearest(lat, lon, 0.0, f64::INFINITY)
            .fold(
                (f64::INFINITY, 0.0),
                |best, c| if c.0 < best.0 { c } else { best },
            )
    }

    /// Like `locate`, but only on the part of the route from `from` to `to` metres along it, and
    /// where two stretches of it pass about as near (within `tie_m`), the one less far along: on
    /// a loop or an out-and-back route the vehicle is where it has got to, not where the route
    /// comes back by.
    pub fn locate_between(&self, lat: f64, lon: f64, from: f64, to: f64, tie_m: f64) -> (f64, f64) {
        let nearest = self
            .nearest(lat, lon, from, to)
            .fold(f64::INFINITY, |best, (d, _)| best.min(d));
        self.nearest(lat, lon, from, to)
            .filter(|(d, _)| *d <= nearest + tie_m)
            .fold((f64::INFINITY, f64::INFINITY), |best, c| {
                if c.1 < best.1 {
                    c
                } else {
                    best
                }
            })
    }

    /// For each segment with a part between `from` and `to` metres along the route, the distance
    /// from the point to that part and how far along the route its nearest point lies.
    fn nearest(
        &self,
        lat: f64,
        lon: f64,
        from: f64,
        to: f64,
    ) -> impl Iterator<Item = (f64, f64)> + '_ {
        let p = (
            (lon - self.origin.0) * M_PER_DEG * self.cos_lat,
            (lat - self.origin.1) * M_PER_DEG,
        );
        self.vertices
            .windows(2)
            .zip(self.along.windows(2))
            .filter(move |(_, a)| a[1] >= from && a[0] <= to)
            .map(move |(w, a)| {
                let (start, end) = (w[0], w[1]);
                let (dx, dy) = (end.0 - start.0, end.1 - start.1);
                let len = a[1] - a[0];
                let t = if len > 0.0 {
                    let lo = ((from - a[0]) / len).max(0.0);
                    let hi = ((to - a[0]) / len).min(1.0);
                    (((p.0 - start.0) * dx + (p.1 - start.1) * dy) / (len * len)).clamp(lo, hi)
                } else {
                    0.0
                };
                let (cx, cy) = (start.0 + t * dx, start.1 + t * dy);
                ((p.0 - cx).hypot(p.1 - cy), a[0] + t * len)
            })
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

    #[test]
    fn on_an_out_and_back_route_the_window_and_ties_keep_the_outward_leg() {
        // 1.1 km east and back along the same street.
        let route = Route::new(&[[11.0, 48.0], [11.015, 48.0], [11.0, 48.0]]).unwrap();
        let half = route.length_m() / 2.0;
        // A point 300 m out lies on both legs: the nearest anywhere may be either, the windowed
        // one is the outward leg.
        let p = (48.0001, 11.004);
        let (d, along) = route.locate_between(p.0, p.1, 0.0, route.length_m(), 15.0);
        assert!(d < 15.0 && (along - 298.0).abs() < 5.0, "{d} {along}");
        // Past the turn, only the way back is in the window.
        let (_, along) = route.locate_between(p.0, p.1, half + 10.0, route.length_m(), 15.0);
        assert!((along - (2.0 * half - 298.0)).abs() < 5.0, "{along}");
        // A window that stops short of the point clamps to its end.
        let (d, along) = route.locate_between(p.0, p.1, 0.0, 100.0, 15.0);
        assert!((along - 100.0).abs() < 0.5 && d > 190.0, "{d} {along}");
    }
}
