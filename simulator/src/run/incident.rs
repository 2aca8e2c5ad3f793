//! Incidents on purpose, for the alerts demo: a vehicle leaves its planned route and rejoins
//! it, speeds, goes silent (a phone switched off: no backlog afterwards), or stands still
//! mid-trip. Each rewrites a stretch of a trip's plan.

use std::fmt;

use clap::ValueEnum;

use super::plan::{Plan, Sample};
use crate::geo;

/// Never faster than this while speeding: well under the server's jump filter (100 m/s).
pub const MAX_SPEEDING_MPS: f64 = 60.0;
/// A step slower than this is standing, and speeding does not hurry it.
const MOVING_MPS: f64 = 1.0;

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

/// How fast a speeding vehicle goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// This many times the speed it would have driven.
    Factor(f64),
    /// At least this speed, in m/s, wherever it moves.
    AtLeast(f64),
}

/// One incident, with its times in trace seconds of the trip and `wall_s`, its length as the
/// server sees it, for the log.
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
    /// Trace seconds of the original plan the incident uses up (a stop inserts time instead).
    pub fn consumes(kind: Kind, len: f64) -> f64 {
        match kind {
            Kind::Stopped => 0.0,
            _ => len,
        }
    }

    /// Rewrites `plan`, recomputes speeds and headings, and marks the start and the end for
    /// the log. `speedup` turns trace seconds into what the server sees.
    pub fn apply(self, plan: &mut Plan, speedup: f64) {
        let minutes = |len: f64| len / speedup / 60.0;
        match self {
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
            }
            Incident::Speeding { start, len, pace } => {
                let end = speeding(&mut plan.samples, start, len, pace);
                let how = match pace {
                    Pace::Factor(f) => format!("{f}× the stretch's speed"),
                    Pace::AtLeast(v) => format!("at least {:.0} km/h", v * 3.6),
                };
                plan.mark_incident(
                    start,
                    Kind::Speeding,
                    format!("incident: speeding, {how}, for {:.1} min", minutes(len)),
                );
                plan.mark(end, "incident over: back to normal speed".into());
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
            }
        }
        plan.derive_motion();
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

fn off_route(samples: &mut [Sample], start: f64, len: f64, offset_m: f64) {
    let bearings: Vec<f64> = (0..samples.len())
        .map(|i| {
            let a = samples[i.saturating_sub(1)].point;
            let b = samples[(i + 1).min(samples.len() - 1)].point;
            geo::initial_bearing_deg(a, b)
        })
        .collect();
    for (s, bearing) in samples.iter_mut().zip(bearings) {
        let share = detour_share(s.t, start, len);
        if share > 0.0 {
            // To the right of the direction of travel: a parallel road.
            s.point = geo::destination(s.point, bearing + 90.0, offset_m * share);
        }
    }
}

/// Retimes the moving steps from `start` until `len` seconds of the new timing have passed;
/// everything after comes that much sooner. Returns when the speeding ends.
fn speeding(samples: &mut [Sample], start: f64, len: f64, pace: Pace) -> f64 {
    let Some(first) = samples.iter().position(|s| s.t >= start) else {
        return start;
    };
    let mut shift = 0.0;
    let mut end = start;
    let mut speeding_for = 0.0;
    for i in first + 1..samples.len() {
        // Sample i − 1 has moved `shift` earlier already; sample i not yet.
        let old_dt = samples[i].t - (samples[i - 1].t + shift);
        let prev_new = samples[i - 1].t;
        if speeding_for < len - 1e-9 {
            let distance = geo::haversine_m(samples[i - 1].point, samples[i].point);
            let speed = distance / old_dt;
            let new_dt = if speed < MOVING_MPS {
                old_dt
            } else {
                let wanted = match pace {
                    Pace::Factor(f) => speed * f,
                    Pace::AtLeast(v) => speed.max(v),
                };
                distance / wanted.min(MAX_SPEEDING_MPS).max(speed)
            };
            shift += old_dt - new_dt;
            speeding_for += new_dt;
            end = prev_new + new_dt;
        }
        samples[i].t -= shift;
    }
    end
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

    fn route_distance(p: crate::geo::LatLon, plan: &Plan) -> f64 {
        plan.samples
            .iter()
            .map(|s| geo::haversine_m(p, s.point))
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn off_route_leaves_the_route_for_the_window_and_rejoins() {
        let route = line(400, 1.0, 10.0);
        let mut plan = route.clone();
        Incident::OffRoute {
            start: 100.0,
            len: 120.0,
            offset_m: 300.0,
        }
        .apply(&mut plan, 1.0);
        assert_eq!(plan.samples.len(), route.samples.len());
        for s in &plan.samples {
            let d = route_distance(s.point, &route);
            if s.t <= 100.0 || s.t >= 220.0 {
                assert!(d < 1e-6, "on route at {}: {d}", s.t);
            }
            if (130.0..=190.0).contains(&s.t) {
                assert!((d - 300.0).abs() < 1.0, "away at {}: {d}", s.t);
            }
            assert!(
                s.speed.is_none_or(|v| v < 20.0),
                "no teleport: {:?}",
                s.speed
            );
        }
        assert_eq!(plan.marks.len(), 2);
        assert!(plan.marks[0].message.contains("off route"));
        assert_eq!(plan.marks[0].starts, Some(Kind::OffRoute));
        assert_eq!(plan.marks[1].starts, None);
    }

    #[test]
    fn speeding_goes_faster_for_the_window_and_stays_under_the_filter() {
        let mut plan = line(400, 1.0, 10.0);
        Incident::Speeding {
            start: 50.0,
            len: 60.0,
            pace: Pace::Factor(1.5),
        }
        .apply(&mut plan, 1.0);
        let fast: Vec<&Sample> = plan
            .samples
            .iter()
            .filter(|s| s.speed.is_some_and(|v| v > 14.0))
            .collect();
        assert!(fast.iter().all(|s| (s.speed.unwrap() - 15.0).abs() < 1e-6));
        // A minute at 15 m/s instead of 10: 90 steps of 10 m.
        assert_eq!(fast.len(), 90);
        assert!((fast[0].t - 50.0 - 1.0 / 1.5).abs() < 1e-6);
        // Before and after, the usual 10 m/s; the trip ends 30 s sooner.
        let normal = plan.samples[1..]
            .iter()
            .filter(|s| (s.speed.unwrap() - 10.0).abs() < 1e-6)
            .count();
        assert_eq!(normal + fast.len(), 399);
        assert!((plan.duration() - (399.0 - 30.0)).abs() < 1e-6);

        let mut plan = line(100, 1.0, 30.0);
        Incident::Speeding {
            start: 0.0,
            len: 1_000.0,
            pace: Pace::AtLeast(200.0),
        }
        .apply(&mut plan, 1.0);
        assert!(plan.samples[1..]
            .iter()
            .all(|s| (s.speed.unwrap() - MAX_SPEEDING_MPS).abs() < 1e-6));
    }

    #[test]
    fn silence_drops_the_fixes_and_keeps_the_rest_in_place() {
        let mut plan = line(100, 1.0, 10.0);
        Incident::Silent {
            start: 20.0,
            len: 30.0,
        }
        .apply(&mut plan, 1.0);
        assert_eq!(plan.samples.len(), 70);
        assert!(plan.samples.iter().all(|s| s.t <= 20.0 || s.t > 50.0));
        assert!(plan.samples.iter().all(|s| !s.offline), "no backlog");
        let after = plan.samples.iter().find(|s| s.t > 50.0).unwrap();
        assert_eq!(after.t, 51.0);
        assert!(
            (after.speed.unwrap() - 10.0).abs() < 1e-6,
            "it kept driving"
        );
    }

    #[test]
    fn a_stop_stands_still_and_delays_the_rest() {
        let mut plan = line(100, 1.0, 10.0);
        let before = plan.clone();
        Incident::Stopped {
            start: 40.0,
            len: 300.0,
            fix_every: 5.0,
        }
        .apply(&mut plan, 10.0);
        let here = before.samples[40].point;
        let standing: Vec<&Sample> = plan
            .samples
            .iter()
            .filter(|s| s.t > 40.0 && s.t < 340.0)
            .collect();
        assert_eq!(standing.len(), 59);
        assert!(standing
            .iter()
            .all(|s| s.point == here && s.speed == Some(0.0)));
        assert_eq!(plan.samples.len(), 159);
        assert!((plan.duration() - (99.0 + 300.0)).abs() < 1e-6);
        assert!(plan.samples.windows(2).all(|w| w[0].t < w[1].t));
        assert!(
            plan.marks[0].message.contains("0.5 min"),
            "{:?}",
            plan.marks
        );
    }
}
