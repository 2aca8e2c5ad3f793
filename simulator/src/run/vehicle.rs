//! One simulated vehicle: drives its trips (in recorded time, or along a synthesised speed
//! profile) scaled by the speed-up, one shipment per trip, recording each fix as a phone would
//! (GNSS error, signal losses, incidents) and posting it in the vehicle's protocol.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use reqwest::StatusCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::incident::{Incident, Kind, Pace};
use super::noise::Gnss;
use super::outbox::{Backlog, Outbox, Settled};
use super::plan::{Every, Mark, Plan, Sample};
use super::profile::{Driving, Profile};
use super::protocol::{Device, Protocol, Reading};
use crate::api::{Api, LineString, NewPosition, NewShipment, Place, Shipment};
use crate::backoff::retry;
use crate::geo;
use crate::state::StateFile;
use crate::tracks::{self, Trip};

/// The most vertices a shipment's planned route gets.
pub(super) const ROUTE_POINTS: usize = 200;
/// How long a stopping vehicle keeps trying to hand over its queued fixes.
const FINAL_FLUSH: Duration = Duration::from_secs(3);
/// Vehicles start a little apart so that their requests do not all arrive together.
const MAX_START_DELAY_MS: u64 = 2_000;
/// Giving up on creating a shipment after this many clashes keeps a confused server from
/// holding a vehicle forever.
const MAX_SHIPMENT_CONFLICTS: usize = 5;
/// A signal loss or incident ends before the last share of a trip, so that the vehicle is
/// back to normal (and its backlog sent) before the shipment is delivered.
const TRIP_MARGIN: f64 = 0.05;
/// Below this the phone thinks the vehicle is still (Traccar Client's `is_moving`).
const MOVING_MPS: f64 = 0.5;

/// How the fleet's phones behave, shared by every vehicle.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub speedup: f64,
    pub once: bool,
    pub noise: bool,
    /// Mean minutes between signal losses (0: never), and their mean length in seconds.
    pub signal_loss_every_min: f64,
    pub signal_loss_s: f64,
    pub incidents: Vec<Kind>,
    pub off_route_m: f64,
    pub off_route_min: f64,
    pub speeding: Pace,
    pub speeding_min: f64,
    pub silent_min: f64,
    pub stopped_min: f64,
}

impl Behaviour {
    /// Wall-clock seconds (as the server sees them) in trace seconds.
    fn trace_s(&self, wall_s: f64) -> f64 {
        wall_s * self.speedup
    }
}

/// Whether a vehicle replays its recording or drives a synthesised profile along it.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Recorded,
    /// Starts `phase` (0–1) of the way into its first trip.
    Synthesised {
        phase: f64,
    },
}

pub struct Driver {
    pub name: String,
    pub vehicle_id: i64,
    pub device: Device,
    pub trips: Vec<Trip>,
    pub mode: Mode,
    /// An active shipment found at start-up, driven by the first trip instead of a new one.
    pub active_shipment: Option<i64>,
    /// `n` of the next `SIM-<vehicle id>-<n>` reference.
    pub next_reference: u64,
    pub api: Api,
    pub state: Arc<Mutex<StateFile>>,
    pub behaviour: Arc<Behaviour>,
    /// Mean minutes between this vehicle's incidents; `None` when it has none.
    pub incident_every_min: Option<f64>,
    pub rng: StdRng,
    pub cancel: CancellationToken,
}

/// What one vehicle did, for the end-of-run summary.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub vehicle_id: i64,
    pub protocol: Protocol,
    pub speed_unit: &'static str,
    /// Fixes the phone recorded (and so meant to send).
    pub recorded: u64,
    /// Fixes the server acknowledged.
    pub sent: u64,
    /// Fixes the server refused, or that were dropped for room.
    pub dropped: u64,
    /// Fixes still queued when the vehicle stopped.
    pub unsent: u64,
    pub backlogs: Vec<Backlog>,
    /// Incidents that started.
    pub incidents: Vec<Kind>,
}

enum Replayed {
    Done,
    Cancelled,
}

/// What a vehicle carries from trip to trip: its phone, its clock and its schedules.
struct Phone {
    outbox: Outbox,
    battery: Battery,
    clock: DeviceClock,
    gnss: Gnss,
    odometer_m: f64,
    last_moving: Option<bool>,
    last_wall: Option<Instant>,
    recorded: u64,
    /// Trace seconds driven so far, across trips and laps.
    driven_s: f64,
    signal_loss: Option<Every>,
    incident: Option<Every>,
    incidents: Vec<Kind>,
}

impl Driver {
    pub async fn drive(mut self) -> anyhow::Result<Report> {
        let trips = std::mem::take(&mut self.trips);
        let b = Arc::clone(&self.behaviour);
        let mut phone = Phone {
            outbox: Outbox::new(&self.name),
            battery: Battery::new(&mut self.rng),
            clock: DeviceClock::new(
                self.device.time_resolution_ms(),
                self.device.min_fix_interval_ms(),
            ),
            gnss: Gnss::new(b.noise),
            odometer_m: 0.0,
            last_moving: None,
            last_wall: None,
            recorded: 0,
            driven_s: 0.0,
            signal_loss: Every::new(b.trace_s(b.signal_loss_every_min * 60.0), &mut self.rng),
            incident: self
                .incident_every_min
                .and_then(|m| Every::new(b.trace_s(m * 60.0), &mut self.rng)),
            incidents: Vec::new(),
        };
        if trips.is_empty() {
            return Ok(self.report(&phone));
        }
        let driving = Driving::random(&trips[0], &mut self.rng);
        let lap: Duration = trips.iter().map(Trip::duration).sum();
        tracing::info!(
            vehicle = %self.name,
            id = self.vehicle_id,
            protocol = %self.device.protocol,
            trips = trips.len(),
            "driving{}: a lap takes about {:.1} min at {}x, plus layovers",
            match self.mode {
                Mode::Recorded => " the recorded trace",
                Mode::Synthesised { .. } => " a synthesised profile",
            },
            lap.as_secs_f64() / 60.0 / b.speedup,
            b.speedup
        );
        let start_delay = self.rng.gen_range(0..=MAX_START_DELAY_MS);
        if self
            .pause(Duration::from_millis(start_delay))
            .await
            .is_none()
        {
            return Ok(self.report(&phone));
        }

        let mut first_trip = true;
        'laps: loop {
            for (i, trip) in trips.iter().enumerate() {
                let Some(shipment) = self.open_shipment(trip).await else {
                    break 'laps;
                };
                let plan = self.plan(trip, &driving, first_trip, &mut phone);
                first_trip = false;
                let replayed = self.replay(&plan, &mut phone).await;
                if let Replayed::Cancelled = replayed {
                    let unsent = phone
                        .outbox
                        .flush(&self.api, &self.device, FINAL_FLUSH)
                        .await;
                    if unsent > 0 {
                        tracing::warn!(vehicle = %self.name, "stopping with {unsent} fixes unsent");
                    }
                    break 'laps;
                }
                if let Some(id) = shipment {
                    self.deliver(id).await;
                }

                let last = i + 1 == trips.len();
                if last && b.once {
                    break 'laps;
                }
                let next = &trips[(i + 1) % trips.len()];
                // Consecutive trips of a bus are consecutive in the data; a new lap is not.
                let recorded_gap = if last {
                    None
                } else {
                    (next.first().at - trip.last().at).to_std().ok()
                };
                phone.battery.charge_if_low();
                let layover = tracks::layover(trip, next, recorded_gap).div_f64(b.speedup);
                tracing::debug!(vehicle = %self.name, "next trip in {layover:?}");
                if self.pause(layover).await.is_none() {
                    break 'laps;
                }
            }
        }
        tracing::info!(vehicle = %self.name, "stopped");
        Ok(self.report(&phone))
    }

    fn report(&self, phone: &Phone) -> Report {
        Report {
            name: self.name.clone(),
            vehicle_id: self.vehicle_id,
            protocol: self.device.protocol,
            speed_unit: self.device.speed_unit.as_str(),
            recorded: phone.recorded,
            sent: phone.outbox.sent(),
            dropped: phone.outbox.dropped(),
            unsent: phone.outbox.len() as u64,
            backlogs: phone.outbox.backlogs().to_vec(),
            incidents: phone.incidents.clone(),
        }
    }

    /// The trip as this vehicle drives it this time: recorded or synthesised, with at most one
    /// incident and any signal losses that fall in it.
    fn plan(
        &mut self,
        trip: &Trip,
        driving: &Driving,
        first_trip: bool,
        phone: &mut Phone,
    ) -> Plan {
        let b = Arc::clone(&self.behaviour);
        let mut plan = match self.mode {
            Mode::Recorded => Plan::recorded(trip),
            Mode::Synthesised { phase } => {
                let mut plan = Profile::new(trip, driving, &mut self.rng).plan(driving.fix_every);
                if first_trip {
                    let from = plan.duration() * phase;
                    plan.start_at(from);
                }
                plan
            }
        };
        let length = plan.duration();
        let margin = length * TRIP_MARGIN;

        if let Some(every) = phone.incident.as_mut() {
            let kinds = &b.incidents;
            let mut chosen = Vec::new();
            let events = every.take(
                phone.driven_s,
                length,
                margin,
                |rng: &mut StdRng| {
                    let kind = kinds[rng.gen_range(0..kinds.len())];
                    chosen.push(kind);
                    // Played at real time (see `incident`): its length in real seconds is
                    // what it takes of the trip.
                    Incident::consumes(kind, incident_minutes(&b, kind) * 60.0)
                },
                &mut self.rng,
            );
            // One incident per trip keeps their effects on timing apart.
            if let (Some(&(start, _)), Some(&kind)) = (events.first(), chosen.first()) {
                let len = incident_minutes(&b, kind) * 60.0;
                let incident = match kind {
                    Kind::OffRoute => Incident::OffRoute {
                        start,
                        len,
                        offset_m: b.off_route_m,
                    },
                    Kind::Speeding => Incident::Speeding {
                        start,
                        len,
                        pace: b.speeding,
                    },
                    Kind::Silent => Incident::Silent { start, len },
                    Kind::Stopped => Incident::Stopped {
                        start,
                        len,
                        fix_every: driving.fix_every,
                    },
                };
                incident.apply(&mut plan, b.speedup);
            }
        }
        if let Some(every) = phone.signal_loss.as_mut() {
            let mean = b.trace_s(b.signal_loss_s);
            let losses = every.take(
                phone.driven_s,
                plan.duration(),
                margin,
                |rng: &mut StdRng| mean * rng.gen_range(0.75..1.25),
                &mut self.rng,
            );
            for (start, len) in losses {
                plan.lose_signal(start, len, len / b.speedup);
            }
        }
        phone.driven_s += length;
        plan
    }

    /// Plays one trip: each fix is due at its plan time divided by the speed-up. Posting runs
    /// alongside the clock, so a slow or absent server never delays the fixes; the trip ends
    /// once every fix has been handed over.
    async fn replay(&mut self, plan: &Plan, phone: &mut Phone) -> Replayed {
        let speedup = self.behaviour.speedup;
        let started = Instant::now();
        let started_wall = Utc::now();
        let at = |t: f64| started + Duration::from_secs_f64(t.max(0.0) / speedup);
        let mut next = 0;
        let mut next_mark = 0;
        let mut previous: Option<&Sample> = None;
        loop {
            let due = plan.samples.get(next).map(|s| at(s.t));
            let mark_due = plan.marks.get(next_mark).map(|m: &Mark| at(m.t));
            if due.is_none() && phone.outbox.is_idle() {
                // Marks past the last fix (an incident ending with the trip) still get said.
                for mark in &plan.marks[next_mark..] {
                    self.say(mark, phone);
                }
                return Replayed::Done;
            }
            phone.outbox.start(&self.api, &self.device);
            let retry_at = phone.outbox.retry_at();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Replayed::Cancelled,
                result = phone.outbox.finished() => {
                    if let Settled::Unauthorized = phone.outbox.settle(result) {
                        self.renew_token(&mut phone.outbox).await;
                    }
                }
                () = sleep_until(mark_due), if mark_due.is_some() => {
                    self.say(&plan.marks[next_mark], phone);
                    next_mark += 1;
                }
                () = sleep_until(due), if due.is_some() => {
                    let sample = &plan.samples[next];
                    let elapsed = due.unwrap_or(started).duration_since(started);
                    if let Some(prev) = previous {
                        phone.battery.drain(Duration::from_secs_f64((sample.t - prev.t).max(0.0)));
                        phone.odometer_m += geo::haversine_m(prev.point, sample.point);
                    }
                    self.record(sample, started_wall + elapsed, phone);
                    previous = Some(sample);
                    next += 1;
                }
                () = sleep_until(retry_at), if retry_at.is_some() => {}
            }
        }
    }

    /// Tells the operator what is happening, and counts an incident once it starts.
    fn say(&self, mark: &Mark, phone: &mut Phone) {
        tracing::info!(vehicle = %self.name, "{}", mark.message);
        if let Some(kind) = mark.starts {
            phone.incidents.push(kind);
        }
    }

    /// The phone takes a fix: the GNSS reading of the true position, stamped by the device
    /// clock, queued for sending (held back while there is no signal).
    fn record(&mut self, sample: &Sample, wall: DateTime<Utc>, phone: &mut Phone) {
        let Some(recorded_at) = phone.clock.stamp(wall) else {
            // The sender writes whole seconds and this second already has its fix.
            return;
        };
        let now = Instant::now();
        let dt_wall = phone
            .last_wall
            .map_or(f64::INFINITY, |w| now.duration_since(w).as_secs_f64());
        phone.last_wall = Some(now);
        let fix = phone.gnss.observe(sample.point, dt_wall, &mut self.rng);
        let moving = sample.speed.is_some_and(|v| v >= MOVING_MPS);
        let reading = Reading {
            position: NewPosition {
                lat: round_to(fix.point.lat, 7),
                lon: round_to(fix.point.lon, 7),
                recorded_at,
                accuracy: Some(round_to(fix.accuracy, 1)),
                speed: sample.speed.map(|s| round_to(s, 2)),
                heading: sample.heading.map(|h| geo::normalise_deg(round_to(h, 1))),
                altitude: sample.altitude.map(|a| round_to(a, 1)),
                battery: Some(phone.battery.reading()),
            },
            odometer_m: phone.odometer_m,
            motion_changed: phone.last_moving != Some(moving),
        };
        phone.last_moving = Some(moving);
        if fix.outlier {
            tracing::debug!(vehicle = %self.name, "GNSS outlier recorded (the server should mark it a jump)");
        }
        phone
            .outbox
            .set_online(!sample.offline, self.device.protocol.batch_limit());
        phone.outbox.push(reading);
        phone.recorded += 1;
        tracing::trace!(vehicle = %self.name, "fix queued ({} waiting)", phone.outbox.len());
    }

    /// The server refused the token (rotated elsewhere, or a reset database that reused the
    /// id): get a new one and keep going.
    async fn renew_token(&mut self, outbox: &mut Outbox) {
        match self.api.rotate_token(self.vehicle_id).await {
            Ok(token) => {
                tracing::info!(vehicle = %self.name, "ingest token refused; issued a new one");
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if let Err(e) = state.remember(&self.name, self.vehicle_id, &token) {
                    tracing::warn!("{e:#}");
                }
                self.device.token = token;
                outbox.retry_now();
            }
            Err(e) => {
                tracing::warn!(vehicle = %self.name, "ingest token refused and cannot issue a new one: {e}");
            }
        }
    }

    /// The shipment this trip drives: the active one found at start-up, else a new one. The
    /// outer `None` means cancelled; the inner one that the trip runs without a shipment.
    async fn open_shipment(&mut self, trip: &Trip) -> Option<Option<i64>> {
        if let Some(id) = self.active_shipment.take() {
            tracing::info!(vehicle = %self.name, shipment = id, "continuing the active shipment");
            return Some(Some(id));
        }
        let route = LineString::new(&trip.route(ROUTE_POINTS));
        for _ in 0..MAX_SHIPMENT_CONFLICTS {
            let new = NewShipment {
                reference: format!("SIM-{}-{}", self.vehicle_id, self.next_reference),
                origin: Place::new(trip.first().point, trip.origin_name.clone()),
                destination: Place::new(trip.last().point, trip.destination_name.clone()),
                planned_route: Some(route.clone()),
                vehicle_id: self.vehicle_id,
            };
            let what = format!("{}: create shipment {}", self.name, new.reference);
            match retry(&what, &self.cancel, || self.api.create_shipment(&new)).await {
                Ok(None) => return None,
                Ok(Some(shipment)) => {
                    self.next_reference += 1;
                    tracing::info!(
                        vehicle = %self.name,
                        shipment = shipment.id,
                        reference = %shipment.reference,
                        "shipment created"
                    );
                    return Some(Some(shipment.id));
                }
                Err(e) if e.status() == Some(StatusCode::CONFLICT) => {
                    // Either the vehicle already has an active shipment (adopt it) or the
                    // reference is taken (move past every reference in use).
                    let what = format!("{}: list shipments", self.name);
                    let shipments = match retry(&what, &self.cancel, || self.api.list_shipments())
                        .await
                    {
                        Ok(Some(list)) => list,
                        Ok(None) => return None,
                        Err(e) => {
                            tracing::warn!(vehicle = %self.name, "{what}: {e}; driving without a shipment");
                            return Some(None);
                        }
                    };
                    if let Some(active) = shipments
                        .iter()
                        .find(|s| s.vehicle_id == Some(self.vehicle_id) && s.is_active())
                    {
                        tracing::info!(vehicle = %self.name, shipment = active.id, "continuing the active shipment");
                        return Some(Some(active.id));
                    }
                    self.next_reference = next_reference_number(&shipments, self.vehicle_id)
                        .max(self.next_reference + 1);
                }
                Err(e) => {
                    tracing::warn!(vehicle = %self.name, "cannot create a shipment ({e}); driving without one");
                    return Some(None);
                }
            }
        }
        tracing::warn!(vehicle = %self.name, "shipment references keep clashing; driving without one");
        Some(None)
    }

    async fn deliver(&self, shipment_id: i64) {
        let what = format!("{}: mark shipment {shipment_id} delivered", self.name);
        let patch = || self.api.set_shipment_status(shipment_id, "delivered");
        match retry(&what, &self.cancel, patch).await {
            Ok(Some(shipment)) => tracing::info!(
                vehicle = %self.name,
                shipment = shipment.id,
                reference = %shipment.reference,
                "shipment delivered"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("{what}: {e}"),
        }
    }

    /// Sleeps unless cancelled first; `None` means cancelled.
    async fn pause(&self, duration: Duration) -> Option<()> {
        tokio::select! {
            () = self.cancel.cancelled() => None,
            () = tokio::time::sleep(duration) => Some(()),
        }
    }
}

/// The next free `n` for `SIM-<vehicle id>-<n>` references.
pub fn next_reference_number(shipments: &[Shipment], vehicle_id: i64) -> u64 {
    let prefix = format!("SIM-{vehicle_id}-");
    shipments
        .iter()
        .filter_map(|s| s.reference.strip_prefix(&prefix)?.parse::<u64>().ok())
        .max()
        .map_or(1, |n| n + 1)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// How long each kind of incident lasts, in minutes as the server sees them.
fn incident_minutes(b: &Behaviour, kind: Kind) -> f64 {
    match kind {
        Kind::OffRoute => b.off_route_min,
        Kind::Speeding => b.speeding_min,
        Kind::Silent => b.silent_min,
        Kind::Stopped => b.stopped_min,
    }
}

/// Device timestamps: the replay's wall-clock time at the sender's resolution (milliseconds,
/// or whole seconds for OwnTracks and the legacy Traccar Client), strictly increasing, because
/// the server takes a repeated `recorded_at` for a re-sent duplicate. A fix sooner than the
/// sender's minimum interval after the last is not taken, as an app does not report twice in
/// one of its ticks.
#[derive(Debug)]
struct DeviceClock {
    resolution_ms: i64,
    min_interval_ms: i64,
    last: Option<DateTime<Utc>>,
}

impl DeviceClock {
    fn new(resolution_ms: i64, min_interval_ms: i64) -> Self {
        Self {
            resolution_ms: resolution_ms.max(1),
            min_interval_ms: min_interval_ms.max(1),
            last: None,
        }
    }

    fn stamp(&mut self, wanted: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let ms = wanted.timestamp_millis();
        let stamp = DateTime::from_timestamp_millis(ms - ms.rem_euclid(self.resolution_ms))?;
        if self
            .last
            .is_some_and(|last| (stamp - last).num_milliseconds() < self.min_interval_ms)
        {
            return None;
        }
        self.last = Some(stamp);
        Some(stamp)
    }
}

/// A phone battery that drains while driving and is charged at the depot when low.
#[derive(Debug)]
struct Battery {
    percent: f64,
}

impl Battery {
    /// About 15 % an hour: a phone with GPS and screen on.
    const DRAIN_PER_SECOND: f64 = 15.0 / 3600.0;
    const CHARGE_BELOW: f64 = 25.0;
    const EMPTY: f64 = 5.0;

    fn new<R: Rng>(rng: &mut R) -> Self {
        Self {
            percent: rng.gen_range(60.0..100.0),
        }
    }

    fn drain(&mut self, driven: Duration) {
        self.percent =
            (self.percent - driven.as_secs_f64() * Self::DRAIN_PER_SECOND).max(Self::EMPTY);
    }

    fn charge_if_low(&mut self) {
        if self.percent < Self::CHARGE_BELOW {
            self.percent = 100.0;
        }
    }

    fn reading(&self) -> f64 {
        round_to(self.percent, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn shipment(id: i64, reference: &str, vehicle_id: i64) -> Shipment {
        Shipment {
            id,
            reference: reference.into(),
            status: "delivered".into(),
            vehicle_id: Some(vehicle_id),
            last_position: None,
        }
    }

    #[test]
    fn references_continue_after_the_highest_in_use() {
        assert_eq!(next_reference_number(&[], 3), 1);
        let list = [
            shipment(1, "SIM-3-1", 3),
            shipment(2, "SIM-3-7", 3),
            shipment(3, "SIM-33-9", 33),
            shipment(4, "SIM-3-x", 3),
            shipment(5, "SHP-1001", 3),
        ];
        assert_eq!(next_reference_number(&list, 3), 8);
        assert_eq!(next_reference_number(&list, 33), 10);
    }

    #[test]
    fn device_time_strictly_increases_at_the_senders_resolution() {
        let t = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        let mut clock = DeviceClock::new(1, 1);
        assert_eq!(clock.stamp(t + TimeDelta::microseconds(300)), Some(t));
        assert_eq!(
            clock.stamp(t + TimeDelta::microseconds(600)),
            None,
            "same millisecond"
        );
        assert_eq!(
            clock.stamp(t + TimeDelta::milliseconds(1)),
            Some(t + TimeDelta::milliseconds(1))
        );
        assert_eq!(
            clock.stamp(t - TimeDelta::seconds(1)),
            None,
            "never backwards"
        );

        let mut seconds = DeviceClock::new(1000, 1000);
        assert_eq!(seconds.stamp(t + TimeDelta::milliseconds(250)), Some(t));
        assert_eq!(seconds.stamp(t + TimeDelta::milliseconds(999)), None);
        assert_eq!(
            seconds.stamp(t + TimeDelta::milliseconds(1_400)),
            Some(t + TimeDelta::seconds(1))
        );

        // Milliseconds, but at most one fix a second (Traccar Client, the OsmAnd app).
        let mut app = DeviceClock::new(1, 1000);
        assert_eq!(app.stamp(t), Some(t));
        assert_eq!(app.stamp(t + TimeDelta::milliseconds(999)), None);
        assert_eq!(
            app.stamp(t + TimeDelta::milliseconds(1_250)),
            Some(t + TimeDelta::milliseconds(1_250))
        );
    }

    #[test]
    fn the_battery_drains_slowly_and_is_charged_when_low() {
        let mut battery = Battery { percent: 80.0 };
        battery.drain(Duration::from_secs(3600));
        assert!((battery.reading() - 65.0).abs() < 0.01);
        battery.charge_if_low();
        assert!((battery.reading() - 65.0).abs() < 0.01);
        battery.drain(Duration::from_secs(100 * 3600));
        assert_eq!(battery.reading(), Battery::EMPTY);
        battery.charge_if_low();
        assert_eq!(battery.reading(), 100.0);
    }
}
