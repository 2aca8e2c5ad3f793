//! Incidents on purpose, for the alerts demo: a vehicle leaves its planned route and rejoins
//! it, speeds, goes silent (a phone switched off: no backlog afterwards), or stands still
//! mid-trip. Each rewrites a stretch of a trip's plan.
//!
//! Each is shaped to raise the alert a dispatcher would expect under the server's default alert
//! settings (`GET /api/v1/settings`: `off_route_m` 200 for `off_route_s` 60, `speed_limit_mps`
//! 25 for `overspeed_min_s` 20, `stopped_min` 10 within `stopped_radius_m` 50, `silent_min` 10,
//! judged by a clock every 15 s), with fixes the server keeps: none implies more than its jump
//! filter's 100 m/s (`max_speed_mps`) over the one before.
//!
//! - **off-route** (default 400 m for 3 min): every fix of the stretch moves by one and the
//!   same vector, its share easing 0 → 1 over the first quarter and back over the last, so
//!   turns and stops on the way do not swing the detour about. Its direction is square to the
//!   stretch's overall bearing (first to last point) on the side that keeps the whole middle
//!   clear of the route: right first, then left, then further round in 15° steps, and further
//!   out (up to twice the offset) where the route winds back within reach. Fixes move with the
//!   route plus at most 1.5 × offset ÷ (len / 4) sideways (13 m/s; 27 m/s at twice the offset),
//!   and come at least every 5 s (sparse bus recordings are filled in along the line between
//!   fixes). It is more than half the offset (200 m) from the route for the middle half and
//!   half of each ramp: 2¼ min, over twice `off_route_s` (at least 125 s on the bundled
//!   traces, starting anywhere).
//! - **speeding** (default 1.5 × the stretch's speed, at least 110 km/h, for 2 min): one
//!   steady pace along the path, a fix a second, through the stretch's stops (a driver in a
//!   hurry), so every fix reports more than 90 km/h (`speed_limit_mps` 25) for the whole
//!   2 min, six times `overspeed_min_s`; never above 216 km/h, under the jump filter.
//! - **silent** (default 12 min): nothing recorded, then fixes again where the vehicle has got
//!   to at its own pace: two minutes beyond `silent_min`, room for the clock's tick.
//! - **stopped** (default 12 min): fixes on one spot (GNSS drift aside) for two minutes beyond
//!   `stopped_min`.
//!
//! **Speed-up.** A plan's times are trace seconds, played `--speedup` times faster; the phone
//! stamps `recorded_at` with the wall clock, and the rules run on `recorded_at`. A stretch
//! played faster than real time looks, to the server, like driving `speedup` times faster (a
//! detour at 10× would be jumps, a 10-minute silence would skip 100 minutes of road). So an
//! incident is played at real time whatever the speed-up ([`Plan::real_time`]): its lengths
//! are real seconds, the fixes in it are stamped one real second apart for one second of
//! driving, and it consumes only its own length of the trip. Outside incidents the speed-up
//! applies as before.

use std::fmt;

use clap::ValueEnum;

use super::plan::{Plan, Sample};
use crate::geo::{self, LatLon};

/// Never faster than this while speeding: well under the server's jump filter (100 m/s).
pub const MAX_SPEEDING_MPS: f64 = 60.0;
/// A step slower than this is standing.
const MOVING_MPS: f64 = 1.0;
/// A speeding vehicle records a fix this often, in seconds.
const SPEEDING_FIX_EVERY: f64 = 1.0;
/// Off route, the phone records at least this often, in seconds.
const DETOUR_FIX_EVERY: f64 = 5.0;
/// How far out an off-route detour may go, in multiples of the offset, where the route winds
/// back within reach of a shorter one.
const REACH: [f64; 4] = [1.0, 1.25, 1.5, 2.0];
/// A detour is taken once its whole middle is this share of the offset clear of the route;
/// otherwise the clearest.
const CLEAR_SHARE: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Kind {
    /// Leave the planned route by `--off-route-m` for `--off-route-minutes`, then rejoin.
    OffRoute,
    /// Drive faster than the stretch allows for `--speeding-minutes`.
    Speeding,
    /// Send nothing for `--silent-minutes`, then carry on without a backlog.
    Silent,
    /// Stand still for `--stopped-minutes` mid-trip.
    Stopped,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::OffRoute, Kind::Speeding, Kind::Silent, Kind::Stopped];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::OffRoute => "off-route",
            Kind::Speeding => "speeding",
            Kind::Silent => "silent",
            Kind::Stopped => "stopped",
        })
    }
}

/// How fast a speeding vehicle goes: `factor` times the stretch's speed, but at least
/// `at_least_mps`, and never above [`MAX_SPEEDING_MPS`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub factor: f64,
    pub at_least_mps: f64,
}

impl Pace {
    fn speed(self, stretch_mps: f64) -> f64 {
        (stretch_mps * self.factor)
            .max(self.at_least_mps)
            .min(MAX_SPEEDING_MPS)
    }
}

/// One incident, with `start` in trace seconds of the trip and `len` in real seconds (what the
/// server sees, whatever the speed-up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Incident {
    OffRoute {
        start: f64,
        len: f64,
        offset_m: f64,
    },
    Speeding {
        start: f64,
        len: f64,
        pace: Pace,
    },
    Silent {
        start: f64,
        len: f64,
    },
    Stopped {
        start: f64,
        len: f64,
        fix_every: f64,
    },
}

impl Incident {
    /// Trace seconds of the original plan the incident uses up (a stop inserts time instead;
    /// speeding covers more ground, and ends early where the trip does).
    pub fn consumes(kind: Kind, len: f64) -> f64 {
        match kind {
            Kind::Stopped => 0.0,
            _ => len,
        }
    }

    /// Rewrites `plan`, recomputes speeds and headings, marks the start and the end for the
    /// log, and plays the incident's stretch at real time at any `speedup`.
    pub fn apply(self, plan: &mut Plan, speedup: f64) {
        let minutes = |len: f64| len / 60.0;
        let mut speedometer = None;
        let (from, to) = match self {
            Incident::OffRoute {
                start,
                len,
                offset_m,
            } => {
                off_route(&mut plan.samples, start, len, offset_m);
                plan.mark_incident(
                    start,
                    Kind::OffRoute,
                    format!(
                        "incident: off route, up to {offset_m:.0} m from the planned route for {:.1} min",
                        minutes(len)
                    ),
                );
                plan.mark(
                    start + len,
                    "incident over: back on the planned route".into(),
                );
                (start, start + len)
            }
            Incident::Speeding { start, len, pace } => {
                let (end, v) = speeding(&mut plan.samples, start, len, pace);
                speedometer = Some((start, end, v));
                plan.mark_incident(
                    start,
                    Kind::Speeding,
                    format!(
                        "incident: speeding, {}× the stretch's speed and at least {:.0} km/h, for {:.1} min",
                        pace.factor,
                        pace.at_least_mps * 3.6,
                        minutes(end - start)
                    ),
                );
                plan.mark(end, "incident over: back to normal speed".into());
                (start, end)
            }
            Incident::Silent { start, len } => {
                silent(&mut plan.samples, start, len);
                plan.mark_incident(
                    start,
                    Kind::Silent,
                    format!(
                        "incident: silent for {:.1} min (phone off: nothing recorded, no backlog)",
                        minutes(len)
                    ),
                );
                plan.mark(start + len, "incident over: reporting again".into());
                (start, start + len)
            }
            Incident::Stopped {
                start,
                len,
                fix_every,
            } => {
                let at = stopped(&mut plan.samples, start, len, fix_every);
                plan.mark_incident(
                    at,
                    Kind::Stopped,
                    format!("incident: stopped mid-trip for {:.1} min", minutes(len)),
                );
                plan.mark(at + len, "incident over: driving on".into());
                (at, at + len)
            }
        };
        plan.derive_motion();
        if let Some((from, to, v)) = speedometer {
            // The phone reports the speed along the road, which a step's chord across a bend
            // understates.
            for s in plan.samples.iter_mut().filter(|s| s.t > from && s.t <= to) {
                s.speed = Some(v);
            }
        }
        plan.real_time(from, to, speedup);
    }
}

/// Smoothly 0 → 1 → 0 over `[start, start + len]`: a quarter of the time to leave, half away,
/// a quarter to rejoin.
fn detour_share(t: f64, start: f64, len: f64) -> f64 {
    if len <= 0.0 || t <= start || t >= start + len {
        return 0.0;
    }
    let ramp = len / 4.0;
    let x = ((t - start).min(start + len - t) / ramp).min(1.0);
    // Smoothstep: no corner where the vehicle turns off.
    x * x * (3.0 - 2.0 * x)
}

/// Moves the stretch by one vector (see the module's notes), scaled by [`detour_share`].
fn off_route(samples: &mut Vec<Sample>, start: f64, len: f64, offset_m: f64) {
    densify(samples, start, start + len, DETOUR_FIX_EVERY);
    let route: Vec<LatLon> = samples.iter().map(|s| s.point).collect();
    let share: Vec<f64> = samples
        .iter()
        .map(|s| detour_share(s.t, start, len))
        .collect();
    let (Some(first), Some(last)) = (
        share.iter().position(|&x| x > 0.0),
        share.iter().rposition(|&x| x > 0.0),
    ) else {
        return;
    };
    let a = route[first.saturating_sub(1)];
    let b = route[(last + 1).min(route.len() - 1)];
    // A stretch that ends where it began has no direction of its own: north, then.
    let overall = if geo::haversine_m(a, b) > 1.0 {
        geo::initial_bearing_deg(a, b)
    } else {
        0.0
    };
    let middle: Vec<LatLon> = (first..=last)
        .filter(|&i| share[i] >= 1.0)
        .map(|i| route[i])
        .collect();
    let clearance = |bearing: f64, distance: f64| {
        middle
            .iter()
            .map(|&p| geo::distance_to_line_m(geo::destination(p, bearing, distance), &route))
            .fold(f64::INFINITY, f64::min)
    };
    // Right of the overall bearing first, then left, then ever further round; the offset
    // itself first, then further out where the route winds back within reach.
    let sides = (0..=6).flat_map(|k| {
        let turn = 15.0 * f64::from(k);
        [90.0 - turn, 270.0 + turn, 90.0 + turn, 270.0 - turn]
    });
    let mut best = (overall + 90.0, offset_m, f64::NEG_INFINITY);
    'search: for stretch in REACH {
        for side in sides.clone() {
            let bearing = geo::normalise_deg(overall + side);
            let clear = clearance(bearing, offset_m * stretch);
            if clear > best.2 {
                best = (bearing, offset_m * stretch, clear);
            }
            if clear >= CLEAR_SHARE * offset_m {
                break 'search;
            }
        }
    }
    let (bearing, distance, _) = best;
    for (s, share) in samples.iter_mut().zip(share) {
        if share > 0.0 {
            s.point = geo::destination(s.point, bearing, distance * share);
        }
    }
}

/// Adds samples between `from` and `to` so that none is more than `every` seconds from the
/// next, on the straight line between recorded fixes: a phone off route records often enough
/// for the rule to see it (sparse bus recordings have fixes 20–60 s apart).
fn densify(samples: &mut Vec<Sample>, from: f64, to: f64, every: f64) {
    let mut out = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        if let Some(next) = samples.get(i + 1) {
            out.push(*s);
            let gap = next.t - s.t;
            if next.t <= from || s.t >= to || gap <= every {
                continue;
            }
            let pieces = (gap / every).ceil();
            for k in 1..pieces as usize {
                let f = k as f64 / pieces;
                out.push(Sample {
                    t: s.t + gap * f,
                    point: LatLon::new(
                        s.point.lat + (next.point.lat - s.point.lat) * f,
                        s.point.lon + (next.point.lon - s.point.lon) * f,
                    ),
                    ..*s
                });
            }
        } else {
            out.push(*s);
        }
    }
    *samples = out;
}

/// From the first sample at or after `start`, drives on along the path at one steady pace for
/// `len` seconds, a fix every [`SPEEDING_FIX_EVERY`], through the stretch's stops; then carries
/// on as recorded from where it got to, everything after coming that much sooner. Returns when
/// the speeding ends (sooner than `start + len` if the trip runs out first) and its speed.
fn speeding(samples: &mut Vec<Sample>, start: f64, len: f64, pace: Pace) -> (f64, f64) {
    let Some(i0) = samples.iter().position(|s| s.t >= start) else {
        return (start, 0.0);
    };
    let t0 = samples[i0].t;
    let path = &samples[i0..];
    let mut along = Vec::with_capacity(path.len());
    along.push(0.0);
    let (mut moving_m, mut moving_s) = (0.0, 0.0);
    for w in path.windows(2) {
        let d = geo::haversine_m(w[0].point, w[1].point);
        let dt = w[1].t - w[0].t;
        along.push(along.last().copied().unwrap_or(0.0) + d);
        if w[1].t <= t0 + len && dt > 0.0 && d / dt >= MOVING_MPS {
            moving_m += d;
            moving_s += dt;
        }
    }
    let stretch_mps = if moving_s > 0.0 {
        moving_m / moving_s
    } else {
        0.0
    };
    let v = pace.speed(stretch_mps);
    let total = along.last().copied().unwrap_or(0.0);

    // Fixes at one-second steps along the path, until `len` has passed or the path ends.
    let mut driven = Vec::new();
    let mut segment = 0;
    let mut end = (t0, 0.0);
    let steps = (len / SPEEDING_FIX_EVERY).floor() as usize;
    for k in 1..=steps {
        let dt = k as f64 * SPEEDING_FIX_EVERY;
        let d = (v * dt).min(total);
        while segment + 1 < along.len() - 1 && along[segment + 1] <= d {
            segment += 1;
        }
        let (a, b) = (path[segment], path[(segment + 1).min(path.len() - 1)]);
        let piece = along[(segment + 1).min(along.len() - 1)] - along[segment];
        let frac = if piece > 0.0 {
            ((d - along[segment]) / piece).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let point = LatLon::new(
            a.point.lat + (b.point.lat - a.point.lat) * frac,
            a.point.lon + (b.point.lon - a.point.lon) * frac,
        );
        let t = if d < v * dt {
            // The trip ran out: the last leg is shorter.
            t0 + (k as f64 - 1.0) * SPEEDING_FIX_EVERY + (d - end.1) / v
        } else {
            t0 + dt
        };
        if d <= end.1 {
            break;
        }
        driven.push(Sample::at(t, point, a.altitude));
        end = (t, d);
    }
    // Where the original got to the same point, and what comes after it.
    let (t_end, reached) = end;
    let rest = along.partition_point(|&x| x <= reached + 1e-9);
    let original_at = if rest == 0 || rest >= path.len() {
        path[path.len() - 1].t
    } else {
        let (a, b) = (path[rest - 1], path[rest]);
        let piece = along[rest] - along[rest - 1];
        let frac = if piece > 0.0 {
            (reached - along[rest - 1]) / piece
        } else {
            0.0
        };
        a.t + (b.t - a.t) * frac
    };
    let shift = t_end - original_at;
    let tail: Vec<Sample> = path[rest.max(1)..]
        .iter()
        .map(|s| Sample {
            t: s.t + shift,
            ..*s
        })
        .filter(|s| s.t > t_end)
        .collect();
    samples.truncate(i0 + 1);
    samples.extend(driven);
    samples.extend(tail);
    (t_end, v)
}

fn silent(samples: &mut Vec<Sample>, start: f64, len: f64) {
    samples.retain(|s| !(s.t > start && s.t <= start + len));
}

/// Stands at the first fix from `start` for `len` seconds, a fix every `fix_every`; returns
/// when the stop began.
fn stopped(samples: &mut Vec<Sample>, start: f64, len: f64, fix_every: f64) -> f64 {
    let Some(i) = samples.iter().position(|s| s.t >= start) else {
        return start;
    };
    let here = samples[i];
    for s in &mut samples[i + 1..] {
        s.t += len;
    }
    let step = fix_every.max(1.0);
    let standing = (1..)
        .map(|k| f64::from(k) * step)
        .take_while(|&dt| dt < len)
        .map(|dt| Sample {
            t: here.t + dt,
            ..here
        });
    let standing: Vec<Sample> = standing.collect();
    samples.splice(i + 1..i + 1, standing);
    here.t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::plan::tests::line;

    /// The server's default alert settings (`AlertSettings::default()` on its side).
    const OFF_ROUTE_M: f64 = 200.0;
    const OFF_ROUTE_S: f64 = 60.0;
    const SPEED_LIMIT_MPS: f64 = 25.0;
    const OVERSPEED_MIN_S: f64 = 20.0;
    /// The fastest a plausible fix may look, well under the server's jump filter (100 m/s).
    const PLAUSIBLE_MPS: f64 = 50.0;

    /// Wall-clock seconds of each fix at `speedup`, as `recorded_at` will be.
    fn wall(plan: &Plan, speedup: f64) -> Vec<f64> {
        plan.samples.iter().map(|s| s.t / speedup).collect()
    }

    /// The fastest step between consecutive fixes, in metres per wall-clock second.
    fn fastest_step(plan: &Plan, speedup: f64) -> f64 {
        let at = wall(plan, speedup);
        plan.samples
            .windows(2)
            .zip(at.windows(2))
            .map(|(s, t)| geo::haversine_m(s[0].point, s[1].point) / (t[1] - t[0]))
            .fold(0.0, f64::max)
    }

    /// The longest wall-clock time over which consecutive fixes all pass `holds`.
    fn longest(plan: &Plan, speedup: f64, holds: impl Fn(&Sample) -> bool) -> f64 {
        let at = wall(plan, speedup);
        let (mut best, mut since) = (0.0_f64, None);
        for (s, t) in plan.samples.iter().zip(at) {
            if holds(s) {
                let from = *since.get_or_insert(t);
                best = best.max(t - from);
            } else {
                since = None;
            }
        }
        best
    }

    /// 10 m/s east for 60 s, standing 30 s at the corner, 10 m/s north for 60 s, standing 20 s,
    /// then east again for 400 s: the turns and standstills that swung the old detour about.
    fn winding() -> Plan {
        let mut samples = Vec::new();
        let mut p = LatLon::new(48.0, 11.0);
        let legs = [
            (90.0, 60, 10.0),
            (0.0, 30, 0.0),
            (0.0, 60, 10.0),
            (0.0, 20, 0.0),
        ];
        let mut t = 0.0;
        samples.push(Sample::at(t, p, None));
        for (bearing, seconds, speed) in legs.into_iter().chain([(90.0, 400, 10.0)]) {
            for _ in 0..seconds {
                t += 1.0;
                p = geo::destination(p, bearing, speed);
                samples.push(Sample::at(t, p, None));
            }
        }
        let mut plan = Plan {
            samples,
            marks: Vec::new(),
        };
        plan.derive_motion();
        plan
    }

    fn detour(route: &Plan, start: f64, len: f64, offset_m: f64, speedup: f64) -> Plan {
        let mut plan = route.clone();
        Incident::OffRoute {
            start,
            len,
            offset_m,
        }
        .apply(&mut plan, speedup);
        plan
    }

    #[test]
    fn an_off_route_detour_stays_away_long_enough_at_a_drivable_pace() {
        let route = winding();
        let points: Vec<LatLon> = route.samples.iter().map(|s| s.point).collect();
        let off = |s: &Sample| geo::distance_to_line_m(s.point, &points) > OFF_ROUTE_M;
        for speedup in [1.0, 10.0] {
            // The defaults: 400 m for 3 minutes, starting before the first corner.
            let plan = detour(&route, 30.0, 180.0, 400.0, speedup);
            assert_eq!(plan.samples.len(), route.samples.len());
            let fastest = fastest_step(&plan, speedup);
            if speedup == 1.0 {
                // 10 m/s along the road, plus at most 1.5 × twice the offset over a ramp of
                // 45 s sideways: no swing at the corner or the standstills.
                assert!(fastest < 10.0 + 1.5 * 800.0 / 45.0, "{fastest} m/s");
            }
            // Away for well over `off_route_s`, in the time the server sees.
            let away = longest(&plan, speedup, off);
            assert!(away >= 2.0 * OFF_ROUTE_S, "{away} s at {speedup}x");
            assert!(away <= 180.0, "{away} s at {speedup}x");
            // The detour itself is driven in real time, whatever the speed-up.
            let incident: Vec<&Sample> = plan
                .samples
                .iter()
                .filter(|s| s.t > 30.0 && s.t <= 30.0 + 180.0 * speedup)
                .collect();
            assert_eq!(incident.len(), 180, "one fix a real second");
            let steps = incident
                .windows(2)
                .map(|w| geo::haversine_m(w[0].point, w[1].point) / ((w[1].t - w[0].t) / speedup));
            assert!(steps.fold(0.0, f64::max) < PLAUSIBLE_MPS);
            // Back on the route where it began and where it ended.
            for s in plan.samples.iter().filter(|s| !incident.contains(s)) {
                assert!(!off(s), "on the route at {}", s.t);
            }
        }
        assert_eq!(route.samples.len(), 571);
    }

    #[test]
    fn on_every_bundled_trace_a_default_detour_is_off_long_enough_and_never_a_jump() {
        // Starting every five minutes along each vehicle's first trip, measured against the
        // planned route the shipment gets.
        let (mut tried, mut least_away, mut most_extra, mut fastest) =
            (0, f64::INFINITY, 0.0_f64, 0.0_f64);
        for vehicle in crate::tracks::fleet().unwrap() {
            let trip = &vehicle.trips[0];
            let route = trip.route(super::super::vehicle::ROUTE_POINTS);
            let plan = Plan::recorded(trip);
            let mut start = 60.0;
            while start + 180.0 < plan.duration() * 0.95 {
                let detoured = detour(&plan, start, 180.0, 400.0, 1.0);
                let away = longest(&detoured, 1.0, |s| {
                    geo::distance_to_line_m(s.point, &route) > OFF_ROUTE_M
                });
                least_away = least_away.min(away);
                // Each step at most as fast as the recorded one plus the sideways pace of the
                // ramp (1.5 × twice 400 m over 45 s at the most): the trace's own glitches
                // stay what they were, and nothing else looks like one.
                let mut original = plan.samples.clone();
                densify(&mut original, start, start + 180.0, DETOUR_FIX_EVERY);
                assert_eq!(original.len(), detoured.samples.len());
                for (d, o) in detoured.samples.windows(2).zip(original.windows(2)) {
                    let dt = d[1].t - d[0].t;
                    let recorded = geo::haversine_m(o[0].point, o[1].point) / dt;
                    let driven = geo::haversine_m(d[0].point, d[1].point) / dt;
                    most_extra = most_extra.max(driven - recorded);
                    if recorded < 40.0 {
                        fastest = fastest.max(driven);
                    }
                }
                tried += 1;
                start += 300.0;
            }
        }
        assert!(tried >= 20, "{tried} detours");
        assert!(least_away >= 2.0 * OFF_ROUTE_S, "{least_away} s");
        assert!(most_extra <= 1.5 * 800.0 / 45.0 + 0.1, "{most_extra} m/s");
        assert!(fastest < PLAUSIBLE_MPS, "{fastest} m/s");
    }

    #[test]
    fn an_off_route_detour_on_an_out_and_back_stretch_goes_where_the_route_is_not() {
        // 10 m/s east for 150 s, then back west: right or left of "nowhere" is the road.
        let mut plan = line(151, 1.0, 10.0);
        let back: Vec<Sample> = plan.samples[..150]
            .iter()
            .rev()
            .enumerate()
            .map(|(k, s)| Sample::at(151.0 + k as f64, s.point, None))
            .collect();
        plan.samples.extend(back);
        plan.derive_motion();
        let points: Vec<LatLon> = plan.samples.iter().map(|s| s.point).collect();
        let detoured = detour(&plan, 60.0, 180.0, 400.0, 1.0);
        let farthest = detoured
            .samples
            .iter()
            .map(|s| geo::distance_to_line_m(s.point, &points))
            .fold(0.0, f64::max);
        assert!(farthest > 0.9 * 400.0, "{farthest} m");
        let away = longest(&detoured, 1.0, |s| {
            geo::distance_to_line_m(s.point, &points) > OFF_ROUTE_M
        });
        assert!(away >= 2.0 * OFF_ROUTE_S, "{away} s");
        assert!(fastest_step(&detoured, 1.0) < PLAUSIBLE_MPS);
        assert_eq!(detoured.marks.len(), 2);
        assert_eq!(detoured.marks[0].starts, Some(Kind::OffRoute));
        assert_eq!(detoured.marks[1].starts, None);
    }

    #[test]
    fn speeding_runs_above_the_limit_throughout_even_through_stops() {
        // The defaults: 1.5 × the stretch's speed, at least 110 km/h, for two minutes; the
        // stretch a 10 m/s road with a standstill.
        let route = winding();
        let pace = Pace {
            factor: 1.5,
            at_least_mps: 110.0 / 3.6,
        };
        for speedup in [1.0, 10.0] {
            let mut plan = route.clone();
            Incident::Speeding {
                start: 10.0,
                len: 120.0,
                pace,
            }
            .apply(&mut plan, speedup);
            let over = longest(&plan, speedup, |s| {
                s.speed.is_some_and(|v| v > SPEED_LIMIT_MPS)
            });
            // The whole two minutes, six times `overspeed_min_s`.
            assert!(over >= 119.0, "{over} s");
            assert!(over >= 4.0 * OVERSPEED_MIN_S);
            let fast: Vec<&Sample> = plan
                .samples
                .iter()
                .filter(|s| s.speed.is_some_and(|v| v > SPEED_LIMIT_MPS))
                .collect();
            assert_eq!(fast.len(), 120, "a fix a real second");
            assert!(fast
                .iter()
                .all(|s| (s.speed.unwrap() - 110.0 / 3.6).abs() < 1e-6));
            // What the server sees between fixes is the speed they report.
            let during = fastest_step(
                &Plan {
                    samples: fast.iter().map(|s| **s).collect(),
                    marks: Vec::new(),
                },
                speedup,
            );
            assert!((during - 110.0 / 3.6).abs() < 1e-6, "{during}");
            // 3.7 km in two minutes instead of six and a half: the rest comes sooner.
            let saved = route.duration() - 10.0 - (plan.duration() - 10.0 - 120.0 * speedup);
            assert!(saved > 100.0, "{saved}");
            assert!(plan.samples.windows(2).all(|w| w[0].t < w[1].t));
        }

        let mut plan = line(400, 1.0, 30.0);
        Incident::Speeding {
            start: 0.0,
            len: 60.0,
            pace: Pace {
                factor: 5.0,
                at_least_mps: 0.0,
            },
        }
        .apply(&mut plan, 1.0);
        assert!(plan.samples[1..61]
            .iter()
            .all(|s| (s.speed.unwrap() - MAX_SPEEDING_MPS).abs() < 1e-6));
    }

    #[test]
    fn speeding_that_reaches_the_end_of_the_trip_ends_there() {
        let mut plan = line(50, 1.0, 10.0);
        let end = plan.samples[49].point;
        Incident::Speeding {
            start: 0.0,
            len: 600.0,
            pace: Pace {
                factor: 2.0,
                at_least_mps: 0.0,
            },
        }
        .apply(&mut plan, 1.0);
        assert_eq!(plan.samples.len(), 26);
        assert!(geo::haversine_m(plan.samples[25].point, end) < 1e-6);
        assert!((plan.duration() - 24.5).abs() < 1e-6, "{}", plan.duration());
    }

    #[test]
    fn silence_drops_the_fixes_for_its_real_length_and_resumes_at_driving_pace() {
        for speedup in [1.0, 10.0] {
            let mut plan = line(100, 1.0, 10.0);
            Incident::Silent {
                start: 20.0,
                len: 30.0,
            }
            .apply(&mut plan, speedup);
            assert_eq!(plan.samples.len(), 70);
            assert!(plan.samples.iter().all(|s| !s.offline), "no backlog");
            let at = wall(&plan, speedup);
            let (gap, i) = at
                .windows(2)
                .enumerate()
                .map(|(i, w)| (w[1] - w[0], i))
                .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
            assert!((30.0..=31.0).contains(&gap), "{gap} s at {speedup}x");
            let jumped = geo::haversine_m(plan.samples[i].point, plan.samples[i + 1].point);
            // The step after the silence is one trace second at the speed-up.
            assert!(jumped / gap < 10.5, "it kept driving at its pace");
            assert!((plan.samples[i + 1].speed.unwrap() - 10.0).abs() < 1e-6);
        }
    }

    #[test]
    fn a_stop_stands_still_for_its_real_length_and_delays_the_rest() {
        for speedup in [1.0, 10.0] {
            let mut plan = line(100, 1.0, 10.0);
            let before = plan.clone();
            Incident::Stopped {
                start: 40.0,
                len: 300.0,
                fix_every: 5.0,
            }
            .apply(&mut plan, speedup);
            let here = before.samples[40].point;
            // From the fix where it stopped to the last before it drives on.
            let still = longest(&plan, speedup, |s| s.point == here);
            assert!((still - 295.0).abs() < 1e-6, "{still}");
            let standing = plan
                .samples
                .iter()
                .filter(|s| s.point == here && s.speed == Some(0.0))
                .count();
            assert_eq!(standing, 59);
            assert_eq!(plan.samples.len(), 159);
            assert!((plan.duration() - (99.0 + 300.0 * speedup)).abs() < 1e-6);
            assert!(plan.samples.windows(2).all(|w| w[0].t < w[1].t));
            assert!(
                plan.marks[0].message.contains("5.0 min"),
                "{:?}",
                plan.marks
            );
        }
    }
}
