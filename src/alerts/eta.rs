//! A shipment's ETA from the progress it makes: the distance left over the speed at which that
//! distance has been shrinking, measured over elapsed time (stops, traffic lights and slow
//! stretches included) rather than over the moments the vehicle was moving. Progress is measured
//! along the planned route, only ever forward, or as the straight-line distance to the
//! destination when there is no usable route; either way the speed is measured in the same
//! terms as the distance left, so a winding road or a detour is priced in. Pure: the rules keep
//! the state in the vehicle's rule state and start it afresh with each shipment.
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::route::{metres, Route};

/// How far back the speed looks: progress this long ago weighs 1/e as much as the latest, so the
/// speed is roughly the average of the last ten minutes, or of the whole trip while it is shorter.
const MEMORY_S: f64 = 600.0;
/// No ETA before the vehicle has been on its way this long: one fix-to-fix step says nothing.
const MIN_OBSERVED_S: f64 = 60.0;
/// Moving this far from where the shipment's first fix was is setting off; the wait before it
/// does not count towards the speed.
const DEPART_M: f64 = 100.0;
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
/// Longest ETA given, from the fix: beyond it the vehicle is as good as standing still.
const LONGEST: Duration = Duration::days(2);

/// What the ETA of a shipment remembers between positions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// The latest fix's time.
    pub at: Option<DateTime<Utc>>,
    /// Where the shipment's first fix was, until the vehicle sets off from there.
    pub start: Option<(f64, f64)>,
    pub departed: bool,
    /// Metres along the planned route reached, and when a fix was last on the route.
    pub along: Option<f64>,
    pub matched_at: Option<DateTime<Utc>>,
    /// Since when the fixes are off the planned route.
    pub off_route_since: Option<DateTime<Utc>>,
    /// The straight-line distance to the destination at the latest fix.
    pub straight_m: Option<f64>,
    pub along_rate: Rate,
    pub straight_rate: Rate,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Basis {
    pub method: Method,
    pub remaining_m: f64,
    /// Progress per second, stops included.
    pub speed_mps: f64,
    /// About how many minutes of travel that speed averages.
    pub over_min: f64,
    /// The same in a sentence.
    pub summary: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Distance left along the planned route, speed along it.
    RouteProgress,
    /// Straight-line distance to the destination, speed at which it shrinks: no planned route
    /// (or only its two ends), off it for long, or not yet on it.
    StraightLine,
}

impl Progress {
    /// Follows the vehicle to `here` at `t` and gives the ETA, if there is enough to go on.
    /// Fixes must come in time order; one not after the latest is ignored.
    pub fn observe(
        &mut self,
        route: Option<&Route>,
        destination: (f64, f64),
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
        let moved_along = route.map_or(0.0, |r| self.follow(r, t, here));
        let straight = metres(here, destination);
        let start = *self.start.get_or_insert(here);
        if !self.departed && metres(start, here) > DEPART_M {
            self.departed = true;
        }
        if let (Some(seconds), true) = (elapsed, self.departed) {
            self.along_rate.add(moved_along, seconds);
            let closer = self.straight_m.map_or(0.0, |before| before - straight);
            self.straight_rate.add(closer, seconds);
        }
        self.at = Some(t);
        self.straight_m = Some(straight);
        let on_route = match (route, self.along) {
            (Some(r), Some(along)) if self.off_route_since.is_none_or(|s| t - s < LOST) => {
                Some((r.length_m() - along).max(0.0))
            }
            _ => None,
        };
        let (method, remaining, rate) = match on_route {
            Some(left) => (Method::RouteProgress, left, self.along_rate),
            None => (Method::StraightLine, straight, self.straight_rate),
        };
        let speed = rate.mps()?;
        let eta = Duration::try_milliseconds((remaining / speed * 1000.0) as i64)
            .filter(|d| *d <= LONGEST)?;
        let (speed_mps, over_min) = (
            (speed * 100.0).round() / 100.0,
            (rate.seconds / 6.0).round() / 10.0,
        );
        let measure = match method {
            Method::RouteProgress => "along the planned route",
            Method::StraightLine => "in a straight line",
        };
        self.basis = Some(Basis {
            method,
            remaining_m: remaining.round(),
            speed_mps,
            over_min,
            summary: format!(
                "{:.1} km left {measure} at {speed_mps} m/s, the average progress over about \
                 {over_min} min, stops included",
                remaining / 1000.0
            ),
        });
        Some(t + eta)
    }

    /// Matches `here` on the route ahead of the point reached; gives how far that moved it.
    fn follow(&mut self, route: &Route, t: DateTime<Utc>, here: (f64, f64)) -> f64 {
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
            return 0.0;
        }
        self.off_route_since = None;
        self.matched_at = Some(t);
        let before = self.along.unwrap_or(at);
        let reached = before.max(at);
        self.along = Some(reached);
        reached - before
    }
}

#[cfg(test)]
mod tests;
