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
//!
//! `REDIS_URL` may also name a Redis Cluster (one node, or several comma-separated): the first
//! node that answers says which in `INFO cluster`, once per process. On a cluster the topic
//! channels, the transaction and the range announcements above give way to sharded pub/sub with
//! one self-contained message per batch, which revocations and ephemeral frames share (see
//! `tracking::cluster`). Presence and the shared sign-in buckets work the same on both: each
//! command touches one key, and each pipeline one slot.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use futures_util::{future::join_all, StreamExt};
use redis::{
    aio::{ConnectionLike, MultiplexedConnection, PubSubSink},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    ConnectionInfo, IntoConnectionInfo, PushKind,
};
use tokio::sync::{mpsc, Mutex, OnceCell};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    cluster::{self, Message},
    Batch, Hub, Published, Sequencer, TopicKey,
};
use crate::{
    auth::{token, Revocations, Revoked},
    security::SharedBuckets,
};

/// Batches waiting to be published; past this the oldest are dropped (other instances then
/// read them from the database).
const PUBLISH_QUEUE: usize = 4096;
/// The longest anything waits for Redis (a connection, a command, a subscription's confirmation)
/// before going on without it.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
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
    /// Whether the subscriber listens now, on one server or on every master that serves a
    /// shard channel.
    listening: AtomicBool,
    /// Events of other instances that arrived through Redis.
    received: AtomicU64,
    /// The nodes `REDIS_URL` names.
    seeds: Vec<ConnectionInfo>,
    /// One server or a cluster: learnt from the first seed that answers.
    backend: OnceCell<Backend>,
    /// For publishing, presence and the shared buckets, reconnected on the next use after a
    /// failure.
    commands: Mutex<Option<Commands>>,
    hub: Arc<Hub>,
    revocations: Arc<Revocations>,
}

struct Subscriptions {
    /// Local subscriptions per topic: the topic's channel is subscribed while this is above 0.
    count: HashMap<TopicKey, usize>,
    /// The live pub/sub connection's command side, when connected to one server.
    sink: Option<PubSubSink>,
}

/// What `REDIS_URL` names.
enum Backend {
    Single(redis::Client),
    Cluster {
        client: ClusterClient,
        /// The node that answered first: how every node is reached.
        seed: ConnectionInfo,
    },
}

/// A connection for commands to either; the cluster connection routes each command to the master
/// serving its key.
#[derive(Clone)]
enum Commands {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Commands::Single(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Commands::Single(c) => c.req_packed_commands(cmd, offset, count),
            Commands::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
        }
    }
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
        let seeds = seeds(url)?;
        let (publish, queue) = mpsc::channel(PUBLISH_QUEUE);
        let fanout = Arc::new(Fanout {
            instance: token::generate(16),
            prefix: prefix.to_owned(),
            publish,
            subscriptions: Mutex::new(Subscriptions {
                count: HashMap::new(),
                sink: None,
            }),
            listening: AtomicBool::new(false),
            received: AtomicU64::new(0),
            seeds,
            backend: OnceCell::new(),
            commands: Mutex::new(None),
            hub,
            revocations,
        });
        tracker.spawn(fanout.clone().run_publisher(queue, cancel.clone()));
        tracker.spawn(fanout.clone().run_subscriber(sequencer, cancel));
        Ok(fanout)
    }

    /// Whether the subscriber holds its live Redis connections now.
    pub async fn connected(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// One server or a cluster, asking the seeds until one answers; none if none does.
    async fn backend(&self) -> Option<&Backend> {
        match self.backend.get_or_try_init(|| discover(&self.seeds)).await {
            Ok(backend) => Some(backend),
            Err(e) => {
                tracing::debug!(error = %e, "no Redis node answers");
                None
            }
        }
    }

    /// The command connection, connecting first if there is none; none if Redis does not answer.
    async fn commands(&self) -> Option<Commands> {
        let backend = self.backend().await?;
        let mut commands = self.commands.lock().await;
        if commands.is_none() {
            let connect = async {
                match backend {
                    Backend::Single(client) => client
                        .get_multiplexed_async_connection()
                        .await
                        .map(Commands::Single),
                    Backend::Cluster { client, .. } => {
                        client.get_async_connection().await.map(Commands::Cluster)
                    }
                }
            };
            *commands = tokio::time::timeout(REDIS_TIMEOUT, connect)
                .await
                .ok()
                .and_then(Result::ok);
        }
        commands.clone()
    }

    /// How many events of other instances have arrived through Redis.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn ranges_channel(&self) -> String {
        format!("{}:ranges", self.prefix)
    }

    fn channel(&self, key: TopicKey) -> String {
        format!("{}:{}", self.prefix, topic_name(key))
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

    /// Runs `pipe` (whose keys share one slot) on `conn`; none (logged) if Redis does not
    /// answer, and the connection is made anew on the next use.
    async fn run<T: redis::FromRedisValue>(
        &self,
        mut conn: Commands,
        pipe: &redis::Pipeline,
    ) -> Option<T> {
        let error = match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut conn)).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        tracing::warn!(%error, "a Redis command failed");
        *self.commands.lock().await = None;
        None
    }

    /// [`Fanout::run`] on the command connection.
    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Option<T> {
        self.run(self.commands().await?, pipe).await
    }

    /// Publishes `payload` for the other instances: on one server on `channel`, on a cluster on
    /// shard channel `shard` as `sharded`.
    async fn announce(&self, channel: String, payload: String, shard: i64, sharded: String) {
        let Some(conn) = self.commands().await else {
            return;
        };
        let mut pipe = redis::pipe();
        match conn {
            Commands::Single(_) => pipe.cmd("PUBLISH").arg(channel).arg(payload),
            Commands::Cluster(_) => pipe
                .cmd("SPUBLISH")
                .arg(cluster::shard_channel(&self.prefix, shard))
                .arg(sharded),
        }
        .ignore();
        self.run::<()>(conn, &pipe).await;
    }

    /// Sends an ephemeral frame of conversation `shipment` to the other instances.
    pub async fn publish_ephemeral(&self, shipment: i64, frame: &str) {
        self.announce(
            self.ephemeral_channel(shipment),
            format!("{} {frame}", self.instance),
            cluster::shard_of(shipment),
            cluster::encode_ephemeral(&self.instance, shipment, frame),
        )
        .await;
    }

    /// Tells the other instances of a revocation. If Redis does not answer, their sockets close
    /// at their next re-check of the credential instead.
    pub async fn publish_revocation(&self, revoked: Revoked) {
        self.announce(
            self.revocations_channel(),
            format!("{} {}", self.instance, revoked.encode()),
            0,
            cluster::encode_revoked(&self.instance, revoked),
        )
        .await;
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
        let (members,): (Vec<String>,) = self.query(&pipe).await?;
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
        // One pipeline per conversation: on a cluster their keys live on different masters.
        let mut pipes: BTreeMap<i64, redis::Pipeline> = BTreeMap::new();
        for (shipment, participant, name) in entries {
            let key = self.presence_key(*shipment);
            let member = format!("{}|{participant}|{name}", self.instance);
            let pipe = pipes.entry(*shipment).or_insert_with(redis::pipe);
            pipe.cmd("ZADD").arg(&key).arg(expiry).arg(member).ignore();
            pipe.cmd("PEXPIRE")
                .arg(&key)
                .arg(PRESENCE_TTL.as_millis() as u64)
                .ignore();
        }
        join_all(pipes.values().map(|pipe| self.query::<()>(pipe))).await;
    }

    fn key_of(&self, channel: &str) -> Option<TopicKey> {
        topic_named(channel.strip_prefix(&self.prefix)?.strip_prefix(':')?)
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
    /// once Redis has confirmed (so nothing published from then on is missed) or could not. On a
    /// cluster there is nothing to subscribe: every instance hears every batch.
    pub async fn acquire(&self, key: TopicKey) {
        let mut subs = self.subscriptions.lock().await;
        let count = subs.count.entry(key).or_insert(0);
        *count += 1;
        if *count > 1 {
            return;
        }
        let channels = self.channels(key);
        if let Some(sink) = subs.sink.as_mut() {
            match tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(&channels)).await {
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
            let _ = tokio::time::timeout(REDIS_TIMEOUT, sink.unsubscribe(&channels)).await;
        }
    }

    async fn run_publisher(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<Batch>,
        cancel: CancellationToken,
    ) {
        // While Redis is down each round of batches costs one refused connection attempt, and
        // nothing waits on it.
        let mut batches = Vec::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                n = queue.recv_many(&mut batches, 64) => if n == 0 { break },
            }
            let Some(conn) = self.commands().await else {
                tracing::debug!(batches = batches.len(), "Redis unavailable; not publishing");
                batches.clear();
                continue;
            };
            let sent = match conn {
                Commands::Single(_) => self.publish_ranges(conn, batches.drain(..)).await,
                Commands::Cluster(_) => self.publish_sharded(conn, batches.drain(..)).await,
            };
            if !sent {
                tracing::warn!(
                    "publishing to Redis failed; other instances will read the database"
                );
            }
        }
    }

    /// On one server: every event on its topic's channel, then each batch's range, in one
    /// transaction, so no SUBSCRIBE comes between a batch's events and its range: an instance
    /// that hears the range has heard every event of it on its channels.
    async fn publish_ranges(&self, conn: Commands, batches: impl Iterator<Item = Batch>) -> bool {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for batch in batches {
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
        self.run::<()>(conn, &pipe).await.is_some()
    }

    /// On a cluster: each batch whole as one message on its shard channel, one pipeline per
    /// shard (a pipeline cannot span slots), the shards' in parallel.
    async fn publish_sharded(&self, conn: Commands, batches: impl Iterator<Item = Batch>) -> bool {
        let mut pipes: BTreeMap<i64, redis::Pipeline> = BTreeMap::new();
        for batch in batches {
            let shard = cluster::shard_of(batch.first);
            pipes
                .entry(shard)
                .or_insert_with(redis::pipe)
                .cmd("SPUBLISH")
                .arg(cluster::shard_channel(&self.prefix, shard))
                .arg(cluster::encode_batch(&self.instance, &batch))
                .ignore();
        }
        let sent = pipes
            .values()
            .map(|pipe| self.run::<()>(conn.clone(), pipe));
        join_all(sent).await.iter().all(Option::is_some)
    }

    async fn run_subscriber(self: Arc<Self>, sequencer: Arc<Sequencer>, cancel: CancellationToken) {
        let mut retry = RETRY_MIN;
        loop {
            let listened = tokio::select! {
                _ = cancel.cancelled() => return,
                listened = self.listen(&sequencer) => listened,
            };
            self.listening.store(false, Ordering::Relaxed);
            match listened {
                Ok(()) => {
                    retry = RETRY_MIN;
                    tracing::warn!(
                        "fan-out lost Redis; delivering from the database until it is back"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "connecting to Redis");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Listens until the connection is lost; an error if it could not be made.
    async fn listen(&self, sequencer: &Sequencer) -> redis::RedisResult<()> {
        match self.backend().await {
            Some(Backend::Single(client)) => self.listen_single(client, sequencer).await,
            Some(Backend::Cluster { seed, .. }) => self.listen_sharded(seed, sequencer).await,
            None => Err(unavailable("no Redis node answers")),
        }
    }

    /// Listens on one server until the connection drops.
    async fn listen_single(
        &self,
        client: &redis::Client,
        sequencer: &Sequencer,
    ) -> redis::RedisResult<()> {
        let (mut sink, mut stream) = client.get_async_pubsub().await?.split();
        self.resubscribe(&mut sink).await?;
        self.listening.store(true, Ordering::Relaxed);
        tracing::info!("fan-out connected to Redis");
        let mut gathered: BTreeMap<i64, Vec<Published>> = BTreeMap::new();
        while let Some(message) = stream.next().await {
            self.on_message(&message, &mut gathered, sequencer);
        }
        self.subscriptions.lock().await.sink = None;
        Ok(())
    }

    /// Listens on every shard channel of a cluster until a master's connection drops or Redis
    /// moves a channel's slot. Starting over finds the masters anew.
    async fn listen_sharded(
        &self,
        seed: &ConnectionInfo,
        sequencer: &Sequencer,
    ) -> redis::RedisResult<()> {
        let Some(Commands::Cluster(mut conn)) = self.commands().await else {
            return Err(unavailable("the cluster does not answer"));
        };
        let channels: Vec<String> = (0..cluster::SHARD_CHANNELS)
            .map(|shard| cluster::shard_channel(&self.prefix, shard))
            .collect();
        let (pushes, mut heard) = mpsc::unbounded_channel();
        let subscribed = cluster::subscribe(&mut conn, seed, &channels, &pushes);
        let _connections = tokio::time::timeout(REDIS_TIMEOUT, subscribed)
            .await
            .map_err(|_| unavailable("subscribing timed out"))??;
        // Only the connections hold senders now: when every one is gone, so is `heard`.
        drop(pushes);
        self.listening.store(true, Ordering::Relaxed);
        tracing::info!(
            channels = channels.len(),
            "fan-out connected to the Redis Cluster"
        );
        while let Some(push) = heard.recv().await {
            match push.kind {
                PushKind::SMessage => self.on_shard_message(&push.data, sequencer),
                // Nothing here unsubscribes: the channel's slot moved to another master.
                PushKind::SUnsubscribe | PushKind::Disconnection => break,
                _ => {}
            }
        }
        Ok(())
    }

    /// A message on a shard channel: `[channel, payload]`.
    fn on_shard_message(&self, data: &[redis::Value], sequencer: &Sequencer) {
        let [_, redis::Value::BulkString(payload)] = data else {
            return;
        };
        let Some((instance, message)) = std::str::from_utf8(payload).ok().and_then(cluster::decode)
        else {
            tracing::debug!("an unreadable message on a shard channel");
            return;
        };
        if instance == self.instance {
            return;
        }
        match message {
            Message::Batch(batch) => {
                self.received
                    .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                sequencer.accept(batch);
            }
            Message::Ephemeral { shipment, frame } => {
                self.hub.broadcast(TopicKey::Chat(shipment), frame, None);
            }
            Message::Revoked(revoked) => self.apply_revocation(revoked),
        }
    }

    fn apply_revocation(&self, revoked: Revoked) {
        let closed = self.revocations.apply(revoked);
        tracing::info!(
            ?revoked,
            sockets_closed = closed,
            "access revoked on another instance"
        );
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
                self.apply_revocation(r);
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
        let (wait_ms,): (u64,) = self.query(&pipe).await?;
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

fn unavailable(why: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, why))
}

/// The nodes of a `REDIS_URL`: one URL, or several separated by commas (seeds of one cluster).
fn seeds(url: &str) -> redis::RedisResult<Vec<ConnectionInfo>> {
    let seeds: Vec<ConnectionInfo> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(IntoConnectionInfo::into_connection_info)
        .collect::<redis::RedisResult<_>>()?;
    if seeds.is_empty() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "REDIS_URL names no node",
        )));
    }
    Ok(seeds)
}

/// Asks the seeds in turn whether they are a cluster's nodes; the first that answers decides.
async fn discover(seeds: &[ConnectionInfo]) -> redis::RedisResult<Backend> {
    let mut failure = None;
    for seed in seeds {
        let client = redis::Client::open(seed.clone())?;
        let answer = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("INFO")
                .arg("cluster")
                .query_async::<String>(&mut conn)
                .await
        };
        match tokio::time::timeout(REDIS_TIMEOUT, answer)
            .await
            .unwrap_or_else(|_| Err(unavailable("timed out")))
        {
            Ok(info) if cluster::cluster_enabled(&info) => {
                let client = ClusterClient::builder(seeds.to_vec())
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT)
                    .build()?;
                tracing::info!("REDIS_URL names a Redis Cluster: fanning out by sharded pub/sub");
                return Ok(Backend::Cluster {
                    client,
                    seed: seed.clone(),
                });
            }
            Ok(_) => return Ok(Backend::Single(client)),
            Err(e) => failure = Some(e),
        }
    }
    Err(failure.expect("at least one seed"))
}

/// A topic as its Redis channels and messages name it: `vehicle:7`, `fleet:2` (the organisation).
pub(super) fn topic_name(key: TopicKey) -> String {
    match key {
        TopicKey::Fleet { organisation_id } => format!("fleet:{organisation_id}"),
        TopicKey::Alerts { organisation_id } => format!("alerts:{organisation_id}"),
        TopicKey::Vehicle(id) => format!("vehicle:{id}"),
        TopicKey::Shipment(id) => format!("shipment:{id}"),
        TopicKey::Chat(id) => format!("chat:{id}"),
    }
}

/// The topic [`topic_name`] named `name`.
pub(super) fn topic_named(name: &str) -> Option<TopicKey> {
    let (kind, id) = name.split_once(':')?;
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

/// Milliseconds since the epoch, the presence entries' scores.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
