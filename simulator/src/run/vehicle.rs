//! One simulated vehicle: drives its trips in recorded time (scaled by the speed-up), one
//! shipment per trip, posting each fix as a device would.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use reqwest::StatusCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outbox::{Outbox, Settled};
use crate::api::{Api, LineString, NewPosition, NewShipment, Place, Shipment};
use crate::backoff::retry;
use crate::geo;
use crate::state::StateFile;
use crate::tracks::{self, Fix, Trip};

/// The most vertices a shipment's planned route gets.
const ROUTE_POINTS: usize = 200;
/// How long a stopping vehicle keeps trying to hand over its queued fixes.
const FINAL_FLUSH: Duration = Duration::from_secs(3);
/// Vehicles start a little apart so that their requests do not all arrive together.
const MAX_START_DELAY_MS: u64 = 2_000;
/// Giving up on creating a shipment after this many clashes keeps a confused server from
/// holding a vehicle forever.
const MAX_SHIPMENT_CONFLICTS: usize = 5;

pub struct Driver {
    pub name: String,
    pub vehicle_id: i64,
    pub token: String,
    pub trips: Vec<Trip>,
    /// An active shipment found at start-up, driven by the first trip instead of a new one.
    pub active_shipment: Option<i64>,
    /// `n` of the next `SIM-<vehicle id>-<n>` reference.
    pub next_reference: u64,
    pub api: Api,
    pub state: Arc<Mutex<StateFile>>,
    pub speedup: f64,
    pub once: bool,
    pub cancel: CancellationToken,
}

enum Replayed {
    Done,
    Cancelled,
}

impl Driver {
    pub async fn drive(mut self) -> anyhow::Result<()> {
        let trips = std::mem::take(&mut self.trips);
        if trips.is_empty() {
            return Ok(());
        }
        let lap: Duration = trips.iter().map(Trip::duration).sum();
        tracing::info!(
            vehicle = %self.name,
            id = self.vehicle_id,
            trips = trips.len(),
            "driving: a lap takes {:.1} min at {}x, plus layovers",
            lap.as_secs_f64() / 60.0 / self.speedup,
            self.speedup
        );
        let start_delay = rand::thread_rng().gen_range(0..=MAX_START_DELAY_MS);
        if self
            .pause(Duration::from_millis(start_delay))
            .await
            .is_none()
        {
            return Ok(());
        }

        let mut outbox = Outbox::new(&self.name);
        let mut battery = Battery::new();
        let mut clock = DeviceClock::default();
        'laps: loop {
            for (i, trip) in trips.iter().enumerate() {
                let Some(shipment) = self.open_shipment(trip).await else {
                    break 'laps;
                };
                let replayed = self
                    .replay(trip, &mut outbox, &mut battery, &mut clock)
                    .await;
                if let Replayed::Cancelled = replayed {
                    let unsent = outbox.flush(&self.api, &self.token, FINAL_FLUSH).await;
                    if unsent > 0 {
                        tracing::warn!(vehicle = %self.name, "stopping with {unsent} fixes unsent");
                    }
                    break 'laps;
                }
                if let Some(id) = shipment {
                    self.deliver(id).await;
                }

                let last = i + 1 == trips.len();
                if last && self.once {
                    break 'laps;
                }
                let next = &trips[(i + 1) % trips.len()];
                // Consecutive trips of a bus are consecutive in the data; a new lap is not.
                let recorded_gap = if last {
                    None
                } else {
                    (next.first().at - trip.last().at).to_std().ok()
                };
                battery.charge_if_low();
                let layover = tracks::layover(trip, next, recorded_gap).div_f64(self.speedup);
                tracing::debug!(vehicle = %self.name, "next trip in {layover:?}");
                if self.pause(layover).await.is_none() {
                    break 'laps;
                }
            }
        }
        tracing::info!(vehicle = %self.name, "stopped");
        Ok(())
    }

    /// Plays one trip: each fix is due at its recorded offset divided by the speed-up. Posting
    /// runs alongside the clock, so a slow or absent server never delays the fixes; the trip
    /// ends once every fix has been handed over.
    async fn replay(
        &mut self,
        trip: &Trip,
        outbox: &mut Outbox,
        battery: &mut Battery,
        clock: &mut DeviceClock,
    ) -> Replayed {
        let started = Instant::now();
        let started_wall = Utc::now();
        let mut next = 0;
        let mut previous: Option<&Fix> = None;
        loop {
            let due = trip
                .fixes
                .get(next)
                .map(|fix| started + trip.offset(fix).div_f64(self.speedup));
            if due.is_none() && outbox.is_idle() {
                return Replayed::Done;
            }
            outbox.start(&self.api, &self.token);
            let retry_at = outbox.retry_at();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Replayed::Cancelled,
                result = outbox.finished() => {
                    if let Settled::Unauthorized = outbox.settle(result) {
                        self.renew_token(outbox).await;
                    }
                }
                () = sleep_until(due), if due.is_some() => {
                    let fix = &trip.fixes[next];
                    let elapsed = due.unwrap_or(started).duration_since(started);
                    let recorded_at = clock.stamp(started_wall + elapsed);
                    if let Some(prev) = previous {
                        battery.drain((fix.at - prev.at).to_std().unwrap_or_default());
                    }
                    outbox.push(position(fix, recorded_at, battery.reading()));
                    tracing::trace!(vehicle = %self.name, "fix {next} queued ({} waiting)", outbox.len());
                    previous = Some(fix);
                    next += 1;
                }
                () = sleep_until(retry_at), if retry_at.is_some() => {}
            }
        }
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
                self.token = token;
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

/// What the device reports for a recorded fix, replayed at `recorded_at`.
fn position(fix: &Fix, recorded_at: DateTime<Utc>, battery: f64) -> NewPosition {
    // Consumer GNSS: a few metres, varying from fix to fix.
    let accuracy = rand::thread_rng().gen_range(5.0..10.0);
    NewPosition {
        lat: fix.point.lat,
        lon: fix.point.lon,
        recorded_at,
        accuracy: Some(round_to(accuracy, 1)),
        speed: fix.speed.map(|s| round_to(s, 2)),
        heading: fix.heading.map(|h| geo::normalise_deg(round_to(h, 1))),
        altitude: fix.altitude.map(|a| round_to(a, 1)),
        battery: Some(battery),
    }
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Device timestamps: the replay's wall-clock time, but strictly increasing at millisecond
/// resolution, because the server takes a repeated `recorded_at` for a re-sent duplicate.
#[derive(Debug, Default)]
struct DeviceClock {
    last: Option<DateTime<Utc>>,
}

impl DeviceClock {
    fn stamp(&mut self, wanted: DateTime<Utc>) -> DateTime<Utc> {
        let wanted = truncate_to_millis(wanted);
        let stamp = match self.last {
            Some(last) if wanted <= last => last + TimeDelta::milliseconds(1),
            _ => wanted,
        };
        self.last = Some(stamp);
        stamp
    }
}

fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
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

    fn new() -> Self {
        Self {
            percent: rand::thread_rng().gen_range(60.0..100.0),
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

    fn shipment(id: i64, reference: &str, vehicle_id: i64) -> Shipment {
        Shipment {
            id,
            reference: reference.into(),
            status: "delivered".into(),
            vehicle_id: Some(vehicle_id),
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
    fn device_time_strictly_increases_in_milliseconds() {
        let mut clock = DeviceClock::default();
        let t = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        let a = clock.stamp(t + TimeDelta::microseconds(300));
        let b = clock.stamp(t + TimeDelta::microseconds(600));
        let c = clock.stamp(t - TimeDelta::seconds(1));
        let d = clock.stamp(t + TimeDelta::seconds(5));
        assert_eq!(a, t);
        assert_eq!(b, t + TimeDelta::milliseconds(1));
        assert_eq!(c, t + TimeDelta::milliseconds(2));
        assert_eq!(d, t + TimeDelta::seconds(5));
    }

    #[test]
    fn reported_positions_are_within_the_api_ranges() {
        let fleet = tracks::fleet().unwrap();
        let mut battery = Battery::new();
        let now = Utc::now();
        for fix in fleet.iter().flat_map(|v| &v.trips).flat_map(|t| &t.fixes) {
            battery.drain(Duration::from_secs(30));
            let p = position(fix, now, battery.reading());
            assert!((5.0..=10.0).contains(&p.accuracy.unwrap()));
            assert!(p.speed.is_none_or(|s| s.is_finite() && s >= 0.0));
            assert!(p.heading.is_none_or(|h| (0.0..360.0).contains(&h)));
            assert!(p.battery.is_some_and(|b| (0.0..=100.0).contains(&b)));
        }
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
