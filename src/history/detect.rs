//! Trips and stops from a vehicle's fixes, one fix at a time.
//!
//! A **stop** is the vehicle staying within `stop_radius_m` of one place (the stop's first fix)
//! for at least `min_stop_s`; a **trip** is what lies between two stops, kept if it covers at
//! least `min_trip_m`. Time without data longer than `max_gap_s` ends the segment going on at
//! the last fix before it, unless the vehicle is found where it was (then it stood still: a
//! stop across the gap, which is what a parked phone that stops reporting looks like).
//!
//! The detector is a state machine fed the vehicle's accepted fixes in time order. A segment is
//! decided by a fix after its end (the one that left the stop, came after the gap, or kept the
//! vehicle in place long enough), and the state after it depends on its last fix alone
//! ([`Detector::after`]): so the segmenter can feed new fixes to the saved state, and when a late
//! fix arrives, drop the segments decided from its time on and start again at the end of the last
//! one left, with the same result as going through the whole history again.
use chrono::{DateTime, Duration, Utc};
use geo::{Distance, Haversine, Point};
use serde::{Deserialize, Serialize};

use super::TripSettings;

/// An accepted fix, as the detector needs it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    pub at: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    /// m/s, as the device reported it.
    pub speed: Option<f32>,
}

impl Fix {
    fn metres_to(&self, other: &Fix) -> f64 {
        Haversine::distance(
            Point::new(self.lon, self.lat),
            Point::new(other.lon, other.lat),
        )
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Kind {
    Trip,
    Stop,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Trip => "trip",
            Kind::Stop => "stop",
        }
    }
}

/// What a trip or a stop adds up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub distance_m: f64,
    /// The highest reported speed, or (where the device reports none) speed between fixes.
    pub max_speed_mps: f32,
    pub fixes: u32,
}

impl Totals {
    fn one() -> Totals {
        Totals {
            fixes: 1,
            ..Totals::default()
        }
    }

    /// `to` follows `from` in the same segment; a speed beyond `plausible` is not believed.
    fn add(&mut self, from: &Fix, to: &Fix, plausible: Option<f64>) {
        let metres = from.metres_to(to);
        let seconds = (to.at - from.at).num_milliseconds() as f64 / 1000.0;
        let speed =
            to.speed
                .map(f64::from)
                .unwrap_or(if seconds > 0.0 { metres / seconds } else { 0.0 });
        self.distance_m += metres;
        if plausible.is_none_or(|max| speed <= max) {
            self.max_speed_mps = self.max_speed_mps.max(speed as f32);
        }
        self.fixes += 1;
    }
}

/// A trip or a stop: from its first fix to its last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub kind: Kind,
    pub start: Fix,
    pub end: Fix,
    pub totals: Totals,
    /// The time of the fix that ended it (for the segment going on now, its last fix's). A fix
    /// arriving late changes only segments decided at or after its time.
    pub decided: DateTime<Utc>,
}

impl Segment {
    pub fn duration(&self) -> Duration {
        self.end.at - self.start.at
    }
}

/// Where the vehicle may be coming to a stop: every fix since `anchor` within the radius of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Candidate {
    anchor: Fix,
    /// The trip's totals up to the anchor: the trip's if the stop is confirmed.
    trip_at_anchor: Totals,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Open {
    kind: Kind,
    start: Fix,
    last: Fix,
    totals: Totals,
    /// Only while on a trip.
    candidate: Option<Candidate>,
}

/// The detector's state: the segment going on now. Saved as JSON between the segmenter's runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    open: Open,
}

impl Detector {
    /// The state at `fix` when a segment has just ended there, or when it is the vehicle's first:
    /// on the move from `fix`, which is where a stop would begin if it stays.
    pub fn after(fix: Fix) -> Detector {
        Detector {
            open: Open {
                kind: Kind::Trip,
                start: fix,
                last: fix,
                totals: Totals::one(),
                candidate: Some(Candidate {
                    anchor: fix,
                    trip_at_anchor: Totals::one(),
                }),
            },
        }
    }

    /// The time of the last fix fed.
    pub fn last_at(&self) -> DateTime<Utc> {
        self.open.last.at
    }

    /// When the segment going on began.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.open.start.at
    }

    /// Feeds the next fix (later than every fix before it); segments it ends go to `ended`.
    pub fn push(&mut self, fix: Fix, settings: &TripSettings, ended: &mut Vec<Segment>) {
        let open = &mut self.open;
        debug_assert!(fix.at > open.last.at, "fixes in time order");
        if fix.at <= open.last.at {
            return;
        }
        let radius = settings.stop_radius_m;
        // The place the vehicle would have to stay near to be stopped.
        let place = match (open.kind, open.candidate) {
            (Kind::Stop, _) => Some(open.start),
            (Kind::Trip, Some(c)) => Some(c.anchor),
            (Kind::Trip, None) => None,
        };
        let stayed = place.is_some_and(|p| p.metres_to(&fix) <= radius);
        let gap = fix.at - open.last.at > Duration::seconds(settings.max_gap_s.into());
        if gap && !stayed {
            // It moved while nothing was heard: what was going on ended at the last fix.
            if let Some(segment) = self.current(settings) {
                ended.push(Segment {
                    decided: fix.at,
                    ..segment
                });
            }
            *self = Detector::after(fix);
            return;
        }
        let open = &mut self.open;
        match open.kind {
            Kind::Stop if stayed => {
                open.totals.fixes += 1;
                open.last = fix;
            }
            Kind::Stop => {
                // It left: the stop ended at its last fix near the place, and a trip begins there.
                let last = open.last;
                ended.push(Segment {
                    decided: fix.at,
                    ..self.segment()
                });
                *self = Detector::after(last);
                self.push(fix, settings, ended);
            }
            Kind::Trip => {
                let last = open.last;
                open.totals.add(&last, &fix, settings.plausible_speed_mps);
                open.last = fix;
                match open.candidate {
                    Some(c) if stayed => {
                        if fix.at - c.anchor.at >= Duration::seconds(settings.min_stop_s.into()) {
                            // It has stood long enough: the trip ended at the anchor.
                            let trip = Segment {
                                kind: Kind::Trip,
                                start: open.start,
                                end: c.anchor,
                                totals: c.trip_at_anchor,
                                decided: fix.at,
                            };
                            if trip.totals.distance_m >= settings.min_trip_m {
                                ended.push(trip);
                            }
                            let fixes = open.totals.fixes - c.trip_at_anchor.fixes + 1;
                            self.open = Open {
                                kind: Kind::Stop,
                                start: c.anchor,
                                last: fix,
                                totals: Totals {
                                    fixes,
                                    ..Totals::default()
                                },
                                candidate: None,
                            };
                        }
                    }
                    _ => {
                        open.candidate = Some(Candidate {
                            anchor: fix,
                            trip_at_anchor: open.totals,
                        });
                    }
                }
            }
        }
    }

    fn segment(&self) -> Segment {
        Segment {
            kind: self.open.kind,
            start: self.open.start,
            end: self.open.last,
            totals: self.open.totals,
            decided: self.open.last.at,
        }
    }

    /// What is going on now, as far as it is known: a stop, or a trip once it is long enough.
    pub fn current(&self, settings: &TripSettings) -> Option<Segment> {
        let segment = self.segment();
        match segment.kind {
            Kind::Stop => Some(segment),
            Kind::Trip => (segment.totals.distance_m >= settings.min_trip_m).then_some(segment),
        }
    }
}

/// Every trip and stop in `fixes` (in time order), ended ones and then what is going on at the
/// last fix: the whole history at once, as the segmenter's runs add up to.
pub fn segments(fixes: &[Fix], settings: &TripSettings) -> (Vec<Segment>, Option<Segment>) {
    let Some((first, rest)) = fixes.split_first() else {
        return (Vec::new(), None);
    };
    let mut detector = Detector::after(*first);
    let mut ended = Vec::new();
    for fix in rest {
        detector.push(*fix, settings, &mut ended);
    }
    let current = detector.current(settings);
    (ended, current)
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
