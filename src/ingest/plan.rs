//! The writer's decisions, as a pure function of a batch and of what was read under the seq
//! lock: which fixes are re-sends, which are marked and why, which is current and which late,
//! which shipment each joins, what the rules raise, and what changes for each shipment. The
//! writer ([`super::writer`]) reads, calls [`plan`], and writes what it returns.
use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};

use super::{
    attribution::{shipment_for, Window},
    filter::{judge, judge_late, DeviceClock, FilterReason, FilterSettings, LastFix},
    writer::WriteOutcome,
};
use crate::{
    alerts::{self, AlertSettings, Change, Context, OrgFences, RuleState, Subject, Trip},
    position::{NewPosition, Position},
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
            eta: None,
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
    pub(super) eta: Option<DateTime<Utc>>,
}

/// One row to insert.
pub(super) struct Row {
    pub(super) organisation_id: i64,
    pub(super) seq: i64,
    pub(super) position: Position,
    pub(super) filter: Option<&'static str>,
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
                        state.change(id).eta = Some(eta);
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
                filter: filter.map(|f| f.as_str()),
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
                .filter(|p| p.lat.abs() >= 1e-7 || p.lon.abs() >= 1e-7)
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
