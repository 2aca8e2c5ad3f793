//! A shipment's ETA (when it will be within the arrival radius of its destination) from the
//! progress it makes: the distance left over the speed at which that distance has been
//! shrinking, measured over elapsed time since setting off (stops, traffic lights and slow
//! stretches included) rather than over the moments the vehicle was moving. Progress is measured
//! along the planned route, only ever forward, or as the straight-line distance to the
//! destination when there is no usable route; either way the speed is measured in the same
//! terms as the distance left, so a winding road or a detour is priced in. Where earlier trips on
//! the planned route have arrived, the distance left is timed as they took it, at the pace this
//! one keeps against them. Pure: the rules keep the state in the vehicle's rule state and start
//! it afresh with each shipment.
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::route::{metres, Route};

/// How far back the speed looks: progress this long ago weighs 1/e as much as the latest, so the
/// speed is roughly the average of the last ten minutes, or of the whole trip while it is shorter.
const MEMORY_S: f64 = 600.0;
/// No ETA from speed before the vehicle has been on its way this long: a fix or two says
/// nothing, even from a device reporting once a minute.
const MIN_OBSERVED_S: f64 = 180.0;
/// Moving this far from where the shipment's first fix was is setting off; the wait before it
/// does not count towards the speed.
const DEPART_M: f64 = 100.0;
/// Fixes within this of one another for at least this long (a device's wander; slower than half
/// a metre a second) are the vehicle standing still. Having stood still longer than it had
/// travelled since setting off, it had only moved up (from a stand to a gate or a first stop):
/// it sets off again from there, and the speed starts afresh.
const STILL_M: f64 = 30.0;
const STILL: Duration = Duration::minutes(1);
/// A fix farther than this from the planned route does not move the vehicle along it.
const ON_ROUTE_M: f64 = 100.0;
/// Off the planned route this long, the distance left is the straight line to the destination.
const LOST: Duration = Duration::minutes(5);
/// The route is searched from this far behind the last matched point (a fix that lags back a
/// little is still on the route, but it moves nothing back)...
const BEHIND_M: f64 = 50.0;
/// ...to this far ahead of it plus what the fastest plausible vehicle covers since.
const AHEAD_M: f64 = 300.0;
const FASTEST_MPS: f64 = 50.0;
/// Where two stretches of the route pass within this of each other, the vehicle is on the one
/// it reaches first.
const TIE_M: f64 = 15.0;
/// The pace against earlier trips is judged over the stretch covered in the last this long...
const PACE_WINDOW: Duration = Duration::minutes(10);
/// ...as if that stretch had been preceded by this much travel at their pace, so that a pace
/// measured over little travel stays near theirs, and is believed within these bounds.
const PACE_PRIOR_S: f64 = 300.0;
const PACE_BOUNDS: (f64, f64) = (0.5, 2.0);
/// A point of the trail is kept at most this often.
const TRAIL_STEP: Duration = Duration::seconds(30);
/// An earlier trip that stopped reporting this near a point past its last fix (within the
/// arrival radius, where its shipment ended) counts as having reached it then.
const END_SLACK_M: f64 = 200.0;
/// Longest ETA given, from the fix: beyond it the vehicle is as good as standing still.
const LONGEST: Duration = Duration::days(2);

/// What the ETA of a shipment remembers between positions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// The latest fix's time.
    pub at: Option<DateTime<Utc>>,
    /// Where the vehicle is to set off from: the shipment's first fix, or where it stood after
    /// only moving up.
    pub start: Option<(f64, f64)>,
    pub departed: bool,
    /// When it set off, and where and since when it has been standing still (before setting
    /// off, where it is to set off from).
    pub departed_at: Option<DateTime<Utc>>,
    pub still: Option<((f64, f64), DateTime<Utc>)>,
    /// When a fix was last on the planned route, after setting off: the progress along it is
    /// counted between fixes on it, so that a stretch off it is not read as standing still.
    pub along_from: Option<DateTime<Utc>>,
    /// Metres along the planned route reached, and when a fix was last on the route.
    pub along: Option<f64>,
    pub matched_at: Option<DateTime<Utc>>,
    /// Since when the fixes are off the planned route.
    pub off_route_since: Option<DateTime<Utc>>,
    /// The straight-line distance to the destination at the latest fix.
    pub straight_m: Option<f64>,
    pub along_rate: Rate,
    pub straight_rate: Rate,
    /// When the vehicle reached how far along the route, over the last `PACE_WINDOW`.
    pub trail: Vec<(DateTime<Utc>, f64)>,
    /// How the latest ETA was made.
    pub basis: Option<Basis>,
}

/// Progress and elapsed time, each step discounted by the time since it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rate {
    pub metres: f64,
    pub seconds: f64,
}

impl Rate {
    fn add(&mut self, metres: f64, seconds: f64) {
        let keep = (-seconds / MEMORY_S).exp();
        self.metres = self.metres * keep + metres;
        self.seconds = self.seconds * keep + seconds;
    }

    fn mps(&self) -> Option<f64> {
        (self.seconds >= MIN_OBSERVED_S && self.metres > 0.0).then(|| self.metres / self.seconds)
    }
}

/// How an ETA was made: the distance left, measured how, and the speed it was divided by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = EtaBasis)]
pub struct Basis {
    pub method: Method,
    /// Distance left to within the arrival radius of the destination (where the shipment
    /// arrives), metres.
    pub remaining_m: f64,
    /// Progress per second, stops included.
    pub speed_mps: f64,
    /// About how many minutes of travel that speed averages; with `earlier_trips`, over how many
    /// minutes the pace against them was judged (none: no pace yet, theirs).
    pub over_min: f64,
    /// With `earlier_trips`: how many, and this trip's time over theirs lately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub trips: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub pace: Option<f64>,
    /// The same in a sentence.
    pub summary: String,
}

/// How an ETA was made: `route_progress`, distance left along the planned route from the point
/// reached, over the speed along it; `earlier_trips`, that distance timed as earlier trips on the
/// same planned route took it, scaled by `pace`; `straight_line`, straight-line distance to the
/// destination (no planned route, one of only two points, not yet on it, or off it for long).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Distance left along the planned route, speed along it.
    RouteProgress,
    /// Distance left along the planned route, timed as earlier trips on it took to cover it,
    /// at the pace this one has kept against them lately.
    EarlierTrips,
    /// Straight-line distance to the destination, speed at which it shrinks: no planned route
    /// (or only its two ends), off it for long, or not yet on it.
    StraightLine,
}

impl Progress {
    /// Follows the vehicle to `here` at `t` and gives the ETA, if there is enough to go on: when
    /// it will be within `arrive_within_m` of `destination`, where the shipment arrives (the
    /// distance left stops there). Fixes must come in time order; one not after the latest is
    /// ignored.
    pub fn observe(
        &mut self,
        route: Option<&Route>,
        destination: (f64, f64),
        arrive_within_m: f64,
        t: DateTime<Utc>,
        here: (f64, f64),
    ) -> Option<DateTime<Utc>> {
        let elapsed = match self.at {
            Some(at) if t <= at => return None,
            Some(at) => Some((t - at).num_milliseconds() as f64 / 1000.0),
            None => None,
        };
        // A route of only its two ends says no more than the straight line.
        let route = route.filter(|r| r.vertex_count() > 2);
        let moved_along = route.and_then(|r| self.follow(r, t, here));
        let straight = metres(here, destination);
        self.set_off(t, here);
        if let (Some(seconds), true) = (elapsed, self.departed) {
            let closer = self.straight_m.map_or(0.0, |before| before - straight);
            self.straight_rate.add(closer, seconds);
        }
        if let Some(moved) = moved_along {
            if let (Some(from), true) = (self.along_from.or(self.at), self.departed) {
                let seconds = (t - from).num_milliseconds() as f64 / 1000.0;
                self.along_rate.add(moved, seconds);
            }
            self.along_from = self.departed.then_some(t);
        }
        self.at = Some(t);
        self.straight_m = Some(straight);
        if let (Some(along), true) = (self.along, self.departed) {
            if self
                .trail
                .last()
                .is_none_or(|(at, _)| t - *at >= TRAIL_STEP)
            {
                self.trail.push((t, along));
            }
            let keep_from = self
                .trail
                .iter()
                .rposition(|(at, _)| t - *at >= PACE_WINDOW)
                .unwrap_or(0);
            self.trail.drain(..keep_from);
        }
        let on_route = match (route, self.along) {
            (Some(r), Some(along)) if self.off_route_since.is_none_or(|s| t - s < LOST) => {
                Some((r.length_m() - arrive_within_m - along).max(0.0))
            }
            _ => None,
        };
        if let (Some(left), Some(along), Some(history)) =
            (on_route, self.along, route.and_then(|r| r.history()))
        {
            if let Some(eta) = self.timed_by(history, along, left, t) {
                return Some(eta);
            }
        }
        let (method, remaining, rate) = match on_route {
            Some(left) => (Method::RouteProgress, left, self.along_rate),
            None => (
                Method::StraightLine,
                (straight - arrive_within_m).max(0.0),
                self.straight_rate,
            ),
        };
        let speed = rate.mps()?;
        let eta = Duration::try_milliseconds((remaining / speed * 1000.0) as i64)
            .filter(|d| *d <= LONGEST)?;
        let (speed_mps, over_min) = (
            (speed * 100.0).round() / 100.0,
            (rate.seconds / 6.0).round() / 10.0,
        );
        let measure = match method {
            Method::StraightLine => "in a straight line",
            _ => "along the planned route",
        };
        self.basis = Some(Basis {
            method,
            remaining_m: remaining.round(),
            speed_mps,
            over_min,
            trips: None,
            pace: None,
            summary: format!(
                "{:.1} km left {measure} at {speed_mps} m/s, the average progress over about \
                 {over_min} min, stops included",
                remaining / 1000.0
            ),
        });
        Some(t + eta)
    }

    /// The time earlier trips took from `along` to the end, scaled by this trip's pace against
    /// them over its latest stretch (`over_min` in the basis: how long it took this trip).
    fn timed_by(
        &mut self,
        history: &History,
        along: f64,
        left: f64,
        t: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let (usual, trips) = history.seconds_between(along, along + left)?;
        // Over the longest of the latest stretches that earlier trips timed; none yet, theirs.
        let (pace, over_s) = self
            .trail
            .iter()
            .filter(|(_, then)| *then < along)
            .find_map(|(at, then)| {
                let (took, _) = history.seconds_between(*then, along)?;
                let now = (t - *at).num_milliseconds() as f64 / 1000.0;
                let pace = (now + PACE_PRIOR_S) / (took + PACE_PRIOR_S);
                Some((pace.clamp(PACE_BOUNDS.0, PACE_BOUNDS.1), now))
            })
            .unwrap_or((1.0, 0.0));
        let eta =
            Duration::try_milliseconds((usual * pace * 1000.0) as i64).filter(|d| *d <= LONGEST)?;
        let pace = (pace * 100.0).round() / 100.0;
        let speed_mps = ((left / (usual * pace).max(1.0)) * 100.0).round() / 100.0;
        let over_min = (over_s / 6.0).round() / 10.0;
        self.basis = Some(Basis {
            method: Method::EarlierTrips,
            remaining_m: left.round(),
            speed_mps,
            over_min,
            trips: Some(trips),
            pace: Some(pace),
            summary: format!(
                "{:.1} km left along the planned route, {:.0} min as {trips} earlier trips took \
                 it, times {pace} for the pace kept against them over the last {over_min} min",
                left / 1000.0,
                usual / 60.0,
            ),
        });
        Some(t + eta)
    }

    /// Follows the vehicle setting off (again, after standing still longer than it had
    /// travelled: the speed then starts afresh); if it did at this fix, gives since when it had
    /// been standing where it set off from.
    fn set_off(&mut self, t: DateTime<Utc>, here: (f64, f64)) -> Option<DateTime<Utc>> {
        if !self.departed {
            let start = *self.start.get_or_insert(here);
            let (_, stood) = *self.still.get_or_insert((start, t));
            if metres(start, here) <= DEPART_M {
                return None;
            }
            self.departed = true;
            self.departed_at = Some(self.at.unwrap_or(t));
            self.still = Some((here, t));
            return Some(stood);
        }
        let (place, since) = *self.still.get_or_insert((here, t));
        if metres(place, here) > STILL_M {
            self.still = Some((here, t));
        } else if let Some(departed_at) = self.departed_at {
            if t - since >= STILL && t - since > since - departed_at {
                *self = Progress {
                    start: Some(place),
                    along: self.along,
                    matched_at: self.matched_at,
                    off_route_since: self.off_route_since,
                    straight_m: self.straight_m,
                    basis: self.basis.take(),
                    at: self.at,
                    still: Some((place, since)),
                    ..Progress::default()
                };
            }
        }
        None
    }

    /// Matches `here` on the route ahead of the point reached; gives how far that moved it,
    /// none if `here` is off the route.
    fn follow(&mut self, route: &Route, t: DateTime<Utc>, here: (f64, f64)) -> Option<f64> {
        let (from, to) = match (self.along, self.matched_at) {
            (Some(along), Some(at)) => {
                let since = (t - at).num_milliseconds() as f64 / 1000.0;
                (along - BEHIND_M, along + AHEAD_M + FASTEST_MPS * since)
            }
            _ => (0.0, route.length_m()),
        };
        let (distance, at) = route.locate_between(here.0, here.1, from, to, TIE_M);
        if distance > ON_ROUTE_M {
            self.off_route_since.get_or_insert(t);
            return None;
        }
        self.off_route_since = None;
        self.matched_at = Some(t);
        let before = self.along.unwrap_or(at);
        let reached = before.max(at);
        self.along = Some(reached);
        Some(reached - before)
    }
}

/// One trip's fixes: when, and where (latitude, longitude).
pub type Fixes = [(DateTime<Utc>, (f64, f64))];

/// How long earlier trips on a planned route took along it: for each, the seconds since it
/// set off at which it first reached each distance along the route.
#[derive(Debug, Default)]
pub struct History {
    trips: Vec<Vec<(f64, f64)>>,
}

impl History {
    /// From the fixes of earlier trips (in time order), each followed along `route` as a
    /// shipment's progress is, its wait before setting off left out; trips that never got onto
    /// it teach nothing.
    pub fn learn<'a>(route: &Route, trips: impl IntoIterator<Item = &'a Fixes>) -> History {
        let trips = trips
            .into_iter()
            .filter_map(|fixes| {
                let (t0, _) = fixes.first()?;
                let mut progress = Progress::default();
                let mut reached: Vec<(f64, f64)> = Vec::new();
                let since_t0 = |t: DateTime<Utc>| (t - *t0).num_milliseconds() as f64 / 1000.0;
                // Seconds of standing before setting off (at the start, or after only moving
                // up) left out so far, and those elapsed at the previous fix.
                let (mut waited, mut previous) = (0.0, 0.0);
                for (t, here) in fixes {
                    progress.follow(route, *t, *here);
                    if let Some(stood) = progress.set_off(*t, *here) {
                        // Whatever it reached while standing, it reached when it stopped.
                        let stopped = since_t0(stood) - waited;
                        reached.iter_mut().for_each(|(_, s)| *s = s.min(stopped));
                        waited += previous - since_t0(stood);
                    }
                    progress.at = Some(*t);
                    previous = since_t0(*t);
                    if let Some(along) = progress.along {
                        if reached.last().is_none_or(|(a, _)| along > *a) {
                            reached.push((along, previous - waited));
                        }
                    }
                }
                (reached.len() >= 2).then_some(reached)
            })
            .collect();
        History { trips }
    }

    pub fn is_empty(&self) -> bool {
        self.trips.is_empty()
    }

    /// The median time earlier trips took from `from` to `to` metres along the route, among
    /// those that covered both, and how many did.
    fn seconds_between(&self, from: f64, to: f64) -> Option<(f64, usize)> {
        let mut took: Vec<f64> = self
            .trips
            .iter()
            .filter_map(|trip| Some(reached_at(trip, to)? - reached_at(trip, from)?))
            .collect();
        took.sort_by(f64::total_cmp);
        let n = took.len();
        (n > 0).then(|| ((took[(n - 1) / 2] + took[n / 2]) / 2.0, n))
    }
}

/// When a trip first reached `along`, between the points it was seen at.
fn reached_at(trip: &[(f64, f64)], along: f64) -> Option<f64> {
    let (first, last) = (trip.first()?, trip.last()?);
    if along < first.0 || along > last.0 + END_SLACK_M {
        return None;
    }
    let along = along.min(last.0);
    let i = trip
        .partition_point(|(a, _)| *a < along)
        .min(trip.len() - 1);
    if i == 0 {
        return Some(first.1);
    }
    let ((a0, s0), (a1, s1)) = (trip[i - 1], trip[i]);
    let f = ((along - a0) / (a1 - a0)).clamp(0.0, 1.0);
    Some(s0 + f * (s1 - s0))
}

#[cfg(test)]
mod tests;
