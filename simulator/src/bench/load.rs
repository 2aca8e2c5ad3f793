//! Bench load: workers posting positions as fast as the server answers, and the log of send
//! instants that subscribers match their events against.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::new_histogram;
use crate::api::{positions_body, Api, ApiError, NewPosition};
use crate::geo::{self, LatLon};

/// Send instants older than this are forgotten; an event arriving later counts as unmatched.
/// It bounds the log's memory by time whatever the request rate.
const SENT_RETENTION: Duration = Duration::from_secs(10);
/// Simulated vehicles move at a city pace, so the server's jump filter never drops a point.
const SPEED_MPS: f64 = 10.0;
/// ...and wander within this distance of where they started.
const ROAM_RADIUS_M: f64 = 500.0;
/// After a failed request a worker waits this long, so a dead server is not hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(20);

/// When each position was sent, per vehicle, ordered by `recorded_at` (a vehicle has one
/// request in flight at a time and its timestamps only grow).
#[derive(Debug)]
pub struct SentLog {
    lanes: HashMap<i64, Mutex<VecDeque<(i64, Instant)>>>,
}

impl SentLog {
    pub fn new(vehicle_ids: impl IntoIterator<Item = i64>) -> Self {
        Self {
            lanes: vehicle_ids
                .into_iter()
                .map(|id| (id, Mutex::new(VecDeque::new())))
                .collect(),
        }
    }

    fn record(&self, vehicle_id: i64, recorded_ms: &[i64], at: Instant) {
        let Some(lane) = self.lanes.get(&vehicle_id) else {
            return;
        };
        let mut lane = lane.lock().unwrap_or_else(PoisonError::into_inner);
        while lane
            .front()
            .is_some_and(|&(_, sent)| at.saturating_duration_since(sent) > SENT_RETENTION)
        {
            lane.pop_front();
        }
        lane.extend(recorded_ms.iter().map(|&ms| (ms, at)));
    }

    /// When the position of `vehicle_id` recorded at `recorded_ms` was sent, if remembered.
    pub fn sent_at(&self, vehicle_id: i64, recorded_ms: i64) -> Option<Instant> {
        let lane = self
            .lanes
            .get(&vehicle_id)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let i = lane
            .binary_search_by_key(&recorded_ms, |&(ms, _)| ms)
            .ok()?;
        Some(lane[i].1)
    }

    #[cfg(test)]
    pub fn record_for_test(&self, vehicle_id: i64, recorded_ms: i64, at: Instant) {
        self.record(vehicle_id, &[recorded_ms], at);
    }
}

/// One bench vehicle as a worker drives it.
#[derive(Debug, Clone)]
pub struct Lane {
    pub vehicle_id: i64,
    pub ingest_token: String,
    point: LatLon,
    anchor: LatLon,
    heading: f64,
    last_ms: i64,
}

impl Lane {
    /// Starts at `point` (where the vehicle last was, so the first post is no jump) with device
    /// time after `after` (its newest position, so nothing is late).
    pub fn new(
        vehicle_id: i64,
        ingest_token: String,
        point: LatLon,
        after: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            vehicle_id,
            ingest_token,
            point,
            anchor: point,
            heading: rand::thread_rng().gen_range(0.0..360.0),
            last_ms: after.map_or(0, |t| t.timestamp_millis()),
        }
    }

    /// The next `count` positions: device time is the wall clock, but strictly increasing by
    /// at least 1 ms, and the vehicle moves `SPEED_MPS` for each step of device time.
    fn next_batch(&mut self, count: usize, rng: &mut impl Rng) -> Vec<NewPosition> {
        let now_ms = Utc::now().timestamp_millis();
        (0..count)
            .map(|_| {
                let ms = now_ms.max(self.last_ms + 1);
                // The first step of a fresh vehicle has no predecessor to be checked against.
                let dt = if self.last_ms == 0 {
                    0.0
                } else {
                    (ms - self.last_ms) as f64 / 1000.0
                };
                self.last_ms = ms;
                self.heading = if geo::haversine_m(self.point, self.anchor) > ROAM_RADIUS_M {
                    geo::initial_bearing_deg(self.point, self.anchor)
                } else {
                    geo::normalise_deg(self.heading + rng.gen_range(-15.0..15.0))
                };
                // Capped so a vehicle left idle for a while does not leap.
                let step = (SPEED_MPS * dt).min(SPEED_MPS);
                self.point = geo::destination(self.point, self.heading, step);
                NewPosition {
                    lat: self.point.lat,
                    lon: self.point.lon,
                    recorded_at: DateTime::from_timestamp_millis(ms).unwrap_or_default(),
                    accuracy: Some(5.0),
                    speed: Some(SPEED_MPS),
                    heading: Some(self.heading),
                    altitude: None,
                    battery: None,
                }
            })
            .collect()
    }
}

/// What one worker measured.
#[derive(Debug)]
pub struct LoadStats {
    /// Latency of successful requests, in µs.
    pub latency_us: Histogram<u64>,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Failed requests by HTTP status, or `network` / `decode`.
    pub errors: BTreeMap<String, u64>,
    /// Positions in successful replies, i.e. committed to the database.
    pub positions: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub filtered: u64,
}

impl LoadStats {
    pub fn new() -> Self {
        Self {
            latency_us: new_histogram(),
            requests_ok: 0,
            requests_failed: 0,
            errors: BTreeMap::new(),
            positions: 0,
            accepted: 0,
            duplicates: 0,
            filtered: 0,
        }
    }

    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.requests_ok += other.requests_ok;
        self.requests_failed += other.requests_failed;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.positions += other.positions;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.filtered += other.filtered;
    }
}

/// Posts for its lanes in turn, one request at a time, until `deadline` or `cancel`.
pub async fn worker(
    api: Api,
    mut lanes: Vec<Lane>,
    batch: usize,
    deadline: Instant,
    sent: Arc<SentLog>,
    cancel: CancellationToken,
) -> LoadStats {
    let mut stats = LoadStats::new();
    if lanes.is_empty() {
        return stats;
    }
    let mut rng = rand::rngs::StdRng::from_entropy();
    let lane_count = lanes.len();
    for turn in 0usize.. {
        if Instant::now() >= deadline || cancel.is_cancelled() {
            break;
        }
        let lane = &mut lanes[turn % lane_count];
        let positions = lane.next_batch(batch, &mut rng);
        let Ok(body) = positions_body(&positions) else {
            stats.requests_failed += 1;
            *stats.errors.entry("encode".into()).or_default() += 1;
            continue;
        };
        let recorded: Vec<i64> = positions
            .iter()
            .map(|p| p.recorded_at.timestamp_millis())
            .collect();
        // Logged before sending: the event can reach a subscriber before the reply reaches us.
        let started = Instant::now();
        sent.record(lane.vehicle_id, &recorded, started);
        let result = tokio::select! {
            () = cancel.cancelled() => break,
            result = api.post_positions(&lane.ingest_token, body) => result,
        };
        match result {
            Ok(reply) => {
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                stats.latency_us.saturating_record(us.max(1));
                stats.requests_ok += 1;
                stats.positions += positions.len() as u64;
                stats.accepted += reply.accepted;
                stats.duplicates += reply.duplicates;
                stats.filtered += reply.filtered;
            }
            Err(e) => {
                stats.requests_failed += 1;
                let key = match &e {
                    ApiError::Status { status, code, .. } => format!("{} {code}", status.as_u16()),
                    ApiError::Network(_) => "network".into(),
                    ApiError::Decode(_) => "decode".into(),
                };
                if stats.requests_failed == 1 {
                    tracing::warn!("first failed request: {e}");
                }
                *stats.errors.entry(key).or_default() += 1;
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_have_increasing_times_and_plausible_motion() {
        let start = LatLon::new(48.137, 11.575);
        let mut lane = Lane::new(1, "t".into(), start, None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut previous: Option<NewPosition> = None;
        for _ in 0..50 {
            for p in lane.next_batch(20, &mut rng) {
                if let Some(prev) = &previous {
                    let dt = (p.recorded_at - prev.recorded_at).num_milliseconds();
                    assert!(dt >= 1);
                    let d = geo::haversine_m(
                        LatLon::new(prev.lat, prev.lon),
                        LatLon::new(p.lat, p.lon),
                    );
                    let speed = d / (dt as f64 / 1000.0);
                    // Centimetre steps carry float noise; the server's limit is 100 m/s.
                    assert!(speed <= SPEED_MPS * 1.01, "{speed} m/s");
                }
                assert!(
                    geo::haversine_m(start, LatLon::new(p.lat, p.lon)) < ROAM_RADIUS_M + SPEED_MPS
                );
                previous = Some(p);
            }
        }
    }

    #[test]
    fn a_reused_vehicle_continues_after_its_newest_position() {
        let future = Utc::now() + chrono::TimeDelta::seconds(30);
        let mut lane = Lane::new(1, "t".into(), LatLon::new(0.5, 0.5), Some(future));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let first = &lane.next_batch(1, &mut rng)[0];
        assert!(first.recorded_at > future);
    }

    #[test]
    fn the_sent_log_finds_sends_and_forgets_old_ones() {
        let log = SentLog::new([1, 2]);
        let t0 = Instant::now();
        log.record(1, &[100, 101, 102], t0);
        log.record(1, &[103], t0 + Duration::from_secs(1));
        assert_eq!(log.sent_at(1, 101), Some(t0));
        assert_eq!(log.sent_at(1, 103), Some(t0 + Duration::from_secs(1)));
        assert_eq!(log.sent_at(1, 104), None);
        assert_eq!(log.sent_at(2, 101), None);
        assert_eq!(log.sent_at(9, 101), None);
        log.record(1, &[200], t0 + SENT_RETENTION + Duration::from_millis(1500));
        assert_eq!(log.sent_at(1, 101), None, "older than the retention");
        assert!(log.sent_at(1, 200).is_some());
    }
}
