//! Fan-out across instances through Redis pub/sub.
//!
//! After each commit the writer's instance publishes every event on its topic's channel (the
//! frame, serialised once) and then announces the batch's seq range on one shared channel. Each
//! instance holds one pub/sub connection, subscribed to the range channel and to the channels of
//! the topics it has local subscribers for, and nothing else. Events are gathered until their
//! range is announced, then handed to the [`Sequencer`], which delivers in seq order and fills
//! whatever Redis did not bring (an outage, a dropped connection) from PostGIS. So Redis being
//! down costs latency, never events, and needs no restart: the connection is retried with backoff.
//! A range is only complete if no subscription began between its events and it: batches are
//! published in a MULTI/EXEC transaction and a (re)connecting instance subscribes all its
//! channels in one SUBSCRIBE, each of which Redis carries out as one step.
//!
//! Ephemeral chat frames (typing, presence) need no order and have no seq: they go on a channel
//! of their own per conversation, straight to the other instances' hubs. Who is in a
//! conversation is kept in Redis as a sorted set of `instance|participant|name` scored by expiry,
//! which each instance refreshes for its own sockets, so an instance that dies drops out by
//! itself.
//!
//! Revocations (a share link revoked, a user disabled, an ingest token rotated, a driver's
//! assignment changed) go on one shared channel too, so every instance closes the sockets,
//! forgets the tokens and re-checks the subscriptions they name at once.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use tokio::sync::{mpsc, Mutex};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Batch, Hub, Published, Sequencer, TopicKey};
use crate::{
    auth::{token, Revocations, Revoked},
    security::SharedBuckets,
};

/// Batches waiting to be published; past this the oldest are dropped (other instances then
/// read them from the database).
const PUBLISH_QUEUE: usize = 4096;
/// The longest a subscription waits for Redis to confirm before going on without it.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long an instance's presence entry lives unless refreshed.
const PRESENCE_TTL: Duration = Duration::from_secs(15);
/// How often each instance refreshes its presence entries.
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(5);

pub struct Fanout {
    /// Tells this instance's messages apart from others'.
    instance: String,
    prefix: String,
    publish: mpsc::Sender<Batch>,
    subscriptions: Mutex<Subscriptions>,
    /// Events of other instances that arrived through Redis.
    received: AtomicU64,
    client: redis::Client,
    /// For presence and ephemeral frames, reconnected on the next use after a failure.
    commands: Mutex<Option<MultiplexedConnection>>,
    hub: Arc<Hub>,
    revocations: Arc<Revocations>,
}

struct Subscriptions {
    /// Local subscriptions per topic: the topic's channel is subscribed while this is above 0.
    count: HashMap<TopicKey, usize>,
    /// The live pub/sub connection's command side, when connected.
    sink: Option<PubSubSink>,
}

impl Fanout {
    /// Connects to Redis in the background (retrying until it answers) and starts the publisher
    /// and the subscriber on `tracker`.
    pub fn start(
        url: &str,
        prefix: &str,
        sequencer: Arc<Sequencer>,
        hub: Arc<Hub>,
        revocations: Arc<Revocations>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> anyhow::Result<Arc<Fanout>> {
        let client = redis::Client::open(url)?;
        let (publish, queue) = mpsc::channel(PUBLISH_QUEUE);
        let fanout = Arc::new(Fanout {
            instance: token::generate(16),
            prefix: prefix.to_owned(),
            publish,
            subscriptions: Mutex::new(Subscriptions {
                count: HashMap::new(),
                sink: None,
            }),
            received: AtomicU64::new(0),
            client: client.clone(),
            commands: Mutex::new(None),
            hub,
            revocations,
        });
        tracker.spawn(
            fanout
                .clone()
                .run_publisher(client.clone(), queue, cancel.clone()),
        );
        tracker.spawn(fanout.clone().run_subscriber(client, sequencer, cancel));
        Ok(fanout)
    }

    /// Whether the subscriber holds a live Redis connection now.
    pub async fn connected(&self) -> bool {
        self.subscriptions.lock().await.sink.is_some()
    }

    /// How many events of other instances have arrived through Redis.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn ranges_channel(&self) -> String {
        format!("{}:ranges", self.prefix)
    }

    fn channel(&self, key: TopicKey) -> String {
        match key {
            TopicKey::Fleet { organisation_id } => {
                format!("{}:fleet:{organisation_id}", self.prefix)
            }
            TopicKey::Alerts { organisation_id } => {
                format!("{}:alerts:{organisation_id}", self.prefix)
            }
            TopicKey::Vehicle(id) => format!("{}:vehicle:{id}", self.prefix),
            TopicKey::Shipment(id) => format!("{}:shipment:{id}", self.prefix),
            TopicKey::Chat(id) => format!("{}:chat:{id}", self.prefix),
        }
    }

    /// The channels a local subscription of `key` listens on: its topic's, and for a
    /// conversation its ephemeral frames'.
    fn channels(&self, key: TopicKey) -> Vec<String> {
        let mut channels = vec![self.channel(key)];
        if let TopicKey::Chat(id) = key {
            channels.push(self.ephemeral_channel(id));
        }
        channels
    }

    fn revocations_channel(&self) -> String {
        format!("{}:revocations", self.prefix)
    }

    fn ephemeral_channel(&self, shipment: i64) -> String {
        format!("{}:ephemeral:chat:{shipment}", self.prefix)
    }

    fn presence_key(&self, shipment: i64) -> String {
        format!("{}:presence:{shipment}", self.prefix)
    }

    /// Runs `pipe` on the command connection; none (logged) if Redis does not answer.
    async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Option<T> {
        let mut conn = self.commands.lock().await;
        if conn.is_none() {
            let connect = self.client.get_multiplexed_async_connection();
            *conn = tokio::time::timeout(SUBSCRIBE_TIMEOUT, connect)
                .await
                .ok()
                .and_then(Result::ok);
        }
        let c = conn.as_mut()?;
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, pipe.query_async::<T>(c)).await {
            Ok(Ok(v)) => Some(v),
            _ => {
                tracing::warn!("a Redis command for presence, typing or a revocation failed");
                *conn = None;
                None
            }
        }
    }

    /// Sends an ephemeral frame of conversation `shipment` to the other instances.
    pub async fn publish_ephemeral(&self, shipment: i64, frame: &str) {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH")
            .arg(self.ephemeral_channel(shipment))
            .arg(format!("{} {frame}", self.instance))
            .ignore();
        self.run::<()>(&pipe).await;
    }

    /// Tells the other instances of a revocation. If Redis does not answer, their sockets close
    /// at their next re-check of the credential instead.
    pub async fn publish_revocation(&self, revoked: Revoked) {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH")
            .arg(self.revocations_channel())
            .arg(format!("{} {}", self.instance, revoked.encode()))
            .ignore();
        self.run::<()>(&pipe).await;
    }

    /// Records (`Some(true)`), removes (`Some(false)`) or leaves alone (`None`) this instance's
    /// entry for `participant`, then returns who is in the conversation on any instance, by key;
    /// none if Redis does not answer.
    pub async fn presence(
        &self,
        shipment: i64,
        participant: &str,
        name: &str,
        present: Option<bool>,
    ) -> Option<Vec<(String, String)>> {
        let key = self.presence_key(shipment);
        let member = format!("{}|{participant}|{name}", self.instance);
        let now = now_ms();
        let mut pipe = redis::pipe();
        match present {
            Some(true) => {
                let expiry = now + PRESENCE_TTL.as_millis() as u64;
                pipe.cmd("ZADD").arg(&key).arg(expiry).arg(&member).ignore();
            }
            Some(false) => {
                pipe.cmd("ZREM").arg(&key).arg(&member).ignore();
            }
            None => {}
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(PRESENCE_TTL.as_millis() as u64)
            .ignore();
        pipe.cmd("ZRANGE").arg(&key).arg(0).arg(-1);
        let (members,): (Vec<String>,) = self.run(&pipe).await?;
        let mut online = BTreeMap::new();
        for m in &members {
            let mut parts = m.splitn(3, '|');
            if let (Some(_), Some(k), Some(n)) = (parts.next(), parts.next(), parts.next()) {
                online.insert(k.to_owned(), n.to_owned());
            }
        }
        Some(online.into_iter().collect())
    }

    /// Extends this instance's presence entries `(shipment, participant, name)`.
    pub async fn refresh_presence(&self, entries: &[(i64, String, String)]) {
        if entries.is_empty() {
            return;
        }
        let expiry = now_ms() + PRESENCE_TTL.as_millis() as u64;
        let mut pipe = redis::pipe();
        for (shipment, participant, name) in entries {
            let key = self.presence_key(*shipment);
            let member = format!("{}|{participant}|{name}", self.instance);
            pipe.cmd("ZADD").arg(&key).arg(expiry).arg(member).ignore();
            pipe.cmd("PEXPIRE")
                .arg(&key)
                .arg(PRESENCE_TTL.as_millis() as u64)
                .ignore();
        }
        self.run::<()>(&pipe).await;
    }

    fn key_of(&self, channel: &str) -> Option<TopicKey> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        let (kind, id) = rest.split_once(':')?;
        let id: i64 = id.parse().ok()?;
        match kind {
            "fleet" => Some(TopicKey::Fleet {
                organisation_id: id,
            }),
            "alerts" => Some(TopicKey::Alerts {
                organisation_id: id,
            }),
            "vehicle" => Some(TopicKey::Vehicle(id)),
            "shipment" => Some(TopicKey::Shipment(id)),
            "chat" => Some(TopicKey::Chat(id)),
            _ => None,
        }
    }

    /// Queues a committed batch for the other instances. Never waits: if Redis cannot keep up,
    /// the others fill the gap from the database.
    pub fn publish(&self, batch: Batch) {
        if self.publish.try_send(batch).is_err() {
            tracing::debug!(
                "fan-out queue full; other instances will read this batch from the database"
            );
        }
    }

    /// Counts a local subscription of `key`; the first one subscribes its channel, and returns
    /// once Redis has confirmed (so nothing published from then on is missed) or could not.
    pub async fn acquire(&self, key: TopicKey) {
        let mut subs = self.subscriptions.lock().await;
        let count = subs.count.entry(key).or_insert(0);
        *count += 1;
        if *count > 1 {
            return;
        }
        let channels = self.channels(key);
        if let Some(sink) = subs.sink.as_mut() {
            match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&channels)).await {
                Ok(Ok(())) => {}
                // The subscriber task resubscribes everything when it reconnects; until then the
                // sequencer's catch-up from the database covers this topic.
                _ => tracing::warn!(channel = channels[0], "could not subscribe in Redis"),
            }
        }
    }

    /// Uncounts a local subscription; the last one unsubscribes the channel.
    pub async fn release(&self, key: TopicKey) {
        let mut subs = self.subscriptions.lock().await;
        let Some(count) = subs.count.get_mut(&key) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        subs.count.remove(&key);
        let channels = self.channels(key);
        if let Some(sink) = subs.sink.as_mut() {
            let _ = tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.unsubscribe(&channels)).await;
        }
    }

    async fn run_publisher(
        self: Arc<Self>,
        client: redis::Client,
        mut queue: mpsc::Receiver<Batch>,
        cancel: CancellationToken,
    ) {
        // Reconnected on the next batch after any failure: while Redis is down each batch costs
        // one refused connection attempt, and nothing waits on it.
        let mut connection: Option<MultiplexedConnection> = None;
        let mut batches = Vec::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                n = queue.recv_many(&mut batches, 64) => if n == 0 { break },
            }
            if connection.is_none() {
                let connect = client.get_multiplexed_async_connection();
                connection = tokio::time::timeout(SUBSCRIBE_TIMEOUT, connect)
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            let Some(conn) = connection.as_mut() else {
                tracing::debug!(batches = batches.len(), "Redis unavailable; not publishing");
                batches.clear();
                continue;
            };
            // One transaction: no SUBSCRIBE comes between a batch's events and its range, so an
            // instance that hears the range has heard every event of it on its channels.
            let mut pipe = redis::pipe();
            pipe.atomic();
            for batch in batches.drain(..) {
                for e in &batch.events {
                    let conflate = e
                        .conflate_vehicle
                        .map_or_else(|| "-".to_owned(), |v| v.to_string());
                    let payload = format!(
                        "{} {} {} {}",
                        self.instance,
                        e.seq,
                        conflate,
                        e.frame.as_str()
                    );
                    pipe.cmd("PUBLISH")
                        .arg(self.channel(e.key))
                        .arg(payload)
                        .ignore();
                }
                let range = format!("{} {} {}", self.instance, batch.first, batch.last);
                pipe.cmd("PUBLISH")
                    .arg(self.ranges_channel())
                    .arg(range)
                    .ignore();
            }
            let sent = tokio::time::timeout(SUBSCRIBE_TIMEOUT, pipe.query_async::<()>(conn)).await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::warn!(
                    "publishing to Redis failed; other instances will read the database"
                );
                connection = None;
            }
        }
    }

    async fn run_subscriber(
        self: Arc<Self>,
        client: redis::Client,
        sequencer: Arc<Sequencer>,
        cancel: CancellationToken,
    ) {
        let mut retry = RETRY_MIN;
        loop {
            let connected = tokio::select! {
                _ = cancel.cancelled() => return,
                c = client.get_async_pubsub() => c,
            };
            let pubsub = match connected {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "connecting to Redis");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
            };
            let (mut sink, mut stream) = pubsub.split();
            if let Err(e) = self.resubscribe(&mut sink).await {
                tracing::warn!(error = %e, "subscribing in Redis");
                continue;
            }
            retry = RETRY_MIN;
            tracing::info!("fan-out connected to Redis");
            let mut gathered: BTreeMap<i64, Vec<Published>> = BTreeMap::new();
            loop {
                let message = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = stream.next() => m,
                };
                let Some(message) = message else { break };
                self.on_message(&message, &mut gathered, &sequencer);
            }
            self.subscriptions.lock().await.sink = None;
            tracing::warn!("fan-out lost Redis; delivering from the database until it is back");
        }
    }

    /// Subscribes the range channel and every topic with local subscribers, then makes `sink`
    /// the one new subscriptions use.
    ///
    /// One SUBSCRIBE for all of them, which Redis carries out as one step: a range heard on the
    /// new connection always comes with its events. (Subscribed one after the other, a batch
    /// published in between would bring its range without the events of the topics not yet
    /// subscribed, and the sequencer would deliver the range as complete without them.)
    async fn resubscribe(&self, sink: &mut PubSubSink) -> redis::RedisResult<()> {
        let mut subs = self.subscriptions.lock().await;
        let mut channels = vec![self.ranges_channel(), self.revocations_channel()];
        channels.extend(subs.count.keys().flat_map(|k| self.channels(*k)));
        sink.subscribe(channels).await?;
        subs.sink = Some(sink.clone());
        Ok(())
    }

    fn on_message(
        &self,
        message: &redis::Msg,
        gathered: &mut BTreeMap<i64, Vec<Published>>,
        sequencer: &Sequencer,
    ) {
        let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
            return;
        };
        let channel = message.get_channel_name();
        if channel == self.ranges_channel() {
            let mut parts = payload.split(' ');
            let (Some(instance), Some(Ok(first)), Some(Ok(last))) = (
                parts.next(),
                parts.next().map(str::parse::<i64>),
                parts.next().map(str::parse::<i64>),
            ) else {
                return;
            };
            if instance == self.instance {
                return;
            }
            // Events gathered for this range are complete: Redis sends one publisher's messages
            // in order, and the range comes after its events.
            let mut range = gathered.split_off(&first);
            let later = range.split_off(&(last + 1));
            gathered.extend(later);
            let events = range.into_values().flatten().collect();
            sequencer.accept(Batch {
                first,
                last,
                events,
            });
            // Whatever is at or below the delivered seq came from a range that was lost or
            // filled from the database meanwhile.
            *gathered = gathered.split_off(&(sequencer.delivered() + 1));
            return;
        }
        if channel == self.revocations_channel() {
            let revoked = payload
                .split_once(' ')
                .filter(|(instance, _)| *instance != self.instance)
                .and_then(|(_, r)| Revoked::decode(r));
            if let Some(r) = revoked {
                let closed = self.revocations.apply(r);
                tracing::info!(revoked = ?r, sockets_closed = closed, "access revoked on another instance");
            }
            return;
        }
        if let Some(id) = channel
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix(":ephemeral:chat:"))
            .and_then(|id| id.parse::<i64>().ok())
        {
            if let Some((instance, frame)) = payload.split_once(' ') {
                if instance != self.instance {
                    let frame = Utf8Bytes::from(frame.to_owned());
                    self.hub.broadcast(TopicKey::Chat(id), frame, None);
                }
            }
            return;
        }
        let Some(key) = self.key_of(channel) else {
            return;
        };
        let mut parts = payload.splitn(4, ' ');
        let (Some(instance), Some(Ok(seq)), Some(conflate), Some(frame)) = (
            parts.next(),
            parts.next().map(str::parse::<i64>),
            parts.next(),
            parts.next(),
        ) else {
            return;
        };
        if instance == self.instance {
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        if seq <= sequencer.delivered() {
            return; // Filled from the database meanwhile.
        }
        gathered.entry(seq).or_default().push(Published {
            key,
            seq,
            conflate_vehicle: conflate.parse().ok(),
            frame: Utf8Bytes::from(frame.to_owned()),
        });
    }
}

/// Sign-in limits shared by every instance, in Redis.
impl SharedBuckets for Fanout {
    /// Takes a token from the bucket `name` that every instance shares: `Some(Ok)` if one was
    /// free, `Some(Err(wait))` if not, none if Redis does not answer. The bucket refills at
    /// `per_second` up to `burst`, by Redis's clock, so the instances' clocks need not agree.
    async fn take_shared_token(
        &self,
        name: &str,
        per_second: f64,
        burst: f64,
    ) -> Option<Result<(), Duration>> {
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(TOKEN_BUCKET)
            .arg(1)
            .arg(format!("{}:limit:{name}", self.prefix))
            .arg(per_second / 1000.0)
            .arg(burst);
        let (wait_ms,): (u64,) = self.run(&pipe).await?;
        Some(if wait_ms == 0 {
            Ok(())
        } else {
            Err(Duration::from_millis(wait_ms))
        })
    }
}

/// A token bucket in a Redis hash (`t` tokens, `at` ms): takes one token and returns 0, or
/// returns how many milliseconds until one is free. ARGV: tokens per ms, burst.
const TOKEN_BUCKET: &str = r"
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return wait
";

/// Milliseconds since the epoch, the presence entries' scores.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
