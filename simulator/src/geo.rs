//! Spherical geometry for replaying traces: distance, bearing, moving a point, thinning a line.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Mean Earth radius (IUGG), the usual choice for haversine distances.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A WGS84 coordinate in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

impl LatLon {
    pub const fn new(lat: f64, lon: f64) -> Self {
        Self { lat, lon }
    }

    /// GeoJSON order: `[lon, lat]`.
    pub fn to_geojson(self) -> [f64; 2] {
        [self.lon, self.lat]
    }
}

/// Great-circle distance in metres.
pub fn haversine_m(a: LatLon, b: LatLon) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    // Clamping keeps rounding from pushing asin out of its domain for antipodal points.
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// Initial bearing from `a` towards `b`, in degrees clockwise from true north, in `[0, 360)`.
pub fn initial_bearing_deg(a: LatLon, b: LatLon) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlon = (b.lon - a.lon).to_radians();
    let y = dlon.sin() * lat2.cos();
    let x = lat1.cos() * lat2.sin() - lat1.sin() * lat2.cos() * dlon.cos();
    normalise_deg(y.atan2(x).to_degrees())
}

/// The point reached from `from` after `distance_m` along the great circle with `bearing_deg`.
pub fn destination(from: LatLon, bearing_deg: f64, distance_m: f64) -> LatLon {
    let delta = distance_m / EARTH_RADIUS_M;
    let theta = bearing_deg.to_radians();
    let lat1 = from.lat.to_radians();
    let lon1 = from.lon.to_radians();
    let lat2 = (lat1.sin() * delta.cos() + lat1.cos() * delta.sin() * theta.cos()).asin();
    let lon2 = lon1
        + (theta.sin() * delta.sin() * lat1.cos()).atan2(delta.cos() - lat1.sin() * lat2.sin());
    let lon = (lon2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0;
    LatLon::new(lat2.to_degrees(), lon)
}

/// Maps any angle in degrees into `[0, 360)`.
pub fn normalise_deg(deg: f64) -> f64 {
    let r = deg.rem_euclid(360.0);
    // rem_euclid of a tiny negative number rounds up to exactly 360.0.
    if r >= 360.0 {
        0.0
    } else {
        r
    }
}

/// Keeps at most `max_points` vertices of `line`, always the first and the last, choosing the
/// ones that matter most for its shape (Douglas–Peucker driven by a point budget instead of a
/// tolerance, so the result size is known in advance).
pub fn thin(line: &[LatLon], max_points: usize) -> Vec<LatLon> {
    let max_points = max_points.max(2);
    if line.len() <= max_points {
        return line.to_vec();
    }
    let plane = LocalPlane::around(line);
    let xy: Vec<(f64, f64)> = line.iter().map(|&p| plane.project(p)).collect();

    let mut keep = vec![false; line.len()];
    keep[0] = true;
    keep[line.len() - 1] = true;
    let mut kept = 2;
    let mut heap = BinaryHeap::new();
    heap.extend(Span::farthest(&xy, 0, line.len() - 1));
    while kept < max_points {
        let Some(span) = heap.pop() else { break };
        keep[span.split] = true;
        kept += 1;
        heap.extend(Span::farthest(&xy, span.start, span.split));
        heap.extend(Span::farthest(&xy, span.split, span.end));
    }
    line.iter()
        .zip(keep)
        .filter_map(|(&p, k)| k.then_some(p))
        .collect()
}

/// Distance in metres from `p` to the nearest point of the polyline `line` (infinite when the
/// line is empty).
pub fn distance_to_line_m(p: LatLon, line: &[LatLon]) -> f64 {
    match line {
        [] => f64::INFINITY,
        [only] => haversine_m(p, *only),
        _ => {
            let plane = LocalPlane::around(line);
            let at = plane.project(p);
            line.windows(2)
                .map(|w| segment_distance(at, plane.project(w[0]), plane.project(w[1])))
                .fold(f64::INFINITY, f64::min)
        }
    }
}

/// An equirectangular projection in metres, accurate enough over a city-sized trace.
struct LocalPlane {
    lat0_cos: f64,
}

impl LocalPlane {
    fn around(line: &[LatLon]) -> Self {
        let mean_lat = line.iter().map(|p| p.lat).sum::<f64>() / line.len() as f64;
        Self {
            lat0_cos: mean_lat.to_radians().cos(),
        }
    }

    fn project(&self, p: LatLon) -> (f64, f64) {
        (
            p.lon.to_radians() * self.lat0_cos * EARTH_RADIUS_M,
            p.lat.to_radians() * EARTH_RADIUS_M,
        )
    }
}

/// A stretch of the line between two kept vertices, ranked by how far its farthest interior
/// vertex strays from the straight segment between them.
struct Span {
    start: usize,
    end: usize,
    split: usize,
    distance: f64,
}

impl Span {
    fn farthest(xy: &[(f64, f64)], start: usize, end: usize) -> Option<Self> {
        (start + 1..end)
            .map(|i| (i, segment_distance(xy[i], xy[start], xy[end])))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(split, distance)| Self {
                start,
                end,
                split,
                distance,
            })
    }
}

impl PartialEq for Span {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Span {}

impl PartialOrd for Span {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Span {
    fn cmp(&self, other: &Self) -> Ordering {
        // Ties go to the earlier vertex so that thinning is deterministic.
        self.distance
            .total_cmp(&other.distance)
            .then_with(|| other.split.cmp(&self.split))
    }
}

/// Distance from `p` to the segment `a`–`b` (not the infinite line: traces loop back on
/// themselves, and a closed loop has a zero-length chord).
fn segment_distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
    ((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn haversine_matches_a_known_distance() {
        // One degree of latitude is about 111.2 km on the mean sphere.
        let d = haversine_m(LatLon::new(0.0, 0.0), LatLon::new(1.0, 0.0));
        assert!(close(d, 111_195.0, 5.0), "{d}");
        // Two points in central Munich, 741 m apart on the mean sphere.
        let d = haversine_m(
            LatLon::new(48.137_154, 11.575_490),
            LatLon::new(48.139_127, 11.565_951),
        );
        assert!(close(d, 741.0, 15.0), "{d}");
    }

    #[test]
    fn haversine_is_zero_for_the_same_point_and_symmetric() {
        let a = LatLon::new(53.41, -2.98);
        let b = LatLon::new(53.46, -2.89);
        assert_eq!(haversine_m(a, a), 0.0);
        assert!(close(haversine_m(a, b), haversine_m(b, a), 1e-6));
    }

    #[test]
    fn bearings_point_the_right_way() {
        let o = LatLon::new(45.0, 13.0);
        assert!(close(
            initial_bearing_deg(o, LatLon::new(45.1, 13.0)),
            0.0,
            1e-9
        ));
        assert!(close(
            initial_bearing_deg(o, LatLon::new(45.0, 13.1)),
            90.0,
            0.1
        ));
        assert!(close(
            initial_bearing_deg(o, LatLon::new(44.9, 13.0)),
            180.0,
            1e-9
        ));
        assert!(close(
            initial_bearing_deg(o, LatLon::new(45.0, 12.9)),
            270.0,
            0.1
        ));
    }

    #[test]
    fn bearings_stay_in_range() {
        let o = LatLon::new(48.1, 11.5);
        for i in 0..360 {
            let p = destination(o, f64::from(i), 500.0);
            let b = initial_bearing_deg(o, p);
            assert!((0.0..360.0).contains(&b), "{b}");
            let diff = (b - f64::from(i)).abs();
            assert!(!(0.01..=359.99).contains(&diff), "{i} -> {b}");
        }
        assert_eq!(normalise_deg(-1e-20), 0.0);
        assert_eq!(normalise_deg(360.0), 0.0);
        assert!(close(normalise_deg(-90.0), 270.0, 1e-12));
    }

    #[test]
    fn destination_travels_the_requested_distance() {
        let o = LatLon::new(53.4, -2.9);
        let p = destination(o, 37.0, 1234.5);
        assert!(close(haversine_m(o, p), 1234.5, 0.01));
    }

    #[test]
    fn thinning_keeps_short_lines_whole() {
        let line: Vec<_> = (0..10)
            .map(|i| LatLon::new(48.0, 11.0 + f64::from(i) * 0.001))
            .collect();
        assert_eq!(thin(&line, 200), line);
    }

    #[test]
    fn thinning_respects_the_budget_and_keeps_the_ends() {
        let line: Vec<_> = (0..1000)
            .map(|i| {
                let t = f64::from(i) / 100.0;
                LatLon::new(48.0 + t.sin() * 0.01, 11.0 + t * 0.001)
            })
            .collect();
        for budget in [2, 3, 50, 200, 999] {
            let thinned = thin(&line, budget);
            assert_eq!(thinned.len(), budget);
            assert_eq!(thinned.first(), line.first());
            assert_eq!(thinned.last(), line.last());
        }
        // A budget below two still keeps both ends.
        assert_eq!(thin(&line, 0).len(), 2);
    }

    #[test]
    fn thinning_keeps_the_corner_of_an_l() {
        let mut line: Vec<_> = (0..100)
            .map(|i| LatLon::new(48.0, 11.0 + f64::from(i) * 1e-4))
            .collect();
        line.extend((1..100).map(|i| LatLon::new(48.0 + f64::from(i) * 1e-4, 11.0099)));
        let thinned = thin(&line, 3);
        assert_eq!(thinned, vec![line[0], line[99], line[198]]);
    }

    #[test]
    fn thinning_handles_a_closed_loop() {
        let line: Vec<_> = (0..=400)
            .map(|i| destination(LatLon::new(45.0, 13.0), f64::from(i) * 0.9, 500.0))
            .collect();
        let thinned = thin(&line, 20);
        assert_eq!(thinned.len(), 20);
        assert_eq!(thinned.first(), line.first());
        assert_eq!(thinned.last(), line.last());
    }
}
