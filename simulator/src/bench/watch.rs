//! Bench subscribers: WebSocket clients that watch the `fleet` topic or the topics of a few
//! vehicles, and time each position event from the moment its POST was sent. Each subscriber is
//! one task with a few counters; latencies go into a shared histogram in small batches, so ten
//! thousand of them fit in one process.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::DateTime;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use reqwest::Url;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::load::SentLog;
use super::new_histogram;
use crate::config::Shape;

type Socket = WebSocketStream<TcpStream>;
/// Connecting, the hello and the subscriptions must each come within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The server drops a connection that has sent nothing for 60 s.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// Frames are small; tungstenite's default read buffer of 128 KiB per connection would cost
/// more than a gigabyte for 10 000 subscribers.
const READ_BUFFER: usize = 8 * 1024;
/// Latency samples a subscriber keeps before adding them to the shared histogram.
const FLUSH_EVERY: usize = 64;
/// How often at most a receiving subscriber tells the bench it is still receiving.
const PROGRESS_EVERY: Duration = Duration::from_millis(10);
/// Shards of the shared latency histogram, so that flushes from many tasks seldom meet.
const LATENCY_SHARDS: usize = 16;

/// What one subscriber watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// The organisation's `fleet` topic: every position.
    Fleet,
    /// The `vehicle:{id}` topics of these vehicles.
    Vehicles(Vec<i64>),
    /// The `shipment:{id}` topic of a shipment, whose positions are its vehicle's.
    Shipment { shipment: i64, vehicle: i64 },
}

impl Watch {
    /// What subscriber number `index` watches in `shape`, given the bench vehicles and their
    /// (shipment, vehicle) pairs: in `fleet`, `per` vehicles (fewer if there are fewer);
    /// `shipment` needs at least one pair.
    pub fn for_subscriber(
        shape: Shape,
        index: usize,
        vehicles: &[i64],
        shipments: &[(i64, i64)],
        per: usize,
    ) -> Self {
        match shape {
            Shape::Broadcast => Self::Fleet,
            Shape::Fleet => Self::Vehicles(deal(index, vehicles, per)),
            Shape::Shipment => {
                let (shipment, vehicle) = shipments[index % shipments.len()];
                Self::Shipment { shipment, vehicle }
            }
        }
    }

    fn topics(&self) -> Vec<String> {
        match self {
            Self::Fleet => vec!["fleet".to_owned()],
            Self::Vehicles(ids) => ids.iter().map(|id| format!("vehicle:{id}")).collect(),
            Self::Shipment { shipment, .. } => vec![format!("shipment:{shipment}")],
        }
    }

    /// Whether an event on `topic` about `vehicle_id` is one this subscriber is timing.
    fn wants(&self, topic: &str, vehicle_id: i64) -> bool {
        match self {
            Self::Fleet => topic == "fleet",
            Self::Vehicles(ids) => {
                topic
                    .strip_prefix("vehicle:")
                    .and_then(|id| id.parse::<i64>().ok())
                    == Some(vehicle_id)
                    && ids.contains(&vehicle_id)
            }
            Self::Shipment { shipment, vehicle } => {
                topic
                    .strip_prefix("shipment:")
                    .and_then(|id| id.parse::<i64>().ok())
                    == Some(*shipment)
                    && vehicle_id == *vehicle
            }
        }
    }
}

/// Deals `vehicles` out round-robin, `per` to a subscriber: subscriber `i` gets the vehicles at
/// positions `i·per`, `i·per + 1`, … (modulo their number), so they are distinct, and every
/// vehicle has a watcher as soon as there are `vehicles / per` subscribers.
pub fn deal(subscriber: usize, vehicles: &[i64], per: usize) -> Vec<i64> {
    let n = vehicles.len();
    if n == 0 {
        return Vec::new();
    }
    let per = per.min(n);
    (0..per)
        .map(|j| vehicles[(subscriber % n * per + j) % n])
        .collect()
}

/// When the last position frame arrived at any subscriber, in µs since the bench epoch; lets
/// the bench stop listening once deliveries have died down.
#[derive(Debug)]
pub struct Progress {
    epoch: Instant,
    last_delivery_us: AtomicU64,
}

impl Progress {
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            last_delivery_us: AtomicU64::new(0),
        }
    }

    fn delivered(&self, at: Instant) {
        let us = u64::try_from(at.duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX);
        self.last_delivery_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The last delivery, if any (to within `PROGRESS_EVERY`).
    pub fn last_delivery(&self) -> Option<Instant> {
        match self.last_delivery_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.epoch + Duration::from_micros(us)),
        }
    }
}

/// POST sent → frame received, in µs, from every subscriber.
#[derive(Debug)]
pub struct LatencySink {
    shards: Box<[Mutex<Histogram<u64>>]>,
}

impl LatencySink {
    pub fn new() -> Self {
        Self {
            shards: (0..LATENCY_SHARDS)
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// Adds and clears `samples` (µs) in the shard picked by `hint`.
    fn add(&self, hint: usize, samples: &mut Vec<u64>) {
        let mut shard = self.shards[hint % self.shards.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for us in samples.drain(..) {
            shard.saturating_record(us.max(1));
        }
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            // Same bounds on both sides, so adding cannot fail.
            let _ = all.add(&*shard);
        }
        all
    }
}

/// What all subscribers share.
#[derive(Debug)]
pub struct Shared {
    pub sent: Arc<SentLog>,
    pub latency: LatencySink,
    pub progress: Progress,
}

/// How a subscriber's connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The bench stopped it.
    Stopped,
    /// The server closed it with this code.
    Closed(u16),
    /// The connection ended without a close frame, or failed.
    Lost(String),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stopped => f.write_str("stopped by the bench"),
            Self::Closed(1012) => f.write_str("1012 server restarting (resume)"),
            Self::Closed(4008) => f.write_str("4008 too slow (resume)"),
            Self::Closed(code) => write!(f, "closed by the server with {code}"),
            Self::Lost(why) => f.write_str(why),
        }
    }
}

/// What one subscriber saw.
#[derive(Debug)]
pub struct WatchStats {
    /// Position frames on the watched topics.
    pub deliveries: u64,
    /// Position frames that match no remembered send (too old, or not posted by this bench).
    pub unmatched: u64,
    pub error_frames: u64,
    pub last_delivery: Option<Instant>,
    /// Whether it got as far as its subscriptions being confirmed.
    pub subscribed: bool,
    pub ended: Ended,
}

impl WatchStats {
    pub fn new() -> Self {
        Self {
            subscribed: false,
            deliveries: 0,
            unmatched: 0,
            error_frames: 0,
            last_delivery: None,
            ended: Ended::Stopped,
        }
    }
}

/// A subscriber's running tally, flushed into [`Shared`] in batches.
struct Tally {
    stats: WatchStats,
    shard: usize,
    pending: Vec<u64>,
    reported: Option<Instant>,
}

impl Tally {
    fn new(shard: usize) -> Self {
        Self {
            stats: WatchStats::new(),
            shard,
            pending: Vec::new(),
            reported: None,
        }
    }

    fn flush(&mut self, shared: &Shared) {
        if !self.pending.is_empty() {
            shared.latency.add(self.shard, &mut self.pending);
        }
    }
}

/// One subscriber to open.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub index: usize,
    /// The WebSocket URL, with the session token: never put it in a message.
    pub url: Url,
    /// The local address to connect from; the system's choice if none.
    pub source: Option<IpAddr>,
    pub watch: Watch,
}

/// Reported once per subscriber when its subscriptions are confirmed, or when it gave up.
pub type Ready = (usize, Result<(), String>);

/// Connects (while holding a permit of `gate`, which bounds concurrent handshakes), subscribes,
/// reports on `ready`, then times events until `stop`.
pub async fn subscriber(
    me: Subscriber,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<Ready>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> WatchStats {
    let connected = {
        let permit = tokio::select! {
            () = stop.cancelled() => return WatchStats::new(),
            permit = gate.acquire() => permit,
        };
        let connected = tokio::select! {
            () = stop.cancelled() => return WatchStats::new(),
            connected = connect(&me.url, me.source, &me.watch) => connected,
        };
        drop(permit);
        connected
    };
    match connected {
        Ok(ws) => {
            let _ = ready.send((me.index, Ok(()))).await;
            drop(ready);
            watch(ws, &me, &shared, stop).await
        }
        Err(e) => {
            let why = format!("{e:#}");
            let _ = ready.send((me.index, Err(why.clone()))).await;
            let mut stats = WatchStats::new();
            stats.ended = Ended::Lost(why);
            stats
        }
    }
}

/// Opens a connection (from `source`, if given), waits for the hello, subscribes to every topic
/// of `watch` at once and waits for all the confirmations.
async fn connect(url: &Url, source: Option<IpAddr>, watch: &Watch) -> anyhow::Result<Socket> {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, open_tcp(url, source))
        .await
        .context("TCP connect timed out")??;
    // The URL carries the session token, so it never goes into an error message.
    let (mut ws, _) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config)),
    )
    .await
    .context("WebSocket connect timed out")?
    .context("WebSocket connect failed")?;
    expect_frames(&mut ws, "hello", 1).await?;
    let topics = watch.topics();
    for (i, topic) in topics.iter().enumerate() {
        let frame = serde_json::json!({"type": "subscribe", "topic": topic, "ref": i});
        ws.feed(Message::text(frame.to_string()))
            .await
            .context("cannot send subscribe")?;
    }
    ws.flush().await.context("cannot send subscribe")?;
    expect_frames(&mut ws, "subscribed", topics.len()).await?;
    Ok(ws)
}

/// A TCP connection to the server of `url`, bound to `source` first when given: the kernel
/// finds a free local port per local address, so each address adds a port range's worth of
/// connections to one server port.
async fn open_tcp(url: &Url, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let host = url.host_str().context("the server URL has no host")?;
    let port = url
        .port_or_known_default()
        .context("the server URL has no port")?;
    let server = tokio::net::lookup_host((host, port))
        .await
        .context("cannot resolve the server")?
        .find(|a| source.is_none_or(|s| s.is_ipv4() == a.is_ipv4()))
        .context("the server has no address of the source address's family")?;
    let socket = match server {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("cannot open a socket")?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("cannot bind to source address {ip}"))?;
    }
    let stream = socket.connect(server).await.context("TCP connect failed")?;
    stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
    Ok(stream)
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<PositionData<'a>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PositionData<'a> {
    vehicle_id: i64,
    #[serde(borrow)]
    recorded_at: Cow<'a, str>,
}

/// Reads until `count` frames of type `wanted` came; an error frame fails.
async fn expect_frames(ws: &mut Socket, wanted: &str, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut seen = 0;
    while seen < count {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("no {wanted:?} frame within {HANDSHAKE_TIMEOUT:?}"))?;
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => bail!(
                "server closed the WebSocket: {}",
                frame.map_or_else(String::new, |f| format!(
                    "{} {}",
                    u16::from(f.code),
                    f.reason
                ))
            ),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("WebSocket failed"),
            None => bail!("server closed the WebSocket"),
        };
        let frame: Frame<'_> = serde_json::from_str(text.as_str())
            .with_context(|| format!("not a protocol frame: {}", truncate(text.as_str())))?;
        match frame.kind.as_ref() {
            kind if kind == wanted => seen += 1,
            "error" => bail!(
                "server refused: {}",
                frame.code.as_deref().unwrap_or("unknown error")
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Reads frames until `stop`, timing every watched position event against its send.
async fn watch(
    mut ws: Socket,
    me: &Subscriber,
    shared: &Shared,
    stop: CancellationToken,
) -> WatchStats {
    let mut tally = Tally::new(me.index);
    tally.stats.subscribed = true;
    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = keepalive.tick() => {
                if let Err(e) = ws.send(Message::text(r#"{"type":"ping"}"#)).await {
                    tally.stats.ended = Ended::Lost(format!("send failed: {e}"));
                    break;
                }
            }
            message = ws.next() => {
                let received = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        handle(text.as_str(), received, &me.watch, shared, &mut tally);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        tally.stats.ended = match frame {
                            Some(f) => Ended::Closed(u16::from(f.code)),
                            None => Ended::Lost("closed without a code".into()),
                        };
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tally.stats.ended = Ended::Lost(format!("connection failed: {e}"));
                        break;
                    }
                    None => {
                        tally.stats.ended = Ended::Lost("connection ended".into());
                        break;
                    }
                }
            }
        }
    }
    tally.flush(shared);
    if tally.stats.ended == Ended::Stopped {
        // A polite close; the server may already be gone, which is fine.
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    tally.stats
}

fn handle(text: &str, received: Instant, watch: &Watch, shared: &Shared, tally: &mut Tally) {
    let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else {
        tally.stats.error_frames += 1;
        return;
    };
    match frame.kind.as_ref() {
        "position" => {
            let (Some(topic), Some(data)) = (frame.topic, frame.data) else {
                tally.stats.error_frames += 1;
                return;
            };
            if !watch.wants(&topic, data.vehicle_id) {
                return;
            }
            let stats = &mut tally.stats;
            stats.deliveries += 1;
            stats.last_delivery = Some(received);
            if tally
                .reported
                .is_none_or(|at| received.duration_since(at) >= PROGRESS_EVERY)
            {
                shared.progress.delivered(received);
                tally.reported = Some(received);
            }
            let latency = DateTime::parse_from_rfc3339(&data.recorded_at)
                .ok()
                .and_then(|t| {
                    shared
                        .sent
                        .latency(data.vehicle_id, t.timestamp_millis(), received)
                });
            match latency {
                Some(latency) => {
                    tally
                        .pending
                        .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
                    if tally.pending.len() >= FLUSH_EVERY {
                        tally.flush(shared);
                    }
                }
                None => stats.unmatched += 1,
            }
        }
        "error" => {
            tally.stats.error_frames += 1;
            tracing::debug!(
                "subscriber got an error frame: {}",
                frame.code.as_deref().unwrap_or("?")
            );
        }
        _ => {}
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const FRAME: &str = r#"{"type":"position","topic":"fleet","seq":5,"data":{"vehicle_id":7,
        "shipment_id":null,"lat":48.1,"lon":11.5,"recorded_at":"2025-11-22T10:15:30.250Z",
        "received_at":"2025-11-22T10:15:30.412Z","late":false}}"#;
    const RECORDED_MS: i64 = 1_763_806_530_250;

    fn shared(vehicles: &[i64]) -> Shared {
        Shared {
            sent: Arc::new(SentLog::new(vehicles.iter().copied())),
            latency: LatencySink::new(),
            progress: Progress::new(Instant::now()),
        }
    }

    #[test]
    fn fleet_events_are_matched_to_their_send() {
        let shared = shared(&[7]);
        let sent_at = Instant::now();
        shared.sent.record(7, &[RECORDED_MS], sent_at);
        let mut tally = Tally::new(3);
        let watch = Watch::Fleet;
        let received = sent_at + Duration::from_millis(3);
        handle(FRAME, received, &watch, &shared, &mut tally);
        assert_eq!((tally.stats.deliveries, tally.stats.unmatched), (1, 0));

        // Another offset spelling of the same instant still matches.
        let same = FRAME.replace("10:15:30.250Z", "11:15:30.250+01:00");
        handle(&same, received, &watch, &shared, &mut tally);
        assert_eq!(tally.stats.unmatched, 0);

        let unknown = FRAME.replace("\"vehicle_id\":7", "\"vehicle_id\":8");
        handle(&unknown, received, &watch, &shared, &mut tally);
        assert_eq!((tally.stats.deliveries, tally.stats.unmatched), (3, 1));

        let other_topic = FRAME.replace("\"fleet\"", "\"vehicle:7\"");
        handle(&other_topic, received, &watch, &shared, &mut tally);
        assert_eq!(
            tally.stats.deliveries, 3,
            "a fleet watcher times fleet events only"
        );

        handle(r#"{"type":"pong"}"#, received, &watch, &shared, &mut tally);
        handle("not json", received, &watch, &shared, &mut tally);
        assert_eq!(tally.stats.deliveries, 3);
        assert_eq!(tally.stats.error_frames, 1);
        assert_eq!(tally.stats.last_delivery, Some(received));
        assert!(shared.progress.last_delivery().is_some());

        // Samples wait in the subscriber until a flush, then land in the shared histogram.
        assert!(shared.latency.merged().is_empty());
        tally.flush(&shared);
        let merged = shared.latency.merged();
        assert_eq!(merged.len(), 2);
        assert!(
            merged.min() >= 2_990 && merged.max() <= 3_010,
            "{}",
            merged.max()
        );
    }

    #[test]
    fn a_vehicle_watcher_times_only_its_own_vehicles() {
        let shared = shared(&[7, 8]);
        let sent_at = Instant::now();
        shared.sent.record(7, &[RECORDED_MS], sent_at);
        shared.sent.record(8, &[RECORDED_MS], sent_at);
        let mut tally = Tally::new(0);
        let watch = Watch::Vehicles(vec![7, 9]);
        let mine = FRAME.replace("\"fleet\"", "\"vehicle:7\"");
        handle(&mine, sent_at, &watch, &shared, &mut tally);
        let fleet = FRAME;
        handle(fleet, sent_at, &watch, &shared, &mut tally);
        let other = mine
            .replace("\"vehicle_id\":7", "\"vehicle_id\":8")
            .replace("vehicle:7", "vehicle:8");
        handle(&other, sent_at, &watch, &shared, &mut tally);
        assert_eq!((tally.stats.deliveries, tally.stats.unmatched), (1, 0));
        assert_eq!(
            watch.topics(),
            ["vehicle:7".to_owned(), "vehicle:9".to_owned()]
        );
    }

    #[test]
    fn a_shipment_watcher_times_its_vehicle_on_its_shipment_only() {
        let shared = shared(&[7, 8]);
        let sent_at = Instant::now();
        shared.sent.record(7, &[RECORDED_MS], sent_at);
        let mut tally = Tally::new(0);
        let watch = Watch::Shipment {
            shipment: 70,
            vehicle: 7,
        };
        let mine = FRAME.replace("\"fleet\"", "\"shipment:70\"");
        handle(&mine, sent_at, &watch, &shared, &mut tally);
        handle(FRAME, sent_at, &watch, &shared, &mut tally);
        let other = mine.replace("shipment:70", "shipment:71");
        handle(&other, sent_at, &watch, &shared, &mut tally);
        assert_eq!((tally.stats.deliveries, tally.stats.unmatched), (1, 0));
        assert_eq!(watch.topics(), ["shipment:70".to_owned()]);
    }

    #[test]
    fn many_samples_are_flushed_as_they_pile_up() {
        let shared = shared(&[7]);
        let sent_at = Instant::now();
        let mut tally = Tally::new(1);
        for i in 0..FLUSH_EVERY as i64 + 1 {
            shared.sent.record(7, &[RECORDED_MS + i], sent_at);
            let frame = FRAME.replace("10:15:30.250Z", &format!("10:15:30.{:03}Z", 250 + i));
            handle(&frame, sent_at, &Watch::Fleet, &shared, &mut tally);
        }
        assert_eq!(shared.latency.merged().len(), FLUSH_EVERY as u64);
        assert_eq!(tally.pending.len(), 1);
    }

    #[test]
    fn vehicles_are_dealt_round_robin_and_distinct() {
        let vehicles: Vec<i64> = (101..=125).collect();
        for s in 0..10 {
            let mine = deal(s, &vehicles, 10);
            assert_eq!(mine.len(), 10);
            let mut unique = mine.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), 10, "distinct: {mine:?}");
        }
        assert_eq!(deal(0, &vehicles, 10), (101..=110).collect::<Vec<_>>());
        assert_eq!(deal(2, &vehicles, 10)[..5], [121, 122, 123, 124, 125]);
        assert_eq!(deal(2, &vehicles, 10)[5..], [101, 102, 103, 104, 105]);

        // S × 10 ≥ V: every vehicle has a watcher, and the load is even.
        let vehicles: Vec<i64> = (1..=1000).collect();
        let mut watchers: HashMap<i64, usize> = HashMap::new();
        for s in 0..250 {
            for v in deal(s, &vehicles, 10) {
                *watchers.entry(v).or_default() += 1;
            }
        }
        assert_eq!(watchers.len(), 1000);
        assert!(
            watchers.values().all(|&n| (2..=3).contains(&n)),
            "{watchers:?}"
        );

        // Fewer vehicles than a subscriber's share: each watches them all.
        assert_eq!(deal(5, &[1, 2, 3], 10).len(), 3);
        assert_eq!(
            Watch::for_subscriber(Shape::Broadcast, 5, &[1, 2], &[], 10),
            Watch::Fleet
        );
        assert_eq!(
            Watch::for_subscriber(Shape::Fleet, 1, &[1, 2, 3], &[], 10),
            Watch::Vehicles(vec![1, 2, 3])
        );
        let shipments = [(10, 1), (20, 2)];
        assert_eq!(
            Watch::for_subscriber(Shape::Shipment, 3, &[1, 2], &shipments, 10),
            Watch::Shipment {
                shipment: 20,
                vehicle: 2
            }
        );
    }

    #[test]
    fn resume_codes_are_named() {
        assert_eq!(Ended::Closed(4008).to_string(), "4008 too slow (resume)");
        assert_eq!(
            Ended::Closed(1012).to_string(),
            "1012 server restarting (resume)"
        );
        assert_eq!(
            Ended::Closed(1011).to_string(),
            "closed by the server with 1011"
        );
    }

    /// What the stand-in server does once a client has subscribed.
    enum Then {
        /// Send this frame when told to, then close with this code.
        SendAndClose(String, u16),
        /// Answer the subscriptions with an error instead.
        Refuse,
    }

    /// A stand-in for `GET /api/v1/ws` on loopback that speaks just enough of the protocol.
    /// Accepts one connection, from `from` if given (else it drops it).
    async fn fake_hub(
        then: Then,
        from: Option<IpAddr>,
        go: tokio::sync::oneshot::Receiver<()>,
    ) -> Url {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!(
            "ws://{}/api/v1/ws?token=t",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        tokio::spawn(async move {
            let (socket, peer) = listener.accept().await.unwrap();
            if from.is_some_and(|ip| ip != peer.ip()) {
                return;
            }
            let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
            ws.send(Message::text(
                r#"{"type":"hello","server_time":"x","user":null}"#,
            ))
            .await
            .unwrap();
            let mut subscribed = 0;
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                let reply = match then {
                    Then::Refuse => serde_json::json!({"type": "error", "code": "forbidden",
                        "message": "no", "ref": frame["ref"]}),
                    Then::SendAndClose(..) => serde_json::json!({"type": "subscribed",
                        "topic": frame["topic"], "snapshot": {"seq": 1}, "ref": frame["ref"]}),
                };
                ws.send(Message::text(reply.to_string())).await.unwrap();
                subscribed += 1;
                if subscribed == 2 {
                    break;
                }
            }
            if let Then::SendAndClose(frame, code) = then {
                let _ = go.await;
                ws.send(Message::text(frame)).await.unwrap();
                let close = CloseFrame {
                    code: CloseCode::from(code),
                    reason: "too slow".into(),
                };
                let _ = ws.close(Some(close)).await;
                while ws.next().await.is_some() {}
            }
        });
        url
    }

    #[tokio::test]
    async fn a_subscriber_connects_from_its_source_subscribes_times_its_events_and_counts_a_resume_close(
    ) {
        let frame = FRAME.replace("\"fleet\"", "\"vehicle:7\"");
        let (go_tx, go) = tokio::sync::oneshot::channel();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let url = fake_hub(Then::SendAndClose(frame, 4008), Some(source), go).await;
        let shared = Arc::new(shared(&[7, 9]));
        let (ready_tx, mut ready) = mpsc::channel(1);
        let me = Subscriber {
            index: 0,
            url,
            source: Some(source),
            watch: Watch::Vehicles(vec![7, 9]),
        };
        let task = tokio::spawn(subscriber(
            me,
            Arc::new(Semaphore::new(1)),
            ready_tx,
            Arc::clone(&shared),
            CancellationToken::new(),
        ));
        assert_eq!(ready.recv().await, Some((0, Ok(()))));
        shared.sent.record(7, &[RECORDED_MS], Instant::now());
        go_tx.send(()).unwrap();
        let stats = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert!(stats.subscribed);
        assert_eq!(stats.ended, Ended::Closed(4008));
        assert_eq!((stats.deliveries, stats.unmatched), (1, 0));
        assert_eq!(shared.latency.merged().len(), 1, "flushed on the way out");
    }

    #[tokio::test]
    async fn a_refused_subscription_is_reported_and_ends_the_subscriber() {
        let (_go_tx, go) = tokio::sync::oneshot::channel();
        let url = fake_hub(Then::Refuse, None, go).await;
        let (ready_tx, mut ready) = mpsc::channel(1);
        let me = Subscriber {
            index: 4,
            url,
            source: None,
            watch: Watch::Vehicles(vec![7, 9]),
        };
        let stats = subscriber(
            me,
            Arc::new(Semaphore::new(1)),
            ready_tx,
            Arc::new(shared(&[7, 9])),
            CancellationToken::new(),
        )
        .await;
        let (index, outcome) = ready.recv().await.unwrap();
        assert_eq!(index, 4);
        assert_eq!(outcome, Err("server refused: forbidden".to_owned()));
        assert!(!stats.subscribed);
    }
}
