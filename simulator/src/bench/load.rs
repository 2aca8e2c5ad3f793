//! Bench load: workers posting positions, paced or as fast as the server answers, and the log
//! of send instants that subscribers match their events against.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::new_histogram;
use crate::api::{positions_body, Api, ApiError, NewPosition};
use crate::geo::{self, LatLon};

/// Requests remembered per vehicle: an event whose vehicle has sent this many requests since
/// counts as unmatched. One vehicle has one request in flight at a time, so this is at least
/// this many request round trips of that vehicle.
const SENT_RING: usize = 256;
/// A ring entry packs, in one atomic word, the low bits of the first `recorded_at` (ms) of a
/// run of consecutive milliseconds, the run's length, and the send instant in µs (wrapping
/// every 71 minutes, which is fine for a latency). 22 bits of milliseconds wrap every 70
/// minutes of device time, more than a ring spans in a bench of at most an hour.
const MS_BITS: u32 = 22;
const MS_MODULUS: i64 = 1 << MS_BITS;
const RUN_BITS: u32 = 10;
/// The most positions one entry covers: a batch of 1000 fits in one.
const MAX_RUN: usize = 1 << RUN_BITS;
/// Simulated vehicles move at a city pace, so the server's jump filter never drops a point.
const SPEED_MPS: f64 = 10.0;
/// ...and wander within this distance of where they started.
const ROAM_RADIUS_M: f64 = 500.0;
/// After a failed request a worker waits this long, so a dead server is not hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(20);

/// When each position was sent, per vehicle. Every subscriber looks up every event here, so
/// lookups take no lock: each vehicle has a ring of atomic words that only its (one) sender
/// writes and any number of subscribers read.
#[derive(Debug)]
pub struct SentLog {
    epoch: Instant,
    lanes: HashMap<i64, usize>,
    writes: Box<[AtomicUsize]>,
    entries: Box<[AtomicU64]>,
}

impl SentLog {
    pub fn new(vehicle_ids: impl IntoIterator<Item = i64>) -> Self {
        let lanes: HashMap<i64, usize> = vehicle_ids
            .into_iter()
            .enumerate()
            .map(|(lane, id)| (id, lane))
            .collect();
        let count = lanes.len();
        Self {
            epoch: Instant::now(),
            lanes,
            writes: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            entries: (0..count * SENT_RING).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Microseconds since the epoch, modulo 2^32: differences stay right across the wrap.
    fn ticks(&self, at: Instant) -> u32 {
        let us = at.saturating_duration_since(self.epoch).as_micros();
        (us % (1 << 32)) as u32
    }

    /// Notes that the positions of `vehicle_id` recorded at `recorded_ms` were sent `at`.
    /// Only one task may record for a vehicle at a time.
    pub fn record(&self, vehicle_id: i64, recorded_ms: &[i64], at: Instant) {
        let Some(&lane) = self.lanes.get(&vehicle_id) else {
            return;
        };
        // Zero marks an empty entry; a microsecond off at the wrap does not matter.
        let ticks = self.ticks(at).max(1);
        for (first, len) in runs(recorded_ms) {
            let n = self.writes[lane].fetch_add(1, Ordering::Relaxed);
            self.entries[lane * SENT_RING + n % SENT_RING]
                .store(pack(first, len, ticks), Ordering::Release);
        }
    }

    /// Time from the send of `vehicle_id`'s position recorded at `recorded_ms` to `received`,
    /// if the send is still remembered.
    pub fn latency(
        &self,
        vehicle_id: i64,
        recorded_ms: i64,
        received: Instant,
    ) -> Option<Duration> {
        let &lane = self.lanes.get(&vehicle_id)?;
        let ring = &self.entries[lane * SENT_RING..(lane + 1) * SENT_RING];
        // Newest first: an event usually belongs to one of the last few requests.
        let newest = self.writes[lane].load(Ordering::Relaxed);
        (1..=SENT_RING).find_map(|back| {
            let word = ring[newest.wrapping_sub(back) % SENT_RING].load(Ordering::Acquire);
            let sent = unpack_if_covers(word, recorded_ms)?;
            let us = self.ticks(received).wrapping_sub(sent);
            Some(Duration::from_micros(u64::from(us)))
        })
    }
}

/// Splits ascending milliseconds into runs of consecutive values, `(first, length)`, each at
/// most `MAX_RUN` long. A batch from [`Lane::next_batch`] is one run.
fn runs(recorded_ms: &[i64]) -> Vec<(i64, usize)> {
    let mut runs: Vec<(i64, usize)> = Vec::new();
    for &ms in recorded_ms {
        match runs.last_mut() {
            Some((first, len)) if *first + *len as i64 == ms && *len < MAX_RUN => *len += 1,
            _ => runs.push((ms, 1)),
        }
    }
    runs
}

fn pack(first_ms: i64, len: usize, ticks: u32) -> u64 {
    debug_assert!((1..=MAX_RUN).contains(&len));
    let low_ms = first_ms.rem_euclid(MS_MODULUS) as u64;
    (low_ms << (64 - MS_BITS)) | (((len - 1) as u64) << 32) | u64::from(ticks)
}

/// The send ticks of `word` if its run covers `ms`.
fn unpack_if_covers(word: u64, ms: i64) -> Option<u32> {
    if word == 0 {
        return None;
    }
    let first = word >> (64 - MS_BITS);
    let len = ((word >> 32) & (MAX_RUN as u64 - 1)) + 1;
    let offset = (ms.rem_euclid(MS_MODULUS) as u64).wrapping_sub(first) % (1 << MS_BITS);
    (offset < len).then_some((word & u64::from(u32::MAX)) as u32)
}

const FAR_AHEAD_NANOS: u64 = 10 * 24 * 3600 * 1_000_000_000;

/// Hands out request numbers and, with a rate, the instant each request is due: the schedule
/// is fixed in advance (open loop), so a slow reply delays no later request while a worker is
/// free to send it.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    /// Positions per second in total, or 0 for no pacing.
    rate: u64,
    batch: u64,
    issued: AtomicU64,
}

/// One request to make: its number, which picks the server, and when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub number: u64,
    pub due: Option<Instant>,
}

impl Pacer {
    pub fn new(start: Instant, rate: u32, batch: u32) -> Self {
        Self {
            start,
            rate: u64::from(rate),
            batch: u64::from(batch.max(1)),
            issued: AtomicU64::new(0),
        }
    }

    pub fn take(&self) -> Ticket {
        let number = self.issued.fetch_add(1, Ordering::Relaxed);
        Ticket {
            number,
            due: self.due(number),
        }
    }

    /// Request `n` is due when `n × batch` positions have been offered at the rate.
    fn due(&self, n: u64) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let nanos = u128::from(n) * u128::from(self.batch) * 1_000_000_000 / u128::from(self.rate);
        // Capped so that no schedule can overflow the clock; a bench lasts at most an hour.
        let nanos = u64::try_from(nanos)
            .unwrap_or(u64::MAX)
            .min(FAR_AHEAD_NANOS);
        Some(self.start + Duration::from_nanos(nanos))
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
    /// How late requests were sent after their due instant, in µs (paced runs only).
    pub schedule_lag_us: Histogram<u64>,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Failed requests by HTTP status, or `network` / `decode`.
    pub errors: BTreeMap<String, u64>,
    /// Positions sent, whatever the reply.
    pub positions_sent: u64,
    /// Positions in successful replies, i.e. committed to the database.
    pub positions: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub filtered: u64,
    /// Positions published (accepted and not filtered) per vehicle: what its watchers should get.
    pub published_by_vehicle: HashMap<i64, u64>,
}

impl LoadStats {
    pub fn new() -> Self {
        Self {
            latency_us: new_histogram(),
            schedule_lag_us: new_histogram(),
            requests_ok: 0,
            requests_failed: 0,
            errors: BTreeMap::new(),
            positions_sent: 0,
            positions: 0,
            accepted: 0,
            duplicates: 0,
            filtered: 0,
            published_by_vehicle: HashMap::new(),
        }
    }

    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.schedule_lag_us.add(&other.schedule_lag_us);
        self.requests_ok += other.requests_ok;
        self.requests_failed += other.requests_failed;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.positions_sent += other.positions_sent;
        self.positions += other.positions;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.filtered += other.filtered;
        for (&vehicle, &n) in &other.published_by_vehicle {
            *self.published_by_vehicle.entry(vehicle).or_default() += n;
        }
    }
}

/// What every worker shares.
#[derive(Debug)]
pub struct Load {
    /// One client per server instance; request `n` goes to `servers[n % len]`.
    pub servers: Vec<Api>,
    pub batch: usize,
    pub pacer: Pacer,
    pub deadline: Instant,
    pub sent: Arc<SentLog>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Posts for its lanes in turn, one request at a time, each when the pacer says, until the
/// deadline or `cancel`.
pub async fn worker(load: Arc<Load>, mut lanes: Vec<Lane>, cancel: CancellationToken) -> LoadStats {
    let mut stats = LoadStats::new();
    if lanes.is_empty() || load.servers.is_empty() {
        return stats;
    }
    let mut rng = rand::rngs::StdRng::from_entropy();
    let lane_count = lanes.len();
    for turn in 0usize.. {
        // Requests that fell behind schedule are not made up after the deadline: the bench
        // ends on time, and the achieved rate shows the shortfall.
        if cancel.is_cancelled() || Instant::now() >= load.deadline {
            break;
        }
        let ticket = load.pacer.take();
        if let Some(due) = ticket.due {
            if due >= load.deadline {
                break;
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(due) => {}
            }
            stats
                .schedule_lag_us
                .saturating_record(micros(due.elapsed()));
        }
        let api = &load.servers[(ticket.number % load.servers.len() as u64) as usize];
        let lane = &mut lanes[turn % lane_count];
        let positions = lane.next_batch(load.batch, &mut rng);
        stats.positions_sent += positions.len() as u64;
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
        load.sent.record(lane.vehicle_id, &recorded, started);
        let result = tokio::select! {
            () = cancel.cancelled() => break,
            result = api.post_positions(&lane.ingest_token, body) => result,
        };
        match result {
            Ok(reply) => {
                stats
                    .latency_us
                    .saturating_record(micros(started.elapsed()));
                stats.requests_ok += 1;
                stats.positions += positions.len() as u64;
                stats.accepted += reply.accepted;
                stats.duplicates += reply.duplicates;
                stats.filtered += reply.filtered;
                *stats
                    .published_by_vehicle
                    .entry(lane.vehicle_id)
                    .or_default() += reply.accepted.saturating_sub(reply.filtered);
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
    fn the_sent_log_times_each_position_of_a_request() {
        let log = SentLog::new([1, 2]);
        let t0 = log.epoch + Duration::from_millis(5);
        log.record(1, &[100, 101, 102], t0);
        log.record(1, &[103], t0 + Duration::from_secs(1));
        let at = |ms| log.latency(1, ms, t0 + Duration::from_secs(2));
        assert_eq!(at(101), Some(Duration::from_secs(2)));
        assert_eq!(at(103), Some(Duration::from_secs(1)));
        assert_eq!(at(104), None);
        assert_eq!(at(99), None);
        assert_eq!(log.latency(2, 101, t0), None, "another vehicle");
        assert_eq!(log.latency(9, 101, t0), None, "not a bench vehicle");
        log.record(9, &[1], t0);
    }

    #[test]
    fn the_sent_log_keeps_the_last_requests_of_each_vehicle() {
        let log = SentLog::new([1]);
        let t0 = log.epoch;
        let first_ms = 1_763_806_530_250;
        for i in 0..SENT_RING as i64 + 10 {
            // Batches of 3 consecutive milliseconds, with a gap between requests.
            let ms = first_ms + i * 10;
            log.record(
                1,
                &[ms, ms + 1, ms + 2],
                t0 + Duration::from_micros(i as u64 * 7),
            );
        }
        let received = t0 + Duration::from_secs(1);
        assert_eq!(
            log.latency(1, first_ms + 9 * 10 + 2, received),
            None,
            "forgotten"
        );
        let newest = first_ms + (SENT_RING as i64 + 9) * 10;
        let sent = (SENT_RING as u64 + 9) * 7;
        assert_eq!(
            log.latency(1, newest + 1, received),
            Some(Duration::from_micros(1_000_000 - sent))
        );
        assert_eq!(log.latency(1, newest + 3, received), None, "in the gap");
        let oldest_kept = first_ms + 10 * 10;
        assert!(log.latency(1, oldest_kept, received).is_some());
    }

    #[test]
    fn send_ticks_survive_the_wrap_of_the_microsecond_clock() {
        let log = SentLog::new([1]);
        let before_wrap = log.epoch + Duration::from_micros((1 << 32) - 500);
        log.record(1, &[42], before_wrap);
        assert_eq!(
            log.latency(1, 42, before_wrap + Duration::from_micros(1_500)),
            Some(Duration::from_micros(1_500))
        );
    }

    #[test]
    fn runs_split_at_gaps_and_at_the_largest_run() {
        assert!(runs(&[]).is_empty());
        assert_eq!(runs(&[5, 6, 7, 9, 10, 20]), [(5, 3), (9, 2), (20, 1)]);
        let long: Vec<i64> = (0..MAX_RUN as i64 + 1).collect();
        assert_eq!(runs(&long), [(0, MAX_RUN), (MAX_RUN as i64, 1)]);
        // A run straddling the millisecond modulus still covers its tail.
        let edge = MS_MODULUS * 400_000 - 2;
        let word = pack(edge, 4, 77);
        assert_eq!(unpack_if_covers(word, edge + 3), Some(77));
        assert_eq!(unpack_if_covers(word, edge + 4), None);
        assert_eq!(unpack_if_covers(word, edge - 1), None);
        assert_eq!(unpack_if_covers(0, 0), None, "empty entry");
    }

    #[test]
    fn the_pacer_spreads_requests_evenly_or_not_at_all() {
        let start = Instant::now();
        let paced = Pacer::new(start, 2_000, 10);
        let tickets: Vec<Ticket> = (0..3).map(|_| paced.take()).collect();
        assert_eq!(
            tickets.iter().map(|t| t.number).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        // 2000 positions/s in batches of 10 is a request every 5 ms.
        assert_eq!(tickets[0].due, Some(start));
        assert_eq!(tickets[2].due, Some(start + Duration::from_millis(10)));
        assert_eq!(
            Pacer::new(start, 3, 1).due(1),
            Some(start + Duration::from_nanos(333_333_333))
        );
        let unpaced = Pacer::new(start, 0, 10);
        assert_eq!(
            unpaced.take(),
            Ticket {
                number: 0,
                due: None
            }
        );
        assert_eq!(unpaced.take().number, 1);
    }

    #[test]
    fn merged_stats_add_up_per_vehicle() {
        let mut a = LoadStats::new();
        a.published_by_vehicle.insert(1, 5);
        a.errors.insert("503 unavailable".into(), 1);
        let mut b = LoadStats::new();
        b.published_by_vehicle.insert(1, 2);
        b.published_by_vehicle.insert(2, 1);
        b.errors.insert("503 unavailable".into(), 2);
        b.positions_sent = 9;
        a.merge(&b);
        assert_eq!(a.published_by_vehicle[&1], 7);
        assert_eq!(a.published_by_vehicle[&2], 1);
        assert_eq!(a.errors["503 unavailable"], 3);
        assert_eq!(a.positions_sent, 9);
    }

    /// A stand-in for `POST /api/v1/positions` on loopback that accepts everything and counts
    /// the requests it answered.
    async fn fake_ingest() -> (reqwest::Url, Arc<AtomicU64>) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            reqwest::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let answered = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&answered);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut socket = BufReader::new(socket);
                    loop {
                        let mut length = 0;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse().unwrap();
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        socket.read_exact(&mut body).await.unwrap();
                        let reply = r#"{"accepted":1,"duplicates":0,"filtered":0,"seqs":[1]}"#;
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\n\r\n{reply}",
                            reply.len()
                        );
                        count.fetch_add(1, Ordering::Relaxed);
                        socket
                            .get_mut()
                            .write_all(response.as_bytes())
                            .await
                            .unwrap();
                    }
                });
            }
        });
        (url, answered)
    }

    #[tokio::test]
    async fn paced_workers_offer_the_rate_round_robin_over_the_servers() {
        let (a, answered_a) = fake_ingest().await;
        let (b, answered_b) = fake_ingest().await;
        let creds = crate::api::Credentials {
            email: "bench@example.test".into(),
            password: "x".into(),
        };
        let first = Api::new(&a, creds).unwrap();
        let servers = vec![first.clone(), first.at(&b).unwrap()];
        let sent = Arc::new(SentLog::new([1, 2, 3, 4]));
        let start = Instant::now();
        // 400 positions/s for half a second: requests due at 0, 2.5, … 497.5 ms.
        let load = Arc::new(Load {
            servers,
            batch: 1,
            pacer: Pacer::new(start, 400, 1),
            deadline: start + Duration::from_millis(500),
            sent: Arc::clone(&sent),
        });
        let lane = |id| Lane::new(id, format!("token-{id}"), LatLon::new(48.1, 11.5), None);
        let cancel = CancellationToken::new();
        let workers = [
            tokio::spawn(worker(
                Arc::clone(&load),
                vec![lane(1), lane(2)],
                cancel.clone(),
            )),
            tokio::spawn(worker(
                Arc::clone(&load),
                vec![lane(3), lane(4)],
                cancel.clone(),
            )),
        ];
        let mut stats = LoadStats::new();
        for w in workers {
            stats.merge(&w.await.unwrap());
        }
        let elapsed = start.elapsed();
        // A machine that keeps up sends all 200; a busy one drops the requests it could not
        // start before the deadline, as the bench must. Either way the requests sent are
        // tickets 0, 1, … n-1: each sent at or after its due time, to server n % 2.
        let n = stats.requests_ok;
        assert!((1..=200).contains(&n), "{n} requests: {:?}", stats.errors);
        assert_eq!(stats.requests_failed, 0, "{:?}", stats.errors);
        assert_eq!(stats.positions_sent, n);
        let last_due = Duration::from_micros(2_500 * (n - 1));
        assert!(
            elapsed >= last_due.max(Duration::from_millis(495)),
            "paced, not flat out: {n} requests in {elapsed:?}"
        );
        assert_eq!(answered_a.load(Ordering::Relaxed), n.div_ceil(2));
        assert_eq!(answered_b.load(Ordering::Relaxed), n / 2);
        assert_eq!(stats.published_by_vehicle.values().sum::<u64>(), n);
        assert_eq!(stats.schedule_lag_us.len(), n);
        // Every request was logged for its vehicle before it went out.
        for (lane, vehicle) in (1..=4).enumerate() {
            let published = stats.published_by_vehicle.get(&vehicle).copied();
            let logged = sent.writes[lane].load(Ordering::Relaxed) as u64;
            assert_eq!(published.unwrap_or(0), logged, "vehicle {vehicle}");
        }
    }
}
