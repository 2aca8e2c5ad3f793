//! Whether a vehicle is inside a geofence, judged from fixes that wander: the decision for one
//! vehicle and one geofence. Pure, so that it is tested on its own against noise models and real
//! traces: [`step`] takes the vehicle's state for the geofence, its last deciding fix, the new
//! fix, the debounce and the geofence's depth function, and returns the crossings.
//!
//! Each rule guards against one kind of error:
//! - **Distance.** A fix is evidence for a side only when it lies beyond the boundary by more
//!   than its margin, `max(20 m, 2 × accuracy)`; within the margin it says nothing. GNSS noise
//!   drifts slowly (metres per minute, a few metres of σ even when the device reports less), so
//!   the margin must exceed what the noise reaches for minutes at a time, not its typical size.
//! - **Accuracy.** A fix reporting an accuracy worse than 100 m decides nothing; one reporting
//!   none is taken as an ordinary fix (margin 20 m): most trackers send no accuracy.
//! - **Glitches.** A fix that is not later than the last deciding fix, or lies farther from it
//!   than 100 m/s would carry a vehicle, decides nothing (a repeat, or a GNSS jump).
//! - **Time.** The vehicle changes side when it is seen clearly on the new side, and again at
//!   least the debounce later, without being seen clearly back on the old side in between.
//! - **Between fixes.** The straight line between two deciding fixes at most 60 s apart is
//!   evidence like a fix: where it runs deeper than the margin (the larger of its two ends'),
//!   the vehicle was there. Sparse fixes see what dense ones see.
//! - **Passing through.** A vehicle seen clearly on the new side that is seen clearly back on
//!   the old side before the debounce ran out made a short visit, and both crossings are raised
//!   at once, when it went somewhere: the straight line from its last deciding fix before it
//!   went in (A) to the fix now (B) runs deeper into the geofence than the margin (it drove
//!   straight through), or B lies at least twice the margin from A and the way through the
//!   fixes between is at most 1.5 times as long as the straight line (it turned inside).
//!   Otherwise it turned back, or the fixes wandered, or one fix jumped in and out, and
//!   nothing is raised.
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::route::metres;

/// The least margin, metres.
pub const MARGIN_FLOOR_M: f64 = 20.0;
/// The margin per metre of reported accuracy.
pub const MARGIN_PER_ACCURACY: f64 = 2.0;
/// A fix reporting a worse accuracy (metres) decides nothing.
pub const MAX_ACCURACY_M: f64 = 100.0;
/// Two fixes farther apart in time than this are not joined by a straight line.
pub const MAX_LINE: Duration = Duration::seconds(60);
/// No road vehicle moves faster (m/s, 360 km/h): a fix that would have to is a glitch.
pub const MAX_SPEED_MPS: f64 = 100.0;
/// A short visit that did not go straight through counts when its way through the fixes is at
/// most this much longer than the straight line from where it went in to where it came out:
/// a turn at a junction is 1.41, one fix jumping aside between two close ones far more.
pub const MAX_DETOUR: f64 = 1.5;
/// Spacing of the points at which a line between fixes is measured, metres...
const SAMPLE_M: f64 = 2.0;
/// ...and the most points measured on one line.
const MAX_SAMPLES: usize = 256;

/// A fix that decides: where, when, and how far beyond a boundary it must lie to count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    pub at: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub margin_m: f64,
}

impl Mark {
    /// The fix as evidence, or none when its accuracy (metres) is too poor to tell.
    pub fn new(at: DateTime<Utc>, lat: f64, lon: f64, accuracy: Option<f64>) -> Option<Mark> {
        let margin_m = match accuracy {
            None => MARGIN_FLOOR_M,
            Some(a) if a <= MAX_ACCURACY_M => (MARGIN_PER_ACCURACY * a).max(MARGIN_FLOOR_M),
            Some(_) => return None,
        };
        Some(Mark {
            at,
            lat,
            lon,
            margin_m,
        })
    }

    /// Whether this fix may follow `last`, the last fix that decided: later than it, and no
    /// farther from it than a vehicle can go in the time between.
    pub fn follows(&self, last: Option<&Mark>) -> bool {
        let Some(last) = last else {
            return true;
        };
        let dt = seconds(self.at - last.at);
        dt > 0.0 && metres((last.lat, last.lon), (self.lat, self.lon)) / dt <= MAX_SPEED_MPS
    }

    /// The last deciding fix, when the straight line from it to this one is evidence: at most
    /// [`MAX_LINE`] apart.
    pub fn line_from<'a>(&self, last: Option<&'a Mark>) -> Option<&'a Mark> {
        last.filter(|a| self.at - a.at <= MAX_LINE)
    }
}

fn seconds(d: Duration) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// One vehicle and one geofence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FenceState {
    /// Counted inside.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inside: bool,
    /// While inside: when the visit began (the vehicle was first seen clearly inside).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// The visit's open `geofence_dwell` alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dwell: Option<i64>,
    /// A change of side under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

impl FenceState {
    /// Nothing to remember: outside, with nothing under way.
    pub fn is_idle(&self) -> bool {
        !self.inside && self.pending.is_none() && self.dwell.is_none()
    }
}

/// Seen clearly on the other side since `since`, waiting out the debounce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub since: DateTime<Utc>,
    /// The last deciding fix before that: where a short visit would have started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Mark>,
    /// Metres from `from` through the deciding fixes since.
    #[serde(default)]
    pub way_m: f64,
}

/// The vehicle entered (or left) the geofence at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    pub enter: bool,
    pub at: DateTime<Utc>,
}

/// Judges `fix`, which follows `last` (the vehicle's last deciding fix), for the geofence whose
/// depth at a latitude and longitude is `depth` (metres inside the boundary, negative
/// outside). Returns the crossings: none, one, or an enter and an exit for a pass through
/// (an exit and an enter for a vehicle inside that went out and came back).
pub fn step(
    state: &mut FenceState,
    last: Option<&Mark>,
    fix: &Mark,
    debounce: Duration,
    depth: impl Fn(f64, f64) -> f64,
) -> Vec<Crossing> {
    // How far onto the other side of the boundary from the one the vehicle is counted on.
    let sign = if state.inside { -1.0 } else { 1.0 };
    let across = |lat: f64, lon: f64| sign * depth(lat, lon);
    let x = across(fix.lat, fix.lon);
    let margin = fix.margin_m;
    // The line from the last deciding fix, when it is short enough to be evidence.
    let line = fix.line_from(last);
    let hop = last.map_or(0.0, |a| metres((a.lat, a.lon), (fix.lat, fix.lon)));
    let pending = match state.pending.take() {
        Some(mut pending) => {
            pending.way_m += hop;
            pending
        }
        None => {
            let along = line.and_then(|a| Line::new(a, fix).first_beyond(across));
            let since = match along {
                Some(t) => t,
                None if x > margin => fix.at,
                None => return Vec::new(),
            };
            Pending {
                since,
                from: last.copied(),
                way_m: hop,
            }
        }
    };
    if x > margin {
        if fix.at - pending.since >= debounce {
            state.inside = !state.inside;
            state.since = state.inside.then_some(pending.since);
            return vec![Crossing {
                enter: state.inside,
                at: pending.since,
            }];
        }
    } else if x < -margin {
        // Back on the old side before the debounce ran out: a short visit, or nothing.
        if !pending.went_somewhere(fix, across) {
            return Vec::new();
        }
        let back = line.map_or(fix.at, |a| Line::new(a, fix).back_at(across));
        if state.inside {
            // Out and back in: a new visit.
            state.since = Some(back);
        }
        return vec![
            Crossing {
                enter: !state.inside,
                at: pending.since,
            },
            Crossing {
                enter: state.inside,
                at: back,
            },
        ];
    }
    state.pending = Some(pending);
    Vec::new()
}

impl Pending {
    /// Whether the vehicle, now at `fix` and clearly back on the old side, went through the
    /// geofence rather than back out the way it came.
    fn went_somewhere(&self, fix: &Mark, across: impl Fn(f64, f64) -> f64) -> bool {
        let Some(a) = &self.from else {
            return false;
        };
        let line = Line::new(a, fix);
        line.first_beyond(&across).is_some()
            || (line.length >= 2.0 * line.margin && self.way_m <= MAX_DETOUR * line.length)
    }
}

/// The straight line between two deciding fixes, measured at evenly spaced points after its
/// start, with the larger of the two fixes' margins.
struct Line {
    a: Mark,
    b: Mark,
    length: f64,
    margin: f64,
    samples: usize,
}

impl Line {
    fn new(a: &Mark, b: &Mark) -> Line {
        let length = metres((a.lat, a.lon), (b.lat, b.lon));
        Line {
            a: *a,
            b: *b,
            length,
            margin: a.margin_m.max(b.margin_m),
            samples: ((length / SAMPLE_M).ceil() as usize).clamp(1, MAX_SAMPLES),
        }
    }

    /// The points after the start, with their times and `f` there.
    fn points(&self, f: impl Fn(f64, f64) -> f64) -> impl Iterator<Item = (DateTime<Utc>, f64)> {
        let (a, b, n) = (self.a, self.b, self.samples);
        let span = seconds(b.at - a.at);
        (1..=n).map(move |i| {
            let k = i as f64 / n as f64;
            let value = f(a.lat + k * (b.lat - a.lat), a.lon + k * (b.lon - a.lon));
            let at = a.at + Duration::microseconds((span * k * 1e6) as i64);
            (at, value)
        })
    }

    /// When the line first lies more than the margin across the boundary (`across` > margin).
    fn first_beyond(&self, across: impl Fn(f64, f64) -> f64) -> Option<DateTime<Utc>> {
        // `across` changes by at most a metre per metre, so a line whose two ends lie far
        // enough back cannot reach beyond the margin anywhere: no need to measure it.
        let ends = across(self.a.lat, self.a.lon) + across(self.b.lat, self.b.lon);
        if (ends + self.length) / 2.0 <= self.margin {
            return None;
        }
        self.points(across)
            .find(|(_, x)| *x > self.margin)
            .map(|(at, _)| at)
    }

    /// When the line, after it last lay more than the margin across, first lies more than the
    /// margin back; the end of the line if it never does before.
    fn back_at(&self, across: impl Fn(f64, f64) -> f64) -> DateTime<Utc> {
        let mut back = None;
        for (at, x) in self.points(across) {
            if x > self.margin {
                back = None;
            } else if x < -self.margin && back.is_none() {
                back = Some(at);
            }
        }
        back.unwrap_or(self.b.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metres per degree of latitude, as `metres` measures them.
    const M_PER_DEG: f64 = 111_195.08;

    /// A strip 100 m wide from latitude 0 northwards, endless east and west.
    fn strip(lat: f64, _lon: f64) -> f64 {
        let y = lat * M_PER_DEG;
        y.min(100.0 - y)
    }

    /// Fixes as (seconds, metres east, metres north).
    type Track = Vec<(i64, f64, f64)>;
    /// Crossings as (enter, whole seconds).
    type Crossed = Vec<(bool, i64)>;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    /// Runs fixes (seconds, metres east, metres north) through `step` with a 30 s debounce for
    /// a vehicle that starts outside, as the rules do: a fix that is too vague or does not
    /// follow the last deciding one is skipped.
    fn run(fixes: &[(i64, f64, f64)], accuracy: Option<f64>) -> Crossed {
        let mut state = FenceState::default();
        let mut last: Option<Mark> = None;
        let mut seen = Vec::new();
        for &(s, x, y) in fixes {
            let Some(fix) = Mark::new(t(s), y / M_PER_DEG, x / M_PER_DEG, accuracy) else {
                continue;
            };
            if !fix.follows(last.as_ref()) {
                continue;
            }
            for c in step(
                &mut state,
                last.as_ref(),
                &fix,
                Duration::seconds(30),
                strip,
            ) {
                seen.push((c.enter, (c.at - t(0)).num_seconds()));
            }
            last = Some(fix);
        }
        seen
    }

    #[test]
    fn the_margin_grows_with_the_reported_accuracy_from_a_floor() {
        let margin = |a| Mark::new(t(0), 0.0, 0.0, a).map(|m| m.margin_m);
        assert_eq!(margin(None), Some(20.0));
        assert_eq!(margin(Some(3.0)), Some(20.0));
        assert_eq!(margin(Some(15.0)), Some(30.0));
        assert_eq!(margin(Some(100.0)), Some(200.0));
        assert_eq!(margin(Some(100.5)), None);
    }

    #[test]
    fn repeats_and_jumps_do_not_follow() {
        let at = |s, y: f64| Mark::new(t(s), y / M_PER_DEG, 0.0, None).unwrap();
        let a = at(0, 0.0);
        assert!(a.follows(None));
        assert!(!at(0, 0.0).follows(Some(&a)), "a repeat");
        assert!(!at(-1, 5.0).follows(Some(&a)), "older");
        assert!(at(10, 900.0).follows(Some(&a)), "90 m/s");
        assert!(!at(10, 3000.0).follows(Some(&a)), "300 m/s");
        assert!(at(60, 3000.0).follows(Some(&a)), "50 m/s");
    }

    #[test]
    fn crossings_for_each_kind_of_track() {
        let alternating = |every: i64, y: f64| -> Track {
            (0..100)
                .map(|i| (i * every, 0.0, if i % 2 == 0 { -y } else { y }))
                .collect()
        };
        // (what, fixes as (seconds, metres east, metres north), crossings as (enter, seconds))
        let cases: Vec<(&str, Track, Crossed)> = vec![
            (
                "in to stay: enter, dated where the line from the last fix went deeper than the margin",
                vec![(0, 0.0, -50.0), (10, 0.0, 50.0), (20, 0.0, 50.0), (40, 0.0, 50.0)],
                vec![(true, 7)],
            ),
            (
                "in to stay, then out to stay",
                vec![(0, 0.0, -50.0), (10, 0.0, 50.0), (40, 0.0, 50.0), (50, 0.0, -50.0), (90, 0.0, -50.0)],
                vec![(true, 7), (false, 47)],
            ),
            (
                "walking in at 1 m/s, a fix a second: enter when 20 m deep, confirmed 30 s later",
                (0..120).map(|i| (i, 0.0, -60.5 + i as f64)).collect(),
                vec![(true, 81)],
            ),
            (
                "wobbling within the margin either side: nothing",
                alternating(10, 19.0),
                vec![],
            ),
            (
                "wobbling beyond the margin every 5 s, under the debounce: nothing",
                alternating(5, 40.0),
                vec![],
            ),
            (
                "seen clearly in, then within the margin: the debounce runs on",
                vec![(0, 0.0, -50.0), (10, 0.0, 31.0), (20, 0.0, 5.0), (30, 0.0, -10.0), (40, 0.0, 25.0)],
                vec![(true, 8)],
            ),
            (
                "seen clearly back out: the debounce starts again",
                vec![(0, 0.0, -50.0), (10, 0.0, 30.0), (20, 0.0, -30.0), (30, 0.0, 30.0), (50, 0.0, 30.0), (60, 0.0, 30.0)],
                vec![(true, 28)],
            ),
            (
                "in and back out the way it came, under the debounce: nothing",
                vec![(0, 0.0, -50.0), (10, 0.0, 50.0), (20, 0.0, -50.0), (60, 0.0, -50.0)],
                vec![],
            ),
            (
                "in and back out on the side it came from, 200 m along: a short visit",
                vec![(0, 0.0, -50.0), (10, 100.0, 50.0), (20, 200.0, -50.0)],
                vec![(true, 7), (false, 17)],
            ),
            (
                "in and back out on the side it came from, 30 m along: turned back, nothing",
                vec![(0, 0.0, -50.0), (10, 15.0, 50.0), (20, 30.0, -50.0)],
                vec![],
            ),
            (
                "at 30 m/s beside it, one fix 80 m aside into it: nothing",
                vec![(0, 0.0, -30.0), (1, 30.0, -30.0), (2, 60.0, 50.0), (3, 90.0, -30.0), (4, 120.0, -30.0)],
                vec![],
            ),
            (
                "through, with one fix inside: enter and exit at once",
                vec![(0, 0.0, -50.0), (10, 0.0, 50.0), (20, 0.0, 150.0)],
                vec![(true, 7), (false, 17)],
            ),
            (
                "through between two fixes 10 s apart: enter and exit at once",
                vec![(0, 0.0, -50.0), (10, 0.0, 150.0)],
                vec![(true, 3), (false, 8)],
            ),
            (
                "through between two fixes more than a minute apart: not known",
                vec![(0, 0.0, -50.0), (61, 0.0, 150.0)],
                vec![],
            ),
            (
                "inside, out beyond the margin and back in 200 m along, under the debounce",
                vec![(0, 0.0, 50.0), (30, 0.0, 50.0), (40, 0.0, 50.0), (50, 100.0, 150.0), (60, 200.0, 50.0)],
                vec![(true, 0), (false, 47), (true, 57)],
            ),
            (
                "a 3 km glitch between fixes outside: nothing",
                vec![(0, 0.0, -50.0), (10, 0.0, -50.0), (11, 3000.0, 50.0), (12, 0.0, -50.0), (60, 0.0, -50.0)],
                vec![],
            ),
            (
                "one fix jumping 100 m in and back: nothing",
                vec![(0, 0.0, -50.0), (10, 0.0, -50.0), (11, 0.0, 50.0), (12, 0.0, -50.0), (60, 0.0, -50.0)],
                vec![],
            ),
            (
                "repeated fixes change nothing",
                vec![(0, 0.0, -50.0), (10, 0.0, 50.0), (10, 0.0, 50.0), (20, 0.0, 50.0), (20, 0.0, -50.0), (40, 0.0, 50.0)],
                vec![(true, 7)],
            ),
        ];
        for (what, fixes, want) in cases {
            assert_eq!(run(&fixes, None), want, "{what}");
        }
    }

    #[test]
    fn poor_fixes_tell_less_and_too_poor_ones_nothing() {
        let through = [(0, 0.0, -80.0), (10, 0.0, 50.0), (40, 0.0, 50.0)];
        assert_eq!(run(&through, Some(5.0)), [(true, 7)]);
        // 30 m accuracy: a margin of 60 m, more than half the strip is wide.
        assert_eq!(run(&through, Some(30.0)), []);
        assert_eq!(run(&through, Some(150.0)), []);
    }
}
