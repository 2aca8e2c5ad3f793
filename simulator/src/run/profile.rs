//! Speed profiles for synthesised vehicles: a recorded trip's path driven at a vehicle's own
//! pace, accelerating and braking smoothly, dwelling where the recording stood still, and never
//! faster than the road the recording was on (nor than motorway speed).

use rand::Rng;

use super::plan::{Plan, Sample};
use crate::geo::{self, LatLon};
use crate::tracks::Trip;

/// 130 km/h: no synthesised vehicle goes faster, whatever the recording did.
pub const ROAD_MAX_MPS: f64 = 36.1;
/// Even a crawl makes progress.
const MIN_LIMIT_MPS: f64 = 3.0;
/// Recorded steps faster than 150 km/h are GNSS glitches, not road speeds.
const GLITCH_MPS: f64 = 42.0;
/// Without usable recorded speeds: 50 km/h, a town's limit.
const DEFAULT_LIMIT_MPS: f64 = 13.9;
/// The road speed of a stretch is the fastest recorded step within this distance.
const STRETCH_M: f64 = 200.0;
/// The path is cut into pieces at most this long, so that speed changes smoothly.
const PIECE_M: f64 = 10.0;
/// A recorded step this short is standing still.
const STANDING_M: f64 = 3.0;
/// Standing shorter than this (a hesitation) is not a stop.
const MIN_STOP_S: f64 = 5.0;
const MAX_STOP_S: f64 = 120.0;

/// How one synthesised vehicle drives.
#[derive(Debug, Clone, Copy)]
pub struct Driving {
    /// Share of the road speed this driver cruises at.
    pub cruise: f64,
    /// m/s²
    pub accel: f64,
    pub brake: f64,
    /// Seconds between fixes.
    pub fix_every: f64,
}

impl Driving {
    /// A driver of its own: cruising at 85–105 % of the recorded road speed, gentle or brisk.
    pub fn random<R: Rng>(trip: &Trip, rng: &mut R) -> Self {
        Self {
            cruise: rng.gen_range(0.85..1.05),
            accel: rng.gen_range(0.8..1.5),
            brake: rng.gen_range(1.2..2.0),
            fix_every: median_interval(trip).clamp(1.0, 10.0),
        }
    }
}

fn median_interval(trip: &Trip) -> f64 {
    let mut gaps: Vec<f64> = trip
        .fixes
        .windows(2)
        .map(|w| (w[1].at - w[0].at).num_milliseconds() as f64 / 1000.0)
        .collect();
    if gaps.is_empty() {
        return 1.0;
    }
    gaps.sort_by(f64::total_cmp);
    gaps[gaps.len() / 2]
}

/// A point of the cut-up path.
#[derive(Debug, Clone, Copy)]
struct Node {
    s: f64,
    point: LatLon,
    altitude: Option<f64>,
    limit: f64,
    /// Seconds to stand here (0: drive through).
    dwell: f64,
    v: f64,
}

/// The speed profile of a trip: where the vehicle is, and how fast it goes, at every moment.
#[derive(Debug, Clone)]
pub struct Profile {
    nodes: Vec<Node>,
    accel: f64,
}

impl Profile {
    pub fn new<R: Rng>(trip: &Trip, driving: &Driving, rng: &mut R) -> Self {
        let mut nodes = path_nodes(trip, driving, rng);
        let last = nodes.len() - 1;
        nodes[0].v = 0.0;
        nodes[last].v = 0.0;
        // Forward: never accelerate harder than `accel`; backward: never brake harder than
        // `brake`. Stops and the ends are at rest.
        for i in 1..nodes.len() {
            let ds = nodes[i].s - nodes[i - 1].s;
            let reachable = (nodes[i - 1].v.powi(2) + 2.0 * driving.accel * ds).sqrt();
            nodes[i].v = if nodes[i].dwell > 0.0 || i == last {
                0.0
            } else {
                nodes[i].limit.min(reachable)
            };
        }
        for i in (0..last).rev() {
            let ds = nodes[i + 1].s - nodes[i].s;
            let stoppable = (nodes[i + 1].v.powi(2) + 2.0 * driving.brake * ds).sqrt();
            nodes[i].v = nodes[i].v.min(stoppable);
        }
        Self {
            nodes,
            accel: driving.accel,
        }
    }

    /// Fixes every `fix_every` seconds along the profile, and one at the destination.
    pub fn plan(&self, fix_every: f64) -> Plan {
        let mut samples = Vec::new();
        let mut t = 0.0;
        let mut next_fix = 0.0;
        for pair in self.nodes.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            // Standing at `a`.
            let depart = t + a.dwell;
            while next_fix < depart {
                samples.push(Sample::at(next_fix, a.point, a.altitude));
                next_fix += fix_every;
            }
            t = depart;
            let ds = b.s - a.s;
            let dt = piece_time(a.v, b.v, ds, self.accel);
            let arrive = t + dt;
            let acc = (b.v.powi(2) - a.v.powi(2)) / (2.0 * ds);
            while next_fix < arrive {
                let tau = next_fix - t;
                let along = if a.v + b.v > 1e-9 {
                    (a.v * tau + 0.5 * acc * tau * tau).clamp(0.0, ds)
                } else {
                    ds * tau / dt
                };
                let f = along / ds;
                let point = lerp(a.point, b.point, f);
                let altitude = match (a.altitude, b.altitude) {
                    (Some(x), Some(y)) => Some(x + (y - x) * f),
                    _ => a.altitude.or(b.altitude),
                };
                samples.push(Sample::at(next_fix, point, altitude));
                next_fix += fix_every;
            }
            t = arrive;
        }
        let end = self.nodes[self.nodes.len() - 1];
        if samples.last().is_none_or(|s| s.t < t) {
            samples.push(Sample::at(t, end.point, end.altitude));
        }
        let mut plan = Plan {
            samples,
            marks: Vec::new(),
        };
        plan.derive_motion();
        plan
    }
}

/// Time over a piece of `ds` metres from speed `v0` to `v1` at constant acceleration.
fn piece_time(v0: f64, v1: f64, ds: f64, accel: f64) -> f64 {
    if v0 + v1 > 1e-9 {
        2.0 * ds / (v0 + v1)
    } else {
        // Between two stops closer than the profile resolves: speed up halfway, brake halfway.
        2.0 * (ds / accel).sqrt()
    }
}

fn lerp(a: LatLon, b: LatLon, f: f64) -> LatLon {
    LatLon::new(a.lat + (b.lat - a.lat) * f, a.lon + (b.lon - a.lon) * f)
}

/// The recorded path cut into short pieces, each end with its speed limit and stop time.
fn path_nodes<R: Rng>(trip: &Trip, driving: &Driving, rng: &mut R) -> Vec<Node> {
    // Vertices where the vehicle moved, with the time it stood at each and the recorded speed
    // of the step that reached it.
    struct Vertex {
        point: LatLon,
        altitude: Option<f64>,
        s: f64,
        standing: f64,
        speed: Option<f64>,
    }
    let first = trip.first();
    let mut vertices = vec![Vertex {
        point: first.point,
        altitude: first.altitude,
        s: 0.0,
        standing: 0.0,
        speed: None,
    }];
    for pair in trip.fixes.windows(2) {
        let dt = (pair[1].at - pair[0].at).num_milliseconds() as f64 / 1000.0;
        let last = vertices.last_mut().expect("one vertex at least");
        let d = geo::haversine_m(last.point, pair[1].point);
        if d < STANDING_M {
            last.standing += dt;
            continue;
        }
        let s = last.s + d;
        let speed = pair[1].speed.filter(|&v| v <= GLITCH_MPS);
        vertices.push(Vertex {
            point: pair[1].point,
            altitude: pair[1].altitude,
            s,
            standing: 0.0,
            speed,
        });
    }
    if vertices.len() < 2 {
        // A trip that never moved: stand at its start.
        let p = first.point;
        let node = |s| Node {
            s,
            point: p,
            altitude: first.altitude,
            limit: MIN_LIMIT_MPS,
            dwell: 0.0,
            v: 0.0,
        };
        return vec![node(0.0), node(1.0)];
    }

    // The road speed around each vertex: the fastest recorded step within STRETCH_M.
    let limit_at = |s: f64| -> f64 {
        let road = vertices
            .iter()
            .filter(|v| (v.s - s).abs() <= STRETCH_M)
            .filter_map(|v| v.speed)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
            .unwrap_or(DEFAULT_LIMIT_MPS);
        (road * driving.cruise).clamp(MIN_LIMIT_MPS, ROAD_MAX_MPS)
    };

    let last = vertices.len() - 1;
    let mut nodes = Vec::new();
    for (i, pair) in vertices.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        let dwell = if i > 0 && a.standing >= MIN_STOP_S {
            (a.standing * rng.gen_range(0.6..1.4)).min(MAX_STOP_S)
        } else {
            0.0
        };
        let pieces = ((b.s - a.s) / PIECE_M).ceil().max(1.0) as usize;
        for k in 0..pieces {
            let f = k as f64 / pieces as f64;
            let s = a.s + (b.s - a.s) * f;
            nodes.push(Node {
                s,
                point: lerp(a.point, b.point, f),
                altitude: match (a.altitude, b.altitude) {
                    (Some(x), Some(y)) => Some(x + (y - x) * f),
                    _ => a.altitude.or(b.altitude),
                },
                limit: limit_at(s),
                dwell: if k == 0 { dwell } else { 0.0 },
                v: 0.0,
            });
        }
    }
    let end = &vertices[last];
    nodes.push(Node {
        s: end.s,
        point: end.point,
        altitude: end.altitude,
        limit: limit_at(end.s),
        dwell: 0.0,
        v: 0.0,
    });
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracks;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn trips() -> Vec<Trip> {
        tracks::fleet()
            .unwrap()
            .into_iter()
            .flat_map(|v| v.trips)
            .collect()
    }

    #[test]
    fn profiles_respect_limits_and_comfortable_acceleration() {
        let mut rng = StdRng::seed_from_u64(6);
        for trip in trips() {
            let driving = Driving::random(&trip, &mut rng);
            let profile = Profile::new(&trip, &driving, &mut rng);
            let nodes = &profile.nodes;
            assert_eq!(nodes[0].v, 0.0);
            assert_eq!(nodes[nodes.len() - 1].v, 0.0);
            for pair in nodes.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                assert!(a.v <= a.limit + 1e-9 && a.limit <= ROAD_MAX_MPS);
                let ds = b.s - a.s;
                assert!(ds > 0.0 && ds <= PIECE_M + 1e-6, "{ds}");
                let acc = (b.v.powi(2) - a.v.powi(2)) / (2.0 * ds);
                assert!(acc <= driving.accel + 1e-9, "{acc}");
                assert!(-acc <= driving.brake + 1e-9, "{acc}");
                if a.dwell > 0.0 {
                    assert_eq!(a.v, 0.0, "a stop is made at rest");
                }
            }
        }
    }

    #[test]
    fn synthesised_fixes_never_imply_more_than_road_speed() {
        let mut rng = StdRng::seed_from_u64(7);
        for trip in trips() {
            let driving = Driving::random(&trip, &mut rng);
            let plan = Profile::new(&trip, &driving, &mut rng).plan(driving.fix_every);
            assert!(plan.samples.len() >= 2);
            assert_eq!(plan.samples[0].point, trip.first().point);
            let end = plan.samples[plan.samples.len() - 1];
            // Fixes closer than STANDING_M to the last vertex are the vehicle standing there.
            let missed = geo::haversine_m(end.point, trip.last().point);
            assert!(missed < STANDING_M + 0.1, "{missed}");
            assert!(plan.samples.windows(2).all(|w| w[0].t < w[1].t));
            for s in &plan.samples[1..] {
                let v = s.speed.unwrap();
                assert!(v <= ROAD_MAX_MPS + 0.01, "{v} m/s");
            }
            // The trip takes a plausible time: no faster than the road allows.
            let length: f64 = trip
                .fixes
                .windows(2)
                .map(|w| geo::haversine_m(w[0].point, w[1].point))
                .sum();
            assert!(plan.duration() >= length / ROAD_MAX_MPS - 1.0);
        }
    }

    #[test]
    fn recorded_standstills_become_stops() {
        let mut rng = StdRng::seed_from_u64(8);
        let fleet = tracks::fleet().unwrap();
        let munich = &fleet.iter().find(|v| v.name == "Car Munich").unwrap().trips[0];
        let driving = Driving {
            cruise: 1.0,
            accel: 1.0,
            brake: 1.5,
            fix_every: 1.0,
        };
        let profile = Profile::new(munich, &driving, &mut rng);
        let stops = profile.nodes.iter().filter(|n| n.dwell > 0.0).count();
        assert!(stops > 0, "the Munich drive waits at lights");
        let plan = profile.plan(1.0);
        let standing = plan
            .samples
            .iter()
            .filter(|s| s.speed.is_some_and(|v| v < 0.1))
            .count();
        assert!(standing >= stops * MIN_STOP_S as usize / 2, "{standing}");
        // Recorded at 1 Hz, synthesised at the recording's own rate.
        assert_eq!(Driving::random(munich, &mut rng).fix_every, 1.0);
    }

    #[test]
    fn faster_drivers_arrive_sooner() {
        let fleet = tracks::fleet().unwrap();
        let trip = &fleet[0].trips[0];
        let pace = |cruise| {
            let d = Driving {
                cruise,
                accel: 1.0,
                brake: 1.5,
                fix_every: 5.0,
            };
            Profile::new(trip, &d, &mut StdRng::seed_from_u64(1))
                .plan(5.0)
                .duration()
        };
        assert!(pace(1.05) < pace(0.85));
    }
}
