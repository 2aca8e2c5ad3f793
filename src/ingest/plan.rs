//! The writer's decisions, as a pure function of a batch and of what was read under the seq
//! lock: which fixes are re-sends, which are marked and why, which is current and which late,
//! which shipment each joins, what the rules raise, and what changes for each shipment. The
//! writer ([`super::writer`]) reads, calls [`plan`], and writes what it returns.
use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};

use super::{
    attribution::{shipment_for, Window},
    filter::{at_null_island, judge, judge_late, DeviceClock, FilterSettings, CLOCK_TOLERANCE_S},
    writer::WriteOutcome,
};
use crate::{
    alerts::{self, AlertSettings, Change, Context, Given, OrgFences, RuleState, Subject, Trip},
    tracking::position::{FilterReason, LastFix, NewPosition, Position},
};

/// One request of the batch.
pub(super) struct Incoming<'a> {
    pub(super) vehicle_id: i64,
    pub(super) organisation_id: i64,
    /// The shipment the sender says the fixes were taken for (see [`shipment_for`]).
    pub(super) shipment: Option<i64>,
    pub(super) positions: &'a [NewPosition],
}

/// The good fixes stored just before and just after a late fix's time, by (vehicle, time).
pub(super) type Neighbours = HashMap<(i64, DateTime<Utc>), (Option<LastFix>, Option<LastFix>)>;

/// What was read under the lock, besides each vehicle's state.
pub(super) struct Known<'a> {
    /// The seqs of fixes stored already, by (vehicle, time): re-sends.
    pub(super) stored: &'a HashMap<(i64, DateTime<Utc>), i64>,
    /// For fixes older than their vehicle's current position.
    pub(super) neighbours: &'a Neighbours,
    /// Each organisation's geofences.
    pub(super) fences: &'a HashMap<i64, Arc<OrgFences>>,
    /// When the batch arrived: every row's `received_at`.
    pub(super) now: DateTime<Utc>,
}

/// What the batch does.
pub(super) struct Planned {
    pub(super) rows: Vec<Row>,
    /// One per request, in order.
    pub(super) outcomes: Vec<WriteOutcome>,
    /// What the rules raised and cleared, for [`alerts::apply`].
    pub(super) changes: Vec<(Subject, Change)>,
}

/// Per-vehicle state read under the lock: its current position, its shipments' windows, its
/// organisation's filter and alert settings, and its rule state.
pub(super) struct VehicleState {
    pub(super) organisation_id: i64,
    /// The current position, its time read as its arrival's when its clock ran ahead.
    pub(super) last: Option<LastFix>,
    /// What the device's clock usually shows.
    pub(super) clock: DeviceClock,
    pub(super) filter: FilterSettings,
    pub(super) alert_settings: AlertSettings,
    pub(super) geofence_version: i64,
    pub(super) rules: RuleState,
    /// The shipment the vehicle carries now (planned or in transit).
    pub(super) active: Option<i64>,
    /// The time windows of the active shipment and of the ended ones this batch's fixes may
    /// belong to (see [`super::attribution`]).
    pub(super) windows: Vec<Window>,
    /// When the vehicle's latest ended shipment ended: a fix older than this may belong to it.
    pub(super) last_ended_at: Option<DateTime<Utc>>,
    /// When each shipment in `windows` started (its earliest fix), if it has.
    pub(super) started: HashMap<i64, Option<DateTime<Utc>>>,
    pub(super) trip: Option<Trip>,
    /// The active shipment has a planned route (loaded into `trip` from the route cache).
    pub(super) has_route: bool,
    pub(super) new_current: Option<Position>,
    /// What the batch does to the shipments its fixes joined: starts them (or moves their start
    /// earlier), and makes the active one arrive or gives it a new ETA.
    pub(super) shipment_changes: HashMap<i64, ShipmentChange>,
}

impl VehicleState {
    pub(super) fn blank(organisation_id: i64) -> Self {
        VehicleState {
            organisation_id,
            last: None,
            clock: DeviceClock::default(),
            filter: FilterSettings::default(),
            alert_settings: AlertSettings::default(),
            geofence_version: 0,
            rules: RuleState::default(),
            active: None,
            windows: Vec::new(),
            last_ended_at: None,
            started: HashMap::new(),
            trip: None,
            has_route: false,
            new_current: None,
            shipment_changes: HashMap::new(),
        }
    }

    fn change(&mut self, id: i64) -> &mut ShipmentChange {
        self.shipment_changes.entry(id).or_insert(ShipmentChange {
            id,
            first_at: None,
            arrived_at: None,
            etas: Vec::new(),
        })
    }

    /// A fix at `t` that passed the filter joined shipment `id`: a planned shipment starts with
    /// it, and one that started later starts at `t` instead.
    fn joined(&mut self, id: i64, t: DateTime<Utc>) {
        let started = self.started.entry(id).or_default();
        if started.is_none_or(|s| t < s) {
            *started = Some(t);
            let change = self.change(id);
            change.first_at = Some(change.first_at.map_or(t, |f| f.min(t)));
        }
    }

    /// The active shipment arrived with the fix at `t`: later fixes are not its own.
    fn arrived(&mut self, t: DateTime<Utc>) {
        if let Some(active) = self.active.take() {
            self.change(active).arrived_at = Some(t);
            for w in self.windows.iter_mut().filter(|w| w.shipment_id == active) {
                w.until = Some(t);
            }
        }
        self.trip = None;
    }
}

pub(super) struct ShipmentChange {
    pub(super) id: i64,
    /// The earliest fix that joined it, when that is earlier than its start (or it had none).
    pub(super) first_at: Option<DateTime<Utc>>,
    pub(super) arrived_at: Option<DateTime<Utc>>,
    /// Each ETA the batch gave it, in time order: the last is its new `eta`.
    pub(super) etas: Vec<Given>,
}

impl ShipmentChange {
    pub(super) fn eta(&self) -> Option<DateTime<Utc>> {
        self.etas.last().map(|g| g.eta)
    }
}

/// One row to insert.
pub(super) struct Row {
    pub(super) organisation_id: i64,
    pub(super) seq: i64,
    pub(super) position: Position,
    pub(super) filter: Option<FilterReason>,
    pub(super) attributes: Option<String>,
}

/// Decides the batch. `vehicles` holds each vehicle's state and is left as the batch leaves it
/// (current position, rule state, clock, shipment changes); `next_seq` is the last seq handed
/// out, and is advanced for every new row and every alert event.
pub(super) fn plan(
    batch: &[Incoming],
    known: &Known,
    vehicles: &mut HashMap<i64, VehicleState>,
    next_seq: &mut i64,
) -> Planned {
    let timelines = timelines(batch);
    let mut changes: Vec<(Subject, Change)> = Vec::new();

    let mut seen: HashMap<(i64, DateTime<Utc>), i64> = HashMap::new();
    let mut rows = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        let vehicle_id = request.vehicle_id;
        let mut outcome = WriteOutcome {
            seqs: Vec::with_capacity(request.positions.len()),
            accepted: 0,
            duplicates: 0,
            filtered: 0,
        };
        for p in request.positions {
            let key = (vehicle_id, p.recorded_at);
            if let Some(seq) = known.stored.get(&key).or_else(|| seen.get(&key)) {
                outcome.seqs.push(*seq);
                outcome.duplicates += 1;
                continue;
            }
            *next_seq += 1;
            seen.insert(key, *next_seq);
            let state = vehicles
                .get_mut(&vehicle_id)
                .expect("every device's vehicle was read");
            let (filter, late) = judge_fix(p, vehicle_id, state, known, &timelines);
            let shipment_id = shipment_for(p.recorded_at, &state.windows, request.shipment);
            // The active shipment's own fix: the rules follow its trip and it may get an ETA.
            let on_trip = shipment_id.is_some() && shipment_id == state.active;
            let mut position = Position {
                vehicle_id,
                shipment_id,
                lat: p.lat,
                lon: p.lon,
                recorded_at: p.recorded_at,
                received_at: known.now,
                accuracy: p.accuracy.map(|v| v as f32),
                speed: p.speed.map(|v| v as f32),
                heading: p.heading.map(|v| v as f32),
                altitude: p.altitude.map(|v| v as f32),
                battery: p.battery.map(|v| v as f32),
                late,
                eta: None,
            };
            if let (Some(id), None) = (shipment_id, filter) {
                state.joined(id, p.recorded_at);
            }
            if filter.is_none() && !late {
                let outcome = alerts::evaluate(
                    &mut state.rules,
                    &Context {
                        settings: &state.alert_settings,
                        fences: &known.fences[&state.organisation_id],
                        trip: state.trip.as_ref().filter(|_| on_trip),
                        previous: state.last.as_ref(),
                    },
                    &position,
                    &mut || {
                        *next_seq += 1;
                        *next_seq
                    },
                );
                if let (true, Some(id)) = (on_trip, shipment_id) {
                    position.eta = state.rules.eta;
                    if let Some(eta) = outcome.eta {
                        // At arrival the ETA becomes the arrival itself, made by no method.
                        let method = (!outcome.arrived)
                            .then(|| state.rules.progress.basis.as_ref().map(|b| b.method))
                            .flatten();
                        state.change(id).etas.push(Given {
                            at: p.recorded_at,
                            eta,
                            method,
                        });
                    }
                }
                changes.extend(outcome.changes.into_iter().map(|c| {
                    let subject = Subject {
                        organisation_id: state.organisation_id,
                        vehicle_id,
                        shipment_id,
                        position: Some((p.recorded_at, p.lat, p.lon)),
                    };
                    (subject, c)
                }));
                if on_trip && outcome.arrived {
                    state.arrived(p.recorded_at);
                }
                state.last = Some(LastFix {
                    recorded_at: p.recorded_at,
                    lat: p.lat,
                    lon: p.lon,
                });
                state.new_current = Some(position.clone());
            }
            outcome.seqs.push(*next_seq);
            outcome.accepted += 1;
            if filter.is_some() {
                outcome.filtered += 1;
            }
            rows.push(Row {
                organisation_id: request.organisation_id,
                seq: *next_seq,
                position,
                filter,
                attributes: p
                    .attributes
                    .as_ref()
                    .map(|a| serde_json::Value::Object(a.clone()).to_string()),
            });
        }
        outcomes.push(outcome);
    }

    Planned {
        rows,
        outcomes,
        changes,
    }
}

/// The time a current position is compared with: when it was taken, unless its device stamped
/// it further ahead of its arrival than any clock may run ([`CLOCK_TOLERANCE_S`]); then when it
/// arrived, so that the next genuine fix takes the marker back at once.
pub(super) fn trusted_time(
    recorded_at: DateTime<Utc>,
    received_at: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    match received_at {
        Some(received)
            if (recorded_at - received).num_milliseconds() as f64 / 1000.0 > CLOCK_TOLERANCE_S =>
        {
            received
        }
        _ => recorded_at,
    }
}

/// Each vehicle's fixes in the batch that could be good, in time order: the neighbours a late
/// fix is judged against, besides the stored ones.
fn timelines(batch: &[Incoming]) -> HashMap<i64, Vec<LastFix>> {
    let mut lines: HashMap<i64, Vec<LastFix>> = HashMap::new();
    for request in batch {
        let line = lines.entry(request.vehicle_id).or_default();
        line.extend(
            request
                .positions
                .iter()
                .filter(|p| !at_null_island(p))
                .map(|p| LastFix {
                    recorded_at: p.recorded_at,
                    lat: p.lat,
                    lon: p.lon,
                }),
        );
    }
    for line in lines.values_mut() {
        line.sort_by_key(|f| f.recorded_at);
    }
    lines
}

/// Why a new fix is marked, if it is, and whether it is late (older than the current position).
/// A fix stamped ahead of its device's usual clock is `clock_ahead` and never current; a late fix
/// is judged against its neighbours in time, so a glitch inside a backlog is marked too.
fn judge_fix(
    p: &NewPosition,
    vehicle_id: i64,
    state: &mut VehicleState,
    known: &Known,
    timelines: &HashMap<i64, Vec<LastFix>>,
) -> (Option<FilterReason>, bool) {
    let offset_s = (p.recorded_at - known.now).num_milliseconds() as f64 / 1000.0;
    let ahead = state.clock.is_ahead(offset_s);
    state.clock.learn(offset_s);
    match judge(p, state.last.as_ref(), known.now, &state.filter) {
        None | Some(FilterReason::Jump) if ahead => return (Some(FilterReason::ClockAhead), false),
        Some(reason) => return (Some(reason), false),
        None => {}
    }
    let Some(last) = state.last.filter(|l| p.recorded_at < l.recorded_at) else {
        return (None, false);
    };
    let (stored_before, stored_after) = known
        .neighbours
        .get(&(vehicle_id, p.recorded_at))
        .copied()
        .unwrap_or_default();
    let line = timelines.get(&vehicle_id).map_or(&[][..], Vec::as_slice);
    let at = line.partition_point(|f| f.recorded_at < p.recorded_at);
    let batch_before = at.checked_sub(1).map(|i| line[i]);
    let batch_after = line[at..]
        .iter()
        .find(|f| f.recorded_at > p.recorded_at)
        .copied();
    let before = latest([stored_before, batch_before]);
    // The current position is a neighbour after it, even when the store read none.
    let after = earliest([stored_after, batch_after, Some(last)]);
    match judge_late(p, before.as_ref(), after.as_ref(), &state.filter) {
        Some(reason) => (Some(reason), false),
        None => (None, true),
    }
}

/// The latest of some fixes.
fn latest<const N: usize>(fixes: [Option<LastFix>; N]) -> Option<LastFix> {
    fixes.into_iter().flatten().max_by_key(|f| f.recorded_at)
}

/// The earliest of some fixes.
fn earliest<const N: usize>(fixes: [Option<LastFix>; N]) -> Option<LastFix> {
    fixes.into_iter().flatten().min_by_key(|f| f.recorded_at)
}

#[cfg(test)]
mod tests {
    //! The plan replayed on the real traces the simulator drives, with the faults real phones
    //! produce injected. The store is emulated from the rows the plan returned, exactly as the
    //! writer reads it: re-sends, the neighbours of late fixes, the current position.
    use chrono::Duration;
    use waymark_sim::tracks;

    use super::*;

    const VEHICLE: i64 = 1;
    const ORG: i64 = 1;

    /// One vehicle's store and state, fed batch by batch.
    struct Replay {
        state: VehicleState,
        rows: Vec<Row>,
        next_seq: i64,
        fences: HashMap<i64, Arc<OrgFences>>,
        /// The current position's time, after every batch.
        currents: Vec<DateTime<Utc>>,
    }

    impl Replay {
        fn new() -> Self {
            Replay {
                state: VehicleState::blank(ORG),
                rows: Vec::new(),
                next_seq: 0,
                fences: HashMap::from([(ORG, Arc::new(OrgFences::new(0, Vec::new())))]),
                currents: Vec::new(),
            }
        }

        /// The good stored fix just before or after `t`.
        fn neighbour(&self, t: DateTime<Utc>, before: bool) -> Option<LastFix> {
            let good = self.rows.iter().filter(|r| r.filter.is_none());
            let fix = |r: &Row| LastFix {
                recorded_at: r.position.recorded_at,
                lat: r.position.lat,
                lon: r.position.lon,
            };
            if before {
                good.filter(|r| r.position.recorded_at < t)
                    .max_by_key(|r| r.position.recorded_at)
                    .map(fix)
            } else {
                good.filter(|r| r.position.recorded_at > t)
                    .min_by_key(|r| r.position.recorded_at)
                    .map(fix)
            }
        }

        /// Posts `positions` as one request arriving at `now`.
        fn post(&mut self, positions: &[NewPosition], now: DateTime<Utc>) -> WriteOutcome {
            let stored: HashMap<(i64, DateTime<Utc>), i64> = self
                .rows
                .iter()
                .map(|r| ((VEHICLE, r.position.recorded_at), r.seq))
                .collect();
            let current = self.state.last.map(|l| l.recorded_at);
            let neighbours: Neighbours = positions
                .iter()
                .filter(|p| current.is_some_and(|c| p.recorded_at < c))
                .map(|p| {
                    let key = (VEHICLE, p.recorded_at);
                    let around = (
                        self.neighbour(p.recorded_at, true),
                        self.neighbour(p.recorded_at, false),
                    );
                    (key, around)
                })
                .collect();
            let mut vehicles = HashMap::from([(
                VEHICLE,
                std::mem::replace(&mut self.state, VehicleState::blank(ORG)),
            )]);
            let planned = plan(
                &[Incoming {
                    vehicle_id: VEHICLE,
                    organisation_id: ORG,
                    shipment: None,
                    positions,
                }],
                &Known {
                    stored: &stored,
                    neighbours: &neighbours,
                    fences: &self.fences,
                    now,
                },
                &mut vehicles,
                &mut self.next_seq,
            );
            let mut state = vehicles.remove(&VEHICLE).unwrap();
            // What the writer reads back next time: the current position at its trusted time.
            if let Some(p) = state.new_current.take() {
                state.last = Some(LastFix {
                    recorded_at: trusted_time(p.recorded_at, Some(p.received_at)),
                    lat: p.lat,
                    lon: p.lon,
                });
            }
            state.shipment_changes.clear();
            self.state = state;
            self.rows.extend(planned.rows);
            self.currents.extend(self.state.last.map(|l| l.recorded_at));
            planned.outcomes.into_iter().next().unwrap()
        }

        /// The track as drawn: the good fixes in time order.
        fn drawn(&self) -> Vec<&Position> {
            let mut good: Vec<&Position> = self
                .rows
                .iter()
                .filter(|r| r.filter.is_none())
                .map(|r| &r.position)
                .collect();
            good.sort_by_key(|p| p.recorded_at);
            good
        }

        fn reason(&self, t: DateTime<Utc>) -> Option<FilterReason> {
            self.rows
                .iter()
                .find(|r| r.position.recorded_at == t)
                .and_then(|r| r.filter)
        }
    }

    /// Every bundled trace's first trip as a phone reports it, at most `n` fixes, ending a minute
    /// ago (so none is in the future), with the trace's own speeds and a 5 m accuracy.
    fn traces(n: usize) -> Vec<(String, Vec<NewPosition>)> {
        let end = Utc::now() - Duration::minutes(1);
        tracks::fleet()
            .unwrap()
            .into_iter()
            .map(|v| {
                let trip = &v.trips[0];
                let fixes = &trip.fixes[..trip.fixes.len().min(n)];
                let shift = end - fixes[fixes.len() - 1].at;
                let positions = fixes
                    .iter()
                    .map(|f| NewPosition {
                        lat: f.point.lat,
                        lon: f.point.lon,
                        recorded_at: f.at + shift,
                        accuracy: Some(5.0),
                        speed: f.speed,
                        heading: f.heading,
                        altitude: f.altitude,
                        battery: None,
                        attributes: None,
                    })
                    .collect();
                (v.name, positions)
            })
            .collect()
    }

    /// `p` moved `km` north.
    fn displaced(p: &NewPosition, km: f64) -> NewPosition {
        NewPosition {
            lat: p.lat + km / 111.2,
            ..p.clone()
        }
    }

    /// Sent live: each fix alone, arriving `latency` after it was taken.
    fn live(replay: &mut Replay, fixes: &[NewPosition]) {
        for p in fixes {
            replay.post(
                std::slice::from_ref(p),
                p.recorded_at + Duration::seconds(2),
            );
        }
    }

    #[test]
    fn a_fix_stamped_minutes_ahead_never_holds_the_marker() {
        for (name, trace) in traces(400) {
            let mut replay = Replay::new();
            let k = trace.len() / 2;
            live(&mut replay, &trace[..k]);
            // One fix stamped 4 minutes ahead (inside the 5-minute `future` limit) and 4 km off.
            let mut ahead = displaced(&trace[k], 4.0);
            ahead.recorded_at += Duration::minutes(4);
            let arrived = trace[k].recorded_at + Duration::seconds(2);
            let outcome = replay.post(&[ahead.clone()], arrived);
            assert_eq!(outcome.filtered, 1, "{name}");
            assert_eq!(
                replay.reason(ahead.recorded_at),
                Some(FilterReason::ClockAhead),
                "{name}"
            );
            // The next genuine fix takes the marker at once, and so does every one after it.
            live(&mut replay, &trace[k + 1..]);
            let false_currents = replay
                .currents
                .iter()
                .filter(|t| !trace.iter().any(|p| p.recorded_at == **t))
                .count();
            assert_eq!(false_currents, 0, "{name}: a false current position");
            assert_eq!(
                replay.state.last.unwrap().recorded_at,
                trace.last().unwrap().recorded_at,
                "{name}"
            );
            assert!(
                replay.rows.iter().all(|r| !r.position.late),
                "{name}: a genuine fix was taken for late"
            );
        }
    }

    #[test]
    fn a_clock_that_really_runs_ahead_is_learnt_and_then_trusted() {
        for (name, trace) in traces(200) {
            let mut replay = Replay::new();
            // Every fix 3 minutes ahead of its arrival: a phone whose clock is simply wrong.
            for p in &trace {
                let mut ahead = p.clone();
                ahead.recorded_at += Duration::minutes(3);
                replay.post(&[ahead], p.recorded_at + Duration::seconds(2));
            }
            let marked = replay.rows.iter().filter(|r| r.filter.is_some()).count();
            assert!(marked > 0, "{name}: the first fixes are doubted");
            assert!(
                marked <= 20,
                "{name}: learnt within 20 fixes, took {marked}"
            );
            assert!(
                replay.rows[marked..].iter().all(|r| r.filter.is_none()),
                "{name}: once learnt, trusted"
            );
        }
    }

    #[test]
    fn a_glitch_inside_a_backlog_is_marked_and_never_drawn() {
        for (name, trace) in traces(300) {
            let mut replay = Replay::new();
            let n = trace.len();
            let (gap_from, gap_to) = (n / 3, n - 10);
            live(&mut replay, &trace[..gap_from]);
            // Through a tunnel: the phone queues a third of the trip and sends newer live ones
            // first.
            live(&mut replay, &trace[gap_to..]);
            let mut backlog: Vec<NewPosition> = trace[gap_from..gap_to].to_vec();
            let middle = backlog.len() / 2;
            let glitch = backlog[middle].recorded_at;
            // 3 km off, or farther where the trace's fixes are sparse: a glitch the speed limit
            // (100 m/s) can tell from driving, on either side.
            let gap = (backlog[middle + 1].recorded_at - backlog[middle - 1].recorded_at)
                .num_seconds() as f64;
            backlog[middle] = displaced(&backlog[middle], (0.15 * gap).max(3.0));
            let arrived = trace[n - 1].recorded_at + Duration::seconds(2);
            for chunk in backlog.chunks(30) {
                replay.post(chunk, arrived);
            }
            assert_eq!(replay.reason(glitch), Some(FilterReason::Jump), "{name}");
            let marked: Vec<_> = replay.rows.iter().filter(|r| r.filter.is_some()).collect();
            assert_eq!(marked.len(), 1, "{name}: only the glitch is marked");
            let late = replay.rows.iter().filter(|r| r.position.late).count();
            assert_eq!(
                late,
                gap_to - gap_from - 1,
                "{name}: the rest of the backlog is late"
            );
            // The drawn track is the trace, with no spike.
            let drawn: Vec<DateTime<Utc>> = replay.drawn().iter().map(|p| p.recorded_at).collect();
            let expected: Vec<DateTime<Utc>> = trace
                .iter()
                .map(|p| p.recorded_at)
                .filter(|t| *t != glitch)
                .collect();
            assert_eq!(drawn, expected, "{name}");
            assert_eq!(
                replay.state.last.unwrap().recorded_at,
                trace[n - 1].recorded_at,
                "{name}: the backlog never moves the marker"
            );
        }
    }

    #[test]
    fn re_sends_and_shuffled_batches_store_each_fix_once() {
        for (name, trace) in traces(120) {
            let mut replay = Replay::new();
            let now = trace.last().unwrap().recorded_at + Duration::seconds(5);
            let mut shuffled: Vec<NewPosition> = trace.clone();
            // A deterministic shuffle: every seventh fix first, then the rest backwards.
            shuffled.sort_by_key(|p| {
                let i = trace.iter().position(|q| q == p).unwrap();
                (i % 7 != 0, std::cmp::Reverse(i))
            });
            let first = replay.post(&shuffled, now);
            assert_eq!(first.accepted, trace.len(), "{name}");
            let again = replay.post(&trace, now);
            assert_eq!(again.duplicates, trace.len(), "{name}");
            assert_eq!(again.accepted, 0, "{name}");
            let mut seqs = first.seqs.clone();
            seqs.sort_unstable();
            let mut resent = again.seqs.clone();
            resent.sort_unstable();
            assert_eq!(seqs, resent, "{name}: a re-send gets the stored seqs");
            assert_eq!(replay.rows.len(), trace.len(), "{name}");
            assert!(
                replay.rows.iter().all(|r| r.filter.is_none()),
                "{name}: nothing genuine is marked"
            );
            assert_eq!(
                replay.state.last.unwrap().recorded_at,
                trace.last().unwrap().recorded_at,
                "{name}: the newest fix is current"
            );
        }
    }
}
