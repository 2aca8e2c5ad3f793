//! A vehicle's queue of fixes waiting to be posted: kept in memory through outages and signal
//! losses, sent oldest first in as few requests as the protocol allows (batches for native
//! ingest, one fix per request for the apps), one request at a time.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;

use chrono::{DateTime, Utc};

use super::protocol::{Device, Reading};
use crate::api::{Api, ApiError, IngestReply, MAX_BATCH};
use crate::backoff::Backoff;

/// The server takes 10 requests a second per vehicle (after a burst); a phone that keeps to
/// that never sees a 429, and its queue turns into bigger batches instead.
pub const REQUEST_GAP: Duration = Duration::from_millis(100);

/// About 14 hours of the densest trace (1 Hz); past that the oldest fixes are dropped, so a
/// server that stays away cannot make the simulator grow without bound.
const MAX_QUEUED: usize = 50_000;

type Request = Pin<Box<dyn Future<Output = Result<IngestReply, ApiError>> + Send>>;

/// What became of a finished request.
#[derive(Debug)]
pub enum Settled {
    /// Committed by the server (and removed from the queue).
    Sent,
    /// A transient failure; the fixes stay queued and go again after a backoff.
    Retry,
    /// The server no longer accepts the vehicle's token; the fixes stay queued.
    Unauthorized,
    /// The server refused some fixes as invalid; they were dropped so the rest can go.
    Rejected,
}

pub struct Outbox {
    label: String,
    queue: VecDeque<Queued>,
    in_flight: Option<(usize, Request)>,
    retry_at: Option<Instant>,
    /// No request starts before this (see [`REQUEST_GAP`]).
    next_start: Option<Instant>,
    backoff: Backoff,
    batch_limit: usize,
    outage: Option<Outage>,
    /// False while the phone has no signal: fixes queue up, nothing is sent.
    online: bool,
    /// Fixes the server committed.
    sent: u64,
    /// Fixes refused or dropped for room.
    dropped: u64,
    backlogs: Vec<Backlog>,
}

struct Queued {
    reading: Reading,
    /// Recorded without signal and not yet announced as a backlog.
    held: bool,
}

/// The fixes a vehicle recorded without signal, sent when the signal came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub count: usize,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

/// Bookkeeping for one stretch of failures, so they are logged once, not once per retry.
struct Outage {
    since: Instant,
    dropped: u64,
}

impl Outbox {
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            queue: VecDeque::new(),
            in_flight: None,
            retry_at: None,
            next_start: None,
            backoff: Backoff::standard(),
            batch_limit: MAX_BATCH,
            outage: None,
            online: true,
            sent: 0,
            dropped: 0,
            backlogs: Vec::new(),
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn backlogs(&self) -> &[Backlog] {
        &self.backlogs
    }

    /// The phone gains or loses its signal. When it comes back, what was recorded meanwhile is
    /// the backlog, sent with whatever else is waiting before anything newer.
    pub fn set_online(&mut self, online: bool, batch_limit: usize) {
        if online && !self.online {
            let held: Vec<DateTime<Utc>> = self
                .queue
                .iter_mut()
                .filter(|q| q.held)
                .map(|q| {
                    q.held = false;
                    q.reading.position.recorded_at
                })
                .collect();
            if held.is_empty() {
                tracing::info!(vehicle = %self.label, "signal back; nothing recorded meanwhile");
            }
            if let (Some(&first), Some(&last)) = (held.first(), held.last()) {
                let how = if batch_limit > 1 {
                    "in one batch"
                } else {
                    "one request at a time, oldest first"
                };
                let n = held.len();
                tracing::info!(
                    vehicle = %self.label,
                    "signal back: sending the {n} fix{} recorded without it {how}",
                    if n == 1 { "" } else { "es" }
                );
                self.backlogs.push(Backlog {
                    count: held.len(),
                    first,
                    last,
                });
            }
        }
        self.online = online;
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing queued and nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_none()
    }

    pub fn push(&mut self, reading: Reading) {
        self.queue.push_back(Queued {
            reading,
            held: !self.online,
        });
        // The front of the queue belongs to the request in flight; trim only between requests.
        if self.queue.len() > MAX_QUEUED && self.in_flight.is_none() {
            let excess = self.queue.len() - MAX_QUEUED;
            self.queue.drain(..excess);
            self.dropped += excess as u64;
            let outage = self.outage.get_or_insert_with(|| Outage {
                since: Instant::now(),
                dropped: 0,
            });
            if outage.dropped == 0 {
                tracing::warn!(
                    vehicle = %self.label,
                    "more than {MAX_QUEUED} fixes waiting; dropping the oldest"
                );
            }
            outage.dropped += excess as u64;
        }
    }

    /// When the next attempt is due, if the outbox is waiting out a backoff.
    pub fn retry_at(&self) -> Option<Instant> {
        if self.in_flight.is_some() || self.queue.is_empty() {
            return None;
        }
        [self.retry_at, self.next_start]
            .into_iter()
            .flatten()
            .max()
            .filter(|&at| at > Instant::now())
    }

    /// Forgets the backoff, e.g. once a fresh token makes an immediate retry worthwhile.
    pub fn retry_now(&mut self) {
        self.retry_at = None;
    }

    /// Starts a request with the oldest queued fixes, unless one is in flight, nothing is
    /// queued, a backoff is running or there is no signal.
    pub fn start(&mut self, api: &Api, device: &Device) {
        if !self.online
            || self.in_flight.is_some()
            || self.queue.is_empty()
            || self.retry_at().is_some()
        {
            return;
        }
        let count = self
            .queue
            .len()
            .min(self.batch_limit)
            .min(device.protocol.batch_limit());
        let readings: Vec<Reading> = self
            .queue
            .iter()
            .take(count)
            .map(|q| q.reading.clone())
            .collect();
        let wire = match device.encode(&readings) {
            Ok(wire) => wire,
            Err(e) => {
                // Cannot happen with finite numbers; dropping beats retrying forever.
                tracing::error!(vehicle = %self.label, "cannot encode {count} fixes: {e}");
                self.queue.drain(..count);
                self.dropped += count as u64;
                return;
            }
        };
        let api = api.clone();
        self.in_flight = Some((count, Box::pin(async move { api.deliver(&wire).await })));
        self.next_start = Some(Instant::now() + REQUEST_GAP);
    }

    /// Waits for the request in flight; never finishes when there is none, so it can sit in a
    /// `select!` next to the replay clock.
    pub async fn finished(&mut self) -> Result<IngestReply, ApiError> {
        match self.in_flight.as_mut() {
            Some((_, request)) => request.await,
            None => std::future::pending().await,
        }
    }

    /// Applies the outcome of the request that [`finished`](Self::finished) returned.
    pub fn settle(&mut self, result: Result<IngestReply, ApiError>) -> Settled {
        let Some((count, _)) = self.in_flight.take() else {
            return Settled::Retry;
        };
        match result {
            Ok(reply) => {
                let count = count.min(self.queue.len());
                self.queue.drain(..count);
                self.sent += count as u64;
                self.backoff.reset();
                self.retry_at = None;
                if reply.filtered > 0 {
                    tracing::debug!(vehicle = %self.label, "server filtered {} fixes", reply.filtered);
                }
                if let Some(outage) = self.outage.take() {
                    tracing::info!(
                        vehicle = %self.label,
                        "positions accepted again after {:.0} s: {count} sent in one batch, \
                         {} still waiting, {} dropped",
                        outage.since.elapsed().as_secs_f64(),
                        self.queue.len(),
                        outage.dropped
                    );
                }
                Settled::Sent
            }
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => {
                self.back_off();
                Settled::Unauthorized
            }
            Err(e) if e.is_retryable() => {
                let delay = self.back_off();
                match &mut self.outage {
                    None => {
                        tracing::warn!(
                            vehicle = %self.label,
                            "cannot post positions ({e}); keeping them queued and retrying"
                        );
                        self.outage = Some(Outage {
                            since: Instant::now(),
                            dropped: 0,
                        });
                    }
                    Some(_) => {
                        tracing::debug!(vehicle = %self.label, "still failing ({e}); next try in {delay:?}")
                    }
                }
                Settled::Retry
            }
            Err(e) => {
                self.reject(count, &e);
                Settled::Rejected
            }
        }
    }

    fn back_off(&mut self) -> Duration {
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    fn reject(&mut self, count: usize, e: &ApiError) {
        match e {
            // A batch is refused whole for one bad item; drop just that one.
            ApiError::Status {
                status: StatusCode::BAD_REQUEST,
                index: Some(i),
                ..
            } if *i < count && count > 1 => {
                self.queue.remove(*i);
                self.dropped += 1;
                tracing::warn!(vehicle = %self.label, "server refused a fix ({e}); dropped it");
            }
            ApiError::Status {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..
            } if count > 1 => {
                self.batch_limit = (count / 2).max(1);
                tracing::warn!(vehicle = %self.label, "batch too large; sending at most {} fixes at once", self.batch_limit);
            }
            _ => {
                let count = count.min(self.queue.len());
                self.queue.drain(..count);
                self.dropped += count as u64;
                tracing::warn!(vehicle = %self.label, "server refused {count} fixes ({e}); dropped them");
            }
        }
        self.retry_at = None;
    }

    /// One last effort at shutdown: send what is queued if the server answers within `limit`.
    /// Returns how many fixes are left unsent.
    pub async fn flush(&mut self, api: &Api, device: &Device, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        self.retry_at = None;
        self.set_online(true, device.protocol.batch_limit());
        loop {
            // The last few requests may come faster than usual.
            self.next_start = None;
            self.start(api, device);
            if self.in_flight.is_none() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.finished()).await {
                Ok(result) => {
                    if !matches!(self.settle(result), Settled::Sent | Settled::Rejected) {
                        break;
                    }
                    self.retry_at = None;
                }
                Err(_) => {
                    self.in_flight = None;
                    break;
                }
            }
        }
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NewPosition;
    use crate::run::protocol::{Protocol, SpeedUnit};

    fn fix(ms: i64) -> Reading {
        Reading {
            position: NewPosition {
                lat: 53.4,
                lon: -2.9,
                recorded_at: DateTime::from_timestamp_millis(ms).unwrap_or_default(),
                accuracy: None,
                speed: None,
                heading: None,
                altitude: None,
                battery: None,
            },
            odometer_m: 0.0,
            motion_changed: false,
        }
    }

    /// Marks the first `count` queued fixes as in flight, without a server.
    fn fake_send(outbox: &mut Outbox, count: usize) {
        outbox.in_flight = Some((
            count,
            Box::pin(std::future::pending::<Result<IngestReply, ApiError>>()),
        ));
    }

    fn times(outbox: &Outbox) -> Vec<i64> {
        outbox
            .queue
            .iter()
            .map(|q| q.reading.position.recorded_at.timestamp_millis())
            .collect()
    }

    /// The fixes the next request would carry, as `start` picks them once the request gap has
    /// passed (the tests run on a paused clock).
    async fn next_request(outbox: &mut Outbox, protocol: Protocol) -> Option<Vec<i64>> {
        tokio::time::advance(REQUEST_GAP).await;
        let api = Api::new(
            &reqwest::Url::parse("http://127.0.0.1:9").unwrap(),
            crate::api::Credentials {
                email: "a@b".into(),
                password: "p".into(),
            },
        )
        .unwrap();
        let device = Device::new(protocol, "t".into(), SpeedUnit::Knots, "Test");
        outbox.start(&api, &device);
        let count = outbox.in_flight.as_ref()?.0;
        Some(times(outbox)[..count].to_vec())
    }

    fn settle_ok(outbox: &mut Outbox) {
        assert!(matches!(
            outbox.settle(Ok(IngestReply::default())),
            Settled::Sent
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_native_backlog_goes_in_one_batch_oldest_first_when_the_signal_returns() {
        let mut outbox = Outbox::new("test");
        outbox.push(fix(0));
        assert_eq!(
            next_request(&mut outbox, Protocol::Native).await,
            Some(vec![0])
        );
        settle_ok(&mut outbox);

        outbox.set_online(false, MAX_BATCH);
        (1..=5).for_each(|i| outbox.push(fix(i)));
        assert_eq!(
            next_request(&mut outbox, Protocol::Native).await,
            None,
            "no signal"
        );
        assert!(outbox.backlogs().is_empty());

        outbox.set_online(true, MAX_BATCH);
        outbox.push(fix(6));
        assert_eq!(
            outbox.backlogs(),
            [Backlog {
                count: 5,
                first: DateTime::from_timestamp_millis(1).unwrap(),
                last: DateTime::from_timestamp_millis(5).unwrap(),
            }]
        );
        assert_eq!(
            next_request(&mut outbox, Protocol::Native).await,
            Some(vec![1, 2, 3, 4, 5, 6])
        );
        settle_ok(&mut outbox);
        assert!(outbox.is_idle());
        assert_eq!((outbox.sent(), outbox.dropped()), (7, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_app_backlog_goes_one_request_at_a_time_oldest_first() {
        for protocol in [Protocol::Osmand, Protocol::Traccar, Protocol::Owntracks] {
            let mut outbox = Outbox::new("test");
            outbox.set_online(false, 1);
            (1..=3).for_each(|i| outbox.push(fix(i)));
            outbox.set_online(true, 1);
            let mut sent = Vec::new();
            while let Some(batch) = next_request(&mut outbox, protocol).await {
                sent.push(batch);
                settle_ok(&mut outbox);
            }
            assert_eq!(sent, [vec![1], vec![2], vec![3]], "{protocol}");
            assert_eq!(outbox.backlogs().len(), 1);
            assert_eq!(outbox.sent(), 3);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_waits_out_a_failing_server_and_is_sent_once() {
        let mut outbox = Outbox::new("test");
        outbox.set_online(false, MAX_BATCH);
        (1..=3).for_each(|i| outbox.push(fix(i)));
        outbox.set_online(true, MAX_BATCH);
        assert_eq!(
            next_request(&mut outbox, Protocol::Native).await,
            Some(vec![1, 2, 3])
        );
        outbox.settle(Err(ApiError::Network("refused".into())));
        outbox.push(fix(4));
        outbox.retry_now();
        assert_eq!(
            next_request(&mut outbox, Protocol::Native).await,
            Some(vec![1, 2, 3, 4]),
            "the same fixes with the same times, then the new one"
        );
        settle_ok(&mut outbox);
        assert_eq!(outbox.sent(), 4);
        assert_eq!(outbox.backlogs().len(), 1, "announced once");
    }

    fn status(code: u16, index: Option<usize>) -> ApiError {
        ApiError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            code: String::new(),
            message: String::new(),
            field: None,
            index,
        }
    }

    #[tokio::test]
    async fn sent_fixes_leave_the_queue_and_later_ones_stay() {
        let mut outbox = Outbox::new("test");
        (0..3).for_each(|i| outbox.push(fix(i)));
        fake_send(&mut outbox, 2);
        outbox.push(fix(3));
        assert!(matches!(
            outbox.settle(Ok(IngestReply::default())),
            Settled::Sent
        ));
        assert_eq!(times(&outbox), vec![2, 3]);
        assert_eq!(outbox.retry_at(), None);
    }

    // On a paused clock: the backoff is still running however long the machine takes between
    // the failure and the look at it.
    #[tokio::test(start_paused = true)]
    async fn transient_failures_keep_everything_and_back_off() {
        let mut outbox = Outbox::new("test");
        (0..3).for_each(|i| outbox.push(fix(i)));
        fake_send(&mut outbox, 3);
        let settled = outbox.settle(Err(ApiError::Network("refused".into())));
        assert!(matches!(settled, Settled::Retry));
        assert_eq!(times(&outbox), vec![0, 1, 2]);
        assert!(outbox.retry_at().is_some());

        fake_send(&mut outbox, 3);
        assert!(matches!(
            outbox.settle(Err(status(503, None))),
            Settled::Retry
        ));
        assert_eq!(outbox.len(), 3);

        fake_send(&mut outbox, 3);
        assert!(matches!(
            outbox.settle(Err(status(401, None))),
            Settled::Unauthorized
        ));
        assert_eq!(outbox.len(), 3);
    }

    #[tokio::test]
    async fn an_invalid_fix_is_dropped_alone() {
        let mut outbox = Outbox::new("test");
        (0..4).for_each(|i| outbox.push(fix(i)));
        fake_send(&mut outbox, 4);
        assert!(matches!(
            outbox.settle(Err(status(400, Some(2)))),
            Settled::Rejected
        ));
        assert_eq!(times(&outbox), vec![0, 1, 3]);
        assert_eq!(outbox.retry_at(), None, "the rest goes at once");

        fake_send(&mut outbox, 1);
        outbox.settle(Err(status(400, None)));
        assert_eq!(times(&outbox), vec![1, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_keep_under_the_servers_rate_limit() {
        let mut outbox = Outbox::new("test");
        (0..3).for_each(|i| outbox.push(fix(i)));
        assert_eq!(
            next_request(&mut outbox, Protocol::Traccar).await,
            Some(vec![0])
        );
        settle_ok(&mut outbox);
        let api = Api::new(
            &reqwest::Url::parse("http://127.0.0.1:9").unwrap(),
            crate::api::Credentials {
                email: "a@b".into(),
                password: "p".into(),
            },
        )
        .unwrap();
        let device = Device::new(Protocol::Traccar, "t".into(), SpeedUnit::Knots, "Test");
        // Answered at once, the next request still waits for its turn.
        outbox.start(&api, &device);
        assert!(outbox.in_flight.is_none());
        let wake = outbox.retry_at().expect("a time to try again");
        assert!(wake <= Instant::now() + REQUEST_GAP);
        tokio::time::advance(REQUEST_GAP).await;
        outbox.start(&api, &device);
        assert!(outbox.in_flight.is_some());
    }

    #[tokio::test]
    async fn too_large_batches_are_halved() {
        let mut outbox = Outbox::new("test");
        (0..10).for_each(|i| outbox.push(fix(i)));
        fake_send(&mut outbox, 10);
        outbox.settle(Err(status(413, None)));
        assert_eq!(outbox.len(), 10);
        assert_eq!(outbox.batch_limit, 5);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_dropping_the_oldest() {
        let mut outbox = Outbox::new("test");
        for i in 0..(MAX_QUEUED as i64 + 10) {
            outbox.push(fix(i));
        }
        assert_eq!(outbox.len(), MAX_QUEUED);
        assert_eq!(times(&outbox)[0], 10);
    }
}
