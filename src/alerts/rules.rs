//! The position-driven rules: what one accepted, current position does to a vehicle's rule
//! state, and which alerts it raises or clears. Pure: the writer supplies the state, the
//! settings, the geofences and the shipment, and stores what comes out in the same transaction
//! as the position. (Silence and lateness without traffic are the clock's, in `clock.rs`.)
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    eta::Progress,
    fence_state::{self, FenceState, Mark, Pending},
    fences::OrgFences,
    route::metres,
    route::Route,
    AlertSettings, Rule,
};
use crate::tracking::position::{LastFix, Position};

/// A stored ETA is rewritten only when it moved by this much, which spares a shipment update per
/// position.
const ETA_STEP: Duration = Duration::seconds(30);

/// What the rules remember about one vehicle, stored as `vehicles.alert_state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleState {
    /// The geofences the vehicle is inside, or crossing into or out of.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fences: BTreeMap<i64, FenceState>,
    /// The last fix that decided for geofences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence_fix: Option<Mark>,
    /// Geofences the vehicle was inside, as state stored before `fences` has it; moved there by
    /// the next position.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    inside: BTreeSet<i64>,
    /// Likewise, geofences whose boundary it was crossing, and since when.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    crossing: BTreeMap<i64, DateTime<Utc>>,
    pub overspeed: Option<Episode>,
    pub stop: Option<Stop>,
    pub off_route: Option<Episode>,
    /// The open `silent` alert, which the next position clears.
    pub silent: Option<i64>,
    /// The shipment the fields below belong to; another shipment starts them afresh.
    pub shipment: Option<i64>,
    pub late: bool,
    /// The ETA last stored on the shipment.
    pub eta: Option<DateTime<Utc>>,
    /// The shipment's progress, which the ETA is made from, and how it was made.
    pub progress: Progress,
}

impl RuleState {
    /// Moves geofence state stored before `fences` into it. A visit stored that way has no
    /// start: its dwell time counts from the first position judged now.
    fn adopt_stored_fences(&mut self) {
        for id in std::mem::take(&mut self.inside) {
            self.fences.entry(id).or_default().inside = true;
        }
        for (id, since) in std::mem::take(&mut self.crossing) {
            self.fences.entry(id).or_default().pending = Some(Pending {
                since,
                from: None,
                way_m: 0.0,
            });
        }
    }

    /// Starts the shipment-scoped fields afresh when the vehicle carries another shipment; the
    /// alerts still open from the trip before, which end with it ([`RuleState::end_trip`]).
    #[must_use = "the alerts of the trip before are to be cleared"]
    pub fn start_trip(&mut self, shipment_id: i64) -> Vec<i64> {
        if self.shipment == Some(shipment_id) {
            return Vec::new();
        }
        let open = self.end_trip();
        self.shipment = Some(shipment_id);
        self.late = false;
        self.eta = None;
        self.progress = Progress::default();
        open
    }

    /// Ends the trip's episodes (a stop, a stretch off the route): their open alerts, which the
    /// caller clears. They were about that trip, and nothing of it will clear them later.
    #[must_use = "the trip's open alerts are to be cleared"]
    pub fn end_trip(&mut self) -> Vec<i64> {
        let stop = self.stop.take().and_then(|s| s.alert);
        let off_route = self.off_route.take().and_then(|e| e.alert);
        stop.into_iter().chain(off_route).collect()
    }
}

/// The clears of the alerts a trip left open when it ended at `at`.
pub fn trip_ended(
    open: Vec<i64>,
    at: DateTime<Utc>,
    next_id: &mut impl FnMut() -> i64,
) -> impl Iterator<Item = Change> + '_ {
    open.into_iter().map(move |id| Change::Clear {
        id,
        seq: next_id(),
        at,
        details: json!({"trip_ended_at": at}),
    })
}

/// A condition that has held since `since`; `alert` once it lasted long enough to raise one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub since: DateTime<Utc>,
    #[serde(default)]
    pub peak: f64,
    pub alert: Option<i64>,
}

/// Where the vehicle came to a standstill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    pub since: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub alert: Option<i64>,
}

/// The shipment a vehicle is carrying, as the rules need it.
#[derive(Debug, Clone)]
pub struct Trip {
    pub id: i64,
    /// In transit (or starting with this position): stop, off-route, arrival and ETA apply.
    pub in_transit: bool,
    pub destination: (f64, f64),
    pub due_at: Option<DateTime<Utc>>,
    pub route: Option<Arc<Route>>,
}

/// An alert a position raises (its id is its seq) or a change to an open one.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Raise {
        id: i64,
        rule: Rule,
        geofence_id: Option<i64>,
        details: Value,
    },
    /// The condition ended; `seq` is the event's.
    Clear {
        id: i64,
        seq: i64,
        at: DateTime<Utc>,
        details: Value,
    },
}

/// What one position did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub changes: Vec<Change>,
    pub arrived: bool,
    /// A new ETA to store on the shipment.
    pub eta: Option<DateTime<Utc>>,
}

pub struct Context<'a> {
    pub settings: &'a AlertSettings,
    pub fences: &'a OrgFences,
    pub trip: Option<&'a Trip>,
    /// The vehicle's position before this one.
    pub previous: Option<&'a LastFix>,
}

/// Applies the rules to `p`, the vehicle's new current position. `next_id` hands out the seq of
/// each alert raised.
pub fn evaluate(
    state: &mut RuleState,
    cx: &Context<'_>,
    p: &Position,
    next_id: &mut impl FnMut() -> i64,
) -> Outcome {
    let mut out = Outcome::default();
    let t = p.recorded_at;
    let here = (p.lat, p.lon);
    let speed = p.speed.map(f64::from).or_else(|| {
        let prev = cx.previous?;
        let dt = (t - prev.recorded_at).num_milliseconds() as f64 / 1000.0;
        (dt > 0.0).then(|| metres((prev.lat, prev.lon), here) / dt)
    });
    if let Some(id) = state.silent.take() {
        out.changes.push(Change::Clear {
            id,
            seq: next_id(),
            at: t,
            details: json!({"reporting_again_at": t}),
        });
    }
    geofences(state, cx, p, next_id, &mut out);
    overspeed(state, cx.settings, t, speed, next_id, &mut out);
    let Some(trip) = cx.trip.filter(|t| t.in_transit) else {
        return out;
    };
    let open = state.start_trip(trip.id);
    out.changes.extend(trip_ended(open, t, next_id));
    stopped(state, cx.settings, t, here, next_id, &mut out);
    let from_route = trip.route.as_ref().map(|r| r.locate(p.lat, p.lon).0);
    if let (Some(distance), Some(limit)) = (from_route, cx.settings.off_route_m) {
        off_route(state, cx.settings, t, distance, limit, next_id, &mut out);
    }
    let to_destination = metres(here, trip.destination);
    if cx
        .settings
        .arrival_radius_m
        .is_some_and(|r| to_destination <= r)
    {
        out.arrived = true;
        out.changes.push(Change::Raise {
            id: next_id(),
            rule: Rule::Arrived,
            geofence_id: None,
            details: json!({"distance_m": to_destination.round()}),
        });
        let open = state.end_trip();
        out.changes.extend(trip_ended(open, t, next_id));
        state.eta = Some(t);
        out.eta = Some(t);
        return out;
    }
    let arrive_within = cx.settings.arrival_radius_m.unwrap_or(0.0);
    let progress = state.progress.observe(
        trip.route.as_deref(),
        trip.destination,
        arrive_within,
        t,
        here,
    );
    if let Some(eta) = progress {
        if state.eta.is_none_or(|old| (eta - old).abs() >= ETA_STEP) {
            state.eta = Some(eta);
            out.eta = Some(eta);
        }
        if let Some(due) = trip.due_at.filter(|due| eta > *due && !state.late) {
            state.late = true;
            out.changes.push(Change::Raise {
                id: next_id(),
                rule: Rule::Late,
                geofence_id: None,
                details: json!({"eta": eta, "due_at": due}),
            });
        }
    }
    out
}

/// Enter, exit and dwell for every geofence the fix or the line from the last deciding fix
/// comes near, and for those the vehicle is already in or crossing (`fence_state` decides).
fn geofences(
    state: &mut RuleState,
    cx: &Context<'_>,
    p: &Position,
    next_id: &mut impl FnMut() -> i64,
    out: &mut Outcome,
) {
    state.adopt_stored_fences();
    let t = p.recorded_at;
    let fix = Mark::new(t, p.lat, p.lon, p.accuracy.map(f64::from))
        .filter(|fix| fix.follows(state.fence_fix.as_ref()));
    if let Some(fix) = fix {
        let last = state.fence_fix.replace(fix);
        // Only a line that counts as evidence widens the search: after a long gap the fix is
        // judged on its own, and a box spanning the gap would only measure geofences far away.
        let from = fix
            .line_from(last.as_ref())
            .map_or((fix.lat, fix.lon), |a| (a.lat, a.lon));
        let mut ids: BTreeSet<i64> = state.fences.keys().copied().collect();
        ids.extend(
            cx.fences
                .near(from, (fix.lat, fix.lon))
                .filter(|f| f.applies_to(p.vehicle_id, p.shipment_id))
                .map(|f| f.id),
        );
        for id in ids {
            let Some(fence) = cx.fences.get(id) else {
                // Deleted: forgotten without an exit, and its dwell is over.
                if let Some(alert) = state.fences.remove(&id).and_then(|f| f.dwell) {
                    out.changes.push(Change::Clear {
                        id: alert,
                        seq: next_id(),
                        at: t,
                        details: json!({"geofence_deleted": true}),
                    });
                }
                continue;
            };
            // A geofence that no longer applies to the vehicle is as if far away.
            let applies = fence.applies_to(p.vehicle_id, p.shipment_id);
            let depth = |lat, lon| {
                if applies {
                    fence.depth(lat, lon)
                } else {
                    f64::NEG_INFINITY
                }
            };
            let debounce = fence.debounce_s.unwrap_or(cx.settings.geofence_debounce_s);
            let fs = state.fences.entry(id).or_default();
            let crossings = fence_state::step(
                fs,
                last.as_ref(),
                &fix,
                Duration::seconds(debounce.into()),
                depth,
            );
            for c in crossings {
                out.changes.push(Change::Raise {
                    id: next_id(),
                    rule: if c.enter {
                        Rule::GeofenceEnter
                    } else {
                        Rule::GeofenceExit
                    },
                    geofence_id: Some(id),
                    details: json!({"geofence": fence.name, "crossed_at": c.at}),
                });
                let left = (!c.enter).then(|| fs.dwell.take()).flatten();
                if let Some(alert) = left {
                    out.changes.push(Change::Clear {
                        id: alert,
                        seq: next_id(),
                        at: c.at,
                        details: json!({"left_at": c.at}),
                    });
                }
            }
        }
    }
    // Dwell is judged on every position, a vague one too: the vehicle is counted inside.
    for (&id, fs) in state.fences.iter_mut().filter(|(_, f)| f.inside) {
        let since = *fs.since.get_or_insert(t);
        let Some(fence) = cx.fences.get(id) else {
            continue;
        };
        let Some(dwell_s) = fence.dwell_s.filter(|_| fs.dwell.is_none()) else {
            continue;
        };
        if t - since >= Duration::seconds(dwell_s.into()) {
            let alert = next_id();
            fs.dwell = Some(alert);
            out.changes.push(Change::Raise {
                id: alert,
                rule: Rule::GeofenceDwell,
                geofence_id: Some(id),
                details: json!({
                    "geofence": fence.name,
                    "since": since,
                    "minutes": (t - since).num_minutes(),
                }),
            });
        }
    }
    state.fences.retain(|_, f| !f.is_idle());
}

/// One kind of episode: a value (a speed, a distance from the route) above a limit.
struct Watch {
    rule: Rule,
    limit: f64,
    /// How long the value must stay above the limit before the alert is raised.
    min: Duration,
}

impl Watch {
    /// Follows the episode in `slot` with the value `value` at `t`: it starts when the value
    /// first exceeds the limit, raises one alert once it has lasted `min` (with `raised`'s
    /// details), keeps its peak, and ends (clearing the alert, with `cleared`'s details) when
    /// the value is back at or below the limit.
    #[expect(
        clippy::too_many_arguments,
        reason = "the episode, the time and value, and where the results go"
    )]
    fn follow(
        &self,
        slot: &mut Option<Episode>,
        t: DateTime<Utc>,
        value: f64,
        next_id: &mut impl FnMut() -> i64,
        out: &mut Outcome,
        raised: impl FnOnce(&Episode) -> Value,
        cleared: impl FnOnce(&Episode) -> Value,
    ) {
        if value <= self.limit {
            if let Some(episode) = slot.take() {
                if let Some(id) = episode.alert {
                    out.changes.push(Change::Clear {
                        id,
                        seq: next_id(),
                        at: t,
                        details: cleared(&episode),
                    });
                }
            }
            return;
        }
        let episode = slot.get_or_insert(Episode {
            since: t,
            peak: value,
            alert: None,
        });
        episode.peak = episode.peak.max(value);
        if episode.alert.is_none() && t - episode.since >= self.min {
            let id = next_id();
            episode.alert = Some(id);
            out.changes.push(Change::Raise {
                id,
                rule: self.rule,
                geofence_id: None,
                details: raised(episode),
            });
        }
    }
}

fn overspeed(
    state: &mut RuleState,
    settings: &AlertSettings,
    t: DateTime<Utc>,
    speed: Option<f64>,
    next_id: &mut impl FnMut() -> i64,
    out: &mut Outcome,
) {
    let (Some(limit), Some(speed)) = (settings.speed_limit_mps, speed) else {
        return;
    };
    let watch = Watch {
        rule: Rule::Overspeed,
        limit,
        min: Duration::seconds(settings.overspeed_min_s.into()),
    };
    watch.follow(
        &mut state.overspeed,
        t,
        speed,
        next_id,
        out,
        |e| json!({"limit_mps": limit, "peak_mps": e.peak, "since": e.since}),
        |e| json!({"peak_mps": e.peak, "seconds": (t - e.since).num_seconds()}),
    );
}

fn stopped(
    state: &mut RuleState,
    settings: &AlertSettings,
    t: DateTime<Utc>,
    here: (f64, f64),
    next_id: &mut impl FnMut() -> i64,
    out: &mut Outcome,
) {
    let Some(minutes) = settings.stopped_min else {
        return;
    };
    if let Some(stop) = &state.stop {
        if metres((stop.lat, stop.lon), here) > settings.stopped_radius_m {
            if let Some(id) = stop.alert {
                out.changes.push(Change::Clear {
                    id,
                    seq: next_id(),
                    at: t,
                    details: json!({"moving_again_at": t}),
                });
            }
            state.stop = None;
        }
    }
    let stop = state.stop.get_or_insert(Stop {
        since: t,
        lat: here.0,
        lon: here.1,
        alert: None,
    });
    if stop.alert.is_none() && t - stop.since >= Duration::minutes(minutes.into()) {
        let id = next_id();
        stop.alert = Some(id);
        out.changes.push(Change::Raise {
            id,
            rule: Rule::Stopped,
            geofence_id: None,
            details: json!({"since": stop.since, "minutes": (t - stop.since).num_minutes()}),
        });
    }
}

fn off_route(
    state: &mut RuleState,
    settings: &AlertSettings,
    t: DateTime<Utc>,
    distance: f64,
    limit: f64,
    next_id: &mut impl FnMut() -> i64,
    out: &mut Outcome,
) {
    let watch = Watch {
        rule: Rule::OffRoute,
        limit,
        min: Duration::seconds(settings.off_route_s.into()),
    };
    watch.follow(
        &mut state.off_route,
        t,
        distance,
        next_id,
        out,
        |e| json!({"distance_m": distance.round(), "limit_m": limit, "since": e.since}),
        |e| json!({"back_on_route_at": t, "farthest_m": e.peak.round()}),
    );
}

#[cfg(test)]
mod tests;
