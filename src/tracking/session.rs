//! One WebSocket connection: authentication before the upgrade, then one task that reads client
//! frames, writes the outbox, pings, and stops on shutdown. Subscriptions are removed on every
//! way out.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{
        ws::{
            rejection::WebSocketUpgradeRejection, CloseFrame, Message, Utf8Bytes, WebSocket,
            WebSocketUpgrade,
        },
        Query, State,
    },
    http::HeaderMap,
    response::Response,
    routing::get,
    Router,
};
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;

use super::frame::{self, ClientFrame, Envelope, Me, ServerFrame, Snapshot, TopicState};
use super::{replay, Outbox, Subscription, Topic, TopicKey};
use crate::{
    alerts,
    auth::{self, Revoked, ShareAccess, Viewer},
    chat,
    error::AppError,
    security, shipments, vehicles, AppState,
};

/// Largest client frame (and message) accepted; bigger ones close the connection with
/// [`CLOSE_TOO_BIG`].
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// The close code for a client frame over [`MAX_FRAME_BYTES`] ("message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Alerts in the `alerts` topic's snapshot.
const SNAPSHOT_ALERTS: i64 = 50;
/// Most topics one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 200;
const PING_EVERY: Duration = Duration::from_secs(20);
/// A peer silent for this long (not even answering pings) is dead.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// Close codes that tell the client to reconnect and resume with `since`.
pub const CLOSE_RESTART: u16 = 1012;
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// The close code for credentials that were revoked or expired while connected: sign in again
/// (or ask for a new share link); reconnecting with the same credentials is refused.
pub const CLOSE_REVOKED: u16 = 1008;
/// How often a connection re-checks its credential in the database, in case the message of its
/// revocation never arrived (Redis was down).
const RECHECK_EVERY: Duration = Duration::from_secs(300);

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

#[derive(Deserialize)]
struct WsAuth {
    token: Option<String>,
    share: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    Query(auth): Query<WsAuth>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let signed_in = |s: auth::Session| (Viewer::User(s.user), Some(s.id));
    let (viewer, session) = match (auth.share, auth.token) {
        (Some(share), _) => (
            Viewer::Share(ShareAccess::lookup(&state.db, &share).await?),
            None,
        ),
        (None, Some(token)) => signed_in(auth::authenticate_session(&state, &token).await?),
        (None, None) => signed_in(
            auth::session_from_headers(&state, &headers)
                .await
                .unwrap_or(Err(AppError::Unauthorized("sign in first")))?,
        ),
    };
    // Any page on the web can open a WebSocket to us with the user's cookie attached.
    if !security::origin_allowed(&headers, &state.config.allowed_origins) {
        return Err(AppError::Forbidden(
            "this origin may not open a WebSocket here",
        ));
    }
    let ws = ws.map_err(|e| {
        AppError::Malformed(format!(
            "this endpoint speaks WebSocket only: {}",
            e.body_text()
        ))
    })?;
    let tracker = state.tracker.clone();
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // Small buffers keep an idle connection cheap: client frames are a few hundred bytes, and
        // the buffer grows for the rare bigger one.
        .read_buffer_size(512)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            let metrics = state.metrics.clone();
            metrics.websocket_connections.inc();
            tracker.track_future(async move {
                Session::new(state, viewer, session).run(socket).await;
                metrics.websocket_connections.dec();
            })
        }))
}

/// Whether a read failed because the client's frame or message was over [`MAX_FRAME_BYTES`].
/// The reader stops at the frame's header, so the connection cannot go on; the client is told
/// why with a close frame rather than left with a dropped connection.
fn too_big(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|cause| cause.downcast_ref::<tungstenite::Error>())
        .is_some_and(|cause| matches!(cause, tungstenite::Error::Capacity(_)))
}

struct Session {
    state: AppState,
    viewer: Viewer,
    /// The sign-in a user's connection opened with; signing it out closes the connection.
    session: Option<i64>,
    id: u64,
    outbox: Arc<Outbox>,
    subscriptions: HashMap<TopicKey, Arc<Subscription>>,
    /// Who this connection is in each conversation it has joined (subscribed to `chat:{id}`).
    conversations: HashMap<i64, chat::Participant>,
}

enum Flow {
    Continue,
    Close(u16, &'static str),
}

impl Session {
    fn new(state: AppState, viewer: Viewer, session: Option<i64>) -> Self {
        let id = state.tracking.hub.new_connection_id();
        Session {
            state,
            viewer,
            session,
            id,
            outbox: Arc::new(Outbox::default()),
            subscriptions: HashMap::new(),
            conversations: HashMap::new(),
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let user = match &self.viewer {
            Viewer::User(u) => Some(Me::from(u)),
            Viewer::Share(_) => None,
        };
        self.send(ServerFrame::Hello {
            server_time: Utc::now(),
            user,
        });
        let cancel = self.state.cancel.clone();
        // A write that does not finish in this time means the peer stopped reading.
        let write_timeout = Duration::from_secs(self.state.config.ws_write_timeout_s);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        // In a conversation the peer is pinged more often, so a dead socket leaves presence
        // within seconds rather than a minute.
        let presence_limit = Duration::from_secs(self.state.config.presence_timeout_s.max(1));
        let mut last_heard = Instant::now();
        let watch = self
            .state
            .revocations
            .watch(self.id, Revoked::of(&self.viewer, self.session));
        let left = (self.viewer.expires_at() - Utc::now())
            .to_std()
            .unwrap_or_default();
        let expired = tokio::time::sleep(left);
        tokio::pin!(expired);
        let mut recheck =
            tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_EVERY, RECHECK_EVERY);
        // Allocated per wake-up and dropped after, so an idle connection holds no batch buffer.
        let mut batch = Vec::new();
        let close = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Some((CLOSE_RESTART, "server restarting; resume with since")),
                _ = watch.revoked.cancelled() => break Some((CLOSE_REVOKED, "access was revoked; sign in again")),
                _ = &mut expired => break Some((CLOSE_REVOKED, "the session or share link has expired")),
                _ = watch.access_changed.notified() => self.recheck_subscriptions().await,
                _ = recheck.tick() => {
                    if !auth::still_valid(&self.state.db, &self.viewer, self.session).await {
                        break Some((CLOSE_REVOKED, "access was revoked; sign in again"));
                    }
                    self.recheck_subscriptions().await;
                }
                ready = self.outbox.recv_many(&mut batch, 64) => {
                    if ready.is_err() {
                        break Some((CLOSE_TOO_SLOW, "too far behind; resume with since"));
                    }
                    let write = async {
                        for frame in batch.drain(..) {
                            sink.feed(Message::Text(frame)).await?;
                        }
                        sink.flush().await
                    };
                    let written = tokio::time::timeout(write_timeout, write).await;
                    batch = Vec::new();
                    match written {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break None,
                        Err(_) => break Some((CLOSE_TOO_SLOW, "too far behind; resume with since")),
                    }
                }
                msg = stream.next() => {
                    last_heard = Instant::now();
                    match msg {
                        Some(Ok(Message::Text(text))) => {
                            // Boxed: handling a frame (a subscribe reads the database) needs far
                            // more state than waiting does, and only while it runs.
                            if let Flow::Close(code, reason) = Box::pin(self.on_text(&text)).await {
                                break Some((code, reason));
                            }
                            let every = self.ping_every(presence_limit);
                            if ping.period() != every {
                                ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            self.send(ServerFrame::error("bad_frame", "frames are JSON text"));
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => break None,
                        Some(Err(e)) if too_big(&e) => {
                            break Some((CLOSE_TOO_BIG, "frames are at most 64 KiB"));
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "websocket read failed");
                            break None;
                        }
                    }
                }
                _ = ping.tick() => {
                    let limit = if self.in_conversation() { presence_limit } else { IDLE_LIMIT };
                    if last_heard.elapsed() > limit {
                        break None;
                    }
                    let sent = tokio::time::timeout(write_timeout, sink.send(Message::Ping(Default::default()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break None;
                    }
                }
            }
        };
        self.state.revocations.unwatch(self.id);
        let keys: Vec<TopicKey> = self.subscriptions.keys().copied().collect();
        for key in keys {
            self.drop_subscription(key).await;
        }
        if let Some((code, reason)) = close {
            if code == CLOSE_TOO_SLOW {
                self.state.metrics.slow_clients_closed.inc();
            }
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                sink.send(Message::Close(Some(frame))),
            )
            .await;
        }
    }

    /// Sends a frame that answers no client frame.
    fn send(&self, frame: ServerFrame) {
        self.reply(&None, frame);
    }

    /// Answers a client frame, echoing its `ref` when it gave one.
    fn reply(&self, reference: &Option<Value>, frame: ServerFrame) {
        let envelope = Envelope {
            frame,
            reference: reference.clone(),
        };
        self.outbox.push(Utf8Bytes::from(envelope.text()), None);
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let Envelope { frame, reference } = match frame::decode(text) {
            Ok(envelope) => envelope,
            Err(e) => {
                self.reply(&e.reference, ServerFrame::error(e.code, e.message));
                return Flow::Continue;
            }
        };
        let r = &reference;
        match frame {
            ClientFrame::Ping => {
                let server_time = Utc::now();
                self.reply(r, ServerFrame::Pong { server_time });
            }
            ClientFrame::Unsubscribe(frame::Unsubscribe { topic }) => {
                let Some(topic) = Topic::parse(&topic) else {
                    self.reply(r, ServerFrame::error("bad_topic", "no such topic"));
                    return Flow::Continue;
                };
                let key = topic.key(self.viewer.organisation_id());
                self.drop_subscription(key).await;
                let (reason, message) = (None, None);
                self.reply(
                    r,
                    ServerFrame::Unsubscribed {
                        topic,
                        reason,
                        message,
                    },
                );
            }
            ClientFrame::Subscribe(frame::Subscribe { topic, since }) => {
                return self.subscribe(&topic, since, r).await;
            }
            ClientFrame::Acknowledge(frame::Acknowledge { alert_id }) => {
                self.acknowledge(alert_id, r).await;
            }
            ClientFrame::ChatSend(frame::ChatSend {
                topic,
                client_id,
                body,
            }) => {
                let Some(shipment) = self.chat_topic(&topic, r) else {
                    return Flow::Continue;
                };
                let sent = chat::send_message(
                    &self.state,
                    &self.viewer,
                    shipment,
                    &client_id,
                    &body,
                    |m| self.chat_ack(r, m),
                )
                .await;
                self.refuse(r, sent);
            }
            ClientFrame::ChatEdit(frame::ChatEdit { id, body }) => {
                let ack = |m: &chat::Message| self.chat_ack(r, m);
                let changed = chat::edit_message(&self.state, &self.viewer, id, &body, ack).await;
                self.refuse(r, changed);
            }
            ClientFrame::ChatDelete(frame::ChatDelete { id }) => {
                let ack = |m: &chat::Message| self.chat_ack(r, m);
                let changed = chat::delete_message(&self.state, &self.viewer, id, ack).await;
                self.refuse(r, changed);
            }
            ClientFrame::ChatReact(frame::ChatReact { id, emoji }) => {
                let ack = |m: &chat::Message| self.chat_ack(r, m);
                let changed = chat::react_message(&self.state, &self.viewer, id, &emoji, ack).await;
                self.refuse(r, changed);
            }
            ClientFrame::ChatRead(frame::ChatRead { topic, seq }) => {
                let Some(shipment) = self.chat_topic(&topic, r) else {
                    return Flow::Continue;
                };
                let ack = |unread: i64| {
                    let topic = topic.clone();
                    self.reply(r, ServerFrame::ChatUnread { topic, unread });
                };
                let read = chat::mark_read(&self.state, &self.viewer, shipment, seq, ack).await;
                self.refuse(r, read);
            }
            ClientFrame::Typing(frame::Typing { topic }) => self.typing(&topic, r).await,
        }
        Flow::Continue
    }

    /// Whether this connection takes part in a conversation (and so counts for presence).
    fn in_conversation(&self) -> bool {
        self.subscriptions
            .keys()
            .any(|k| matches!(k, TopicKey::Chat(_)))
    }

    /// How often to ping the peer: a third of the presence limit while in a conversation.
    fn ping_every(&self, presence_limit: Duration) -> Duration {
        if self.in_conversation() {
            (presence_limit / 3).max(Duration::from_millis(250))
        } else {
            PING_EVERY
        }
    }

    /// Removes the subscription of `key`, if any, leaving its conversation's presence.
    async fn drop_subscription(&mut self, key: TopicKey) {
        let Some(sub) = self.subscriptions.remove(&key) else {
            return;
        };
        self.state.tracking.unsubscribe(&sub).await;
        if let TopicKey::Chat(id) = key {
            if let Some(me) = self.conversations.remove(&id) {
                self.state.tracking.leave_chat(id, &me.key).await;
            }
        }
    }

    /// Forwards "typing" to the others in a conversation this connection has joined.
    async fn typing(&self, name: &str, r: &Option<Value>) {
        let Some(id) = self.chat_topic(name, r) else {
            return;
        };
        let Some(me) = self.conversations.get(&id) else {
            let refusal = ServerFrame::error("forbidden", "subscribe to the chat topic first");
            self.reply(r, refusal);
            return;
        };
        let tracking = &self.state.tracking;
        tracking.typing(id, self.id, &me.key, &me.name).await;
    }

    /// The shipment of a `chat:{id}` topic, or none (and the client told).
    fn chat_topic(&self, name: &str, r: &Option<Value>) -> Option<i64> {
        match Topic::parse(name) {
            Some(Topic::Chat(id)) => Some(id),
            _ => {
                self.reply(
                    r,
                    ServerFrame::error("bad_topic", "chat topics are chat:{id}"),
                );
                None
            }
        }
    }

    /// Acknowledges a chat frame: the message as it is after the change.
    fn chat_ack(&self, r: &Option<Value>, message: &chat::Message) {
        let message = message.clone();
        self.reply(r, ServerFrame::ChatAck { message });
    }

    /// Refuses a frame that failed with the error the API would answer; one that worked was
    /// answered already.
    fn refuse<T>(&self, r: &Option<Value>, done: Result<T, AppError>) {
        if let Err(e) = done {
            self.reply(r, ServerFrame::from(e));
        }
    }

    /// Acknowledges an alert; the change reaches every subscriber of `alerts` as an event, and
    /// this connection also gets the reply.
    async fn acknowledge(&self, alert_id: i64, r: &Option<Value>) {
        let Viewer::User(user) = &self.viewer else {
            let refusal = ServerFrame::error("forbidden", "share links cannot acknowledge alerts");
            self.reply(r, refusal);
            return;
        };
        match alerts::acknowledge(&self.state.db, &self.state.tracking, user, alert_id).await {
            Ok(alert) => self.reply(r, ServerFrame::Acknowledged { alert }),
            Err(e) => self.reply(r, ServerFrame::from(e)),
        }
    }

    async fn subscribe(&mut self, name: &str, since: Option<i64>, r: &Option<Value>) -> Flow {
        let Some(topic) = Topic::parse(name) else {
            let refusal = ServerFrame::error(
                "bad_topic",
                "topics are fleet, alerts, vehicle:{id}, shipment:{id} and chat:{id}",
            );
            self.reply(r, refusal);
            return Flow::Continue;
        };
        if since.is_some_and(|s| s < 0) {
            self.reply(
                r,
                ServerFrame::error("bad_frame", "since must not be negative"),
            );
            return Flow::Continue;
        }
        let key = topic.key(self.viewer.organisation_id());
        self.drop_subscription(key).await;
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            let refusal =
                ServerFrame::error("too_many_subscriptions", "unsubscribe from something first");
            self.reply(r, refusal);
            return Flow::Continue;
        }
        // Authorise before registering: a refused topic never sees an event. Whether it exists
        // is not told.
        let participant = match self.authorize(topic).await {
            Ok(participant) => participant,
            Err(e) => {
                let e = if refused(&e) {
                    AppError::Forbidden("you may not subscribe to this topic")
                } else {
                    e
                };
                self.reply(r, ServerFrame::from(e));
                return Flow::Continue;
            }
        };
        let sub = self
            .state
            .tracking
            .subscribe(key, self.id, self.outbox.clone())
            .await;
        let (snapshot, replay) = match self.catch_up(topic, key, since).await {
            Ok(caught_up) => caught_up,
            Err(e) => {
                self.state.tracking.unsubscribe(&sub).await;
                self.reply(r, ServerFrame::from(e));
                return Flow::Continue;
            }
        };
        let mut floor = snapshot.seq;
        self.reply(r, ServerFrame::Subscribed { topic, snapshot });
        if let Some(since) = since {
            match replay {
                Some(events) => {
                    floor = since;
                    for (seq, frame) in events {
                        self.outbox.push(Utf8Bytes::from(frame), None);
                        floor = floor.max(seq);
                    }
                }
                None => self.send(ServerFrame::error(
                    "since_too_old",
                    "too many missed events; the snapshot is current",
                )),
            }
        }
        if !sub.go_live(floor) {
            self.state.tracking.unsubscribe(&sub).await;
            return Flow::Close(CLOSE_TOO_SLOW, "too far behind; resume with since");
        }
        self.subscriptions.insert(key, sub);
        if let (Topic::Chat(id), Some(p)) = (topic, participant) {
            let tracking = &self.state.tracking;
            tracking.join_chat(id, self.id, &p.key, &p.name).await;
            self.conversations.insert(id, p);
        }
        Flow::Continue
    }

    /// Whether this connection may see `topic` now; for a conversation, who it is in it.
    async fn authorize(&self, topic: Topic) -> Result<Option<chat::Participant>, AppError> {
        let db = &self.state.db;
        match topic {
            Topic::Fleet | Topic::Alerts => self.viewer.dispatcher().map(|_| None),
            Topic::Vehicle(id) => vehicles::authorize(db, &self.viewer, id)
                .await
                .map(|()| None),
            Topic::Shipment(id) => shipments::load_visible(db, &self.viewer, id)
                .await
                .map(|_| None),
            Topic::Chat(id) => chat::Participant::of(db, &self.viewer, id).await.map(Some),
        }
    }

    /// Drops the subscriptions a driver may no longer see (the shipment given to someone else,
    /// its vehicle changed, the trip over), telling the client `unsubscribed` with a `reason`.
    /// What dispatchers and share links see does not hang on assignments.
    async fn recheck_subscriptions(&mut self) {
        if !matches!(&self.viewer, Viewer::User(u) if !u.role.dispatches()) {
            return;
        }
        let keys: Vec<TopicKey> = self.subscriptions.keys().copied().collect();
        for key in keys {
            let topic = key.topic();
            match self.authorize(topic).await {
                Ok(_) => {}
                Err(e) if refused(&e) => {
                    self.drop_subscription(key).await;
                    self.send(ServerFrame::Unsubscribed {
                        topic,
                        reason: Some("forbidden"),
                        message: Some("you may no longer see this topic"),
                    });
                }
                // Kept: a database outage must not end every driver's subscriptions.
                Err(e) => tracing::warn!(error = %e, "re-checking a subscription"),
            }
        }
    }

    /// The snapshot (whose `seq` no later event undercuts) and, with `since`, the missed events.
    async fn catch_up(
        &self,
        topic: Topic,
        key: TopicKey,
        since: Option<i64>,
    ) -> Result<(Snapshot, Option<Vec<(i64, String)>>), AppError> {
        let db = &self.state.db;
        let seq = super::read_seq(db).await?;
        let org = self.viewer.organisation_id();
        let state = match topic {
            Topic::Fleet => TopicState::Fleet {
                vehicles: vehicles::list(db, org).await?,
            },
            Topic::Alerts => TopicState::Alerts {
                alerts: alerts::recent(db, org, SNAPSHOT_ALERTS).await?,
                unacknowledged: alerts::unacknowledged(db, org, None).await?,
            },
            Topic::Vehicle(id) => TopicState::Vehicle {
                vehicle: vehicles::get_visible(db, &self.viewer, id).await?,
            },
            Topic::Shipment(id) => TopicState::Shipment {
                shipment: Box::new(shipments::load_visible(db, &self.viewer, id).await?),
            },
            Topic::Chat(id) => TopicState::Chat(chat::snapshot(db, &self.viewer, id).await?),
        };
        let snapshot = Snapshot { seq, state };
        let replay = match since {
            Some(since) => replay::events_since(db, key, since, self.viewer.driver_id()).await?,
            None => None,
        };
        Ok((snapshot, replay))
    }
}

/// Whether `e` says the caller may not see something (rather than that something failed).
fn refused(e: &AppError) -> bool {
    matches!(
        e,
        AppError::Forbidden(_) | AppError::NotFound(_) | AppError::Unauthorized(_)
    )
}
