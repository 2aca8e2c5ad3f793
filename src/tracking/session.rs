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
use serde_json::{json, Value};

use super::frame::{self, ClientFrame};
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
            Viewer::User(u) => {
                json!({"id": u.id, "role": u.role, "organisation_id": u.organisation_id})
            }
            Viewer::Share(_) => Value::Null,
        };
        self.send(json!({"type": "hello", "server_time": Utc::now(), "user": user}));
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
                        Some(Ok(Message::Binary(_))) => self.error("bad_frame", "frames are JSON text", None),
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

    fn send(&self, frame: Value) {
        self.outbox.push(Utf8Bytes::from(frame.to_string()), None);
    }

    fn error(&self, code: &str, message: &str, reference: Option<Value>) {
        let mut frame = json!({"type": "error", "code": code, "message": message});
        if let Some(r) = reference {
            frame["ref"] = r;
        }
        self.send(frame);
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let frame = match frame::decode(text) {
            Ok(f) => f,
            Err(e) => {
                self.error(e.code, &e.message, e.reference);
                return Flow::Continue;
            }
        };
        match frame {
            ClientFrame::Ping { reference } => {
                let mut pong = json!({"type": "pong", "server_time": Utc::now()});
                if let Some(r) = reference {
                    pong["ref"] = r;
                }
                self.send(pong);
                Flow::Continue
            }
            ClientFrame::Unsubscribe { topic, reference } => {
                let Some(t) = Topic::parse(&topic) else {
                    self.error("bad_topic", "no such topic", reference);
                    return Flow::Continue;
                };
                let key = t.key(self.viewer.organisation_id());
                self.drop_subscription(key).await;
                let mut frame = json!({"type": "unsubscribed", "topic": t.to_string()});
                if let Some(r) = reference {
                    frame["ref"] = r;
                }
                self.send(frame);
                Flow::Continue
            }
            ClientFrame::Subscribe {
                topic,
                since,
                reference,
            } => self.subscribe(&topic, since, reference).await,
            ClientFrame::Acknowledge {
                alert_id,
                reference,
            } => {
                self.acknowledge(alert_id, reference).await;
                Flow::Continue
            }
            ClientFrame::ChatSend {
                topic,
                client_id,
                body,
                reference,
            } => {
                let Some(shipment) = self.chat_topic(&topic, &reference) else {
                    return Flow::Continue;
                };
                let ack =
                    |m: &chat::Message| self.reply("chat_ack", json!({"message": m}), &reference);
                let sent =
                    chat::send_message(&self.state, &self.viewer, shipment, &client_id, &body, ack)
                        .await;
                self.chat_refused(sent.map(|s| s.message), reference);
                Flow::Continue
            }
            ClientFrame::ChatEdit {
                id,
                body,
                reference,
            } => {
                let ack =
                    |m: &chat::Message| self.reply("chat_ack", json!({"message": m}), &reference);
                let changed = chat::edit_message(&self.state, &self.viewer, id, &body, ack).await;
                self.chat_refused(changed, reference);
                Flow::Continue
            }
            ClientFrame::ChatDelete { id, reference } => {
                let ack =
                    |m: &chat::Message| self.reply("chat_ack", json!({"message": m}), &reference);
                let changed = chat::delete_message(&self.state, &self.viewer, id, ack).await;
                self.chat_refused(changed, reference);
                Flow::Continue
            }
            ClientFrame::ChatReact {
                id,
                emoji,
                reference,
            } => {
                let ack =
                    |m: &chat::Message| self.reply("chat_ack", json!({"message": m}), &reference);
                let changed = chat::react_message(&self.state, &self.viewer, id, &emoji, ack).await;
                self.chat_refused(changed, reference);
                Flow::Continue
            }
            ClientFrame::ChatRead {
                topic,
                seq,
                reference,
            } => {
                let Some(shipment) = self.chat_topic(&topic, &reference) else {
                    return Flow::Continue;
                };
                let ack = |unread: i64| {
                    let fields = json!({"topic": topic, "unread": unread});
                    self.reply("chat_unread", fields, &reference)
                };
                let read = chat::mark_read(&self.state, &self.viewer, shipment, seq, ack).await;
                if let Err(e) = read {
                    self.refuse(e, reference);
                }
                Flow::Continue
            }
            ClientFrame::Typing { topic, reference } => {
                self.typing(&topic, reference).await;
                Flow::Continue
            }
        }
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
    async fn typing(&self, name: &str, reference: Option<Value>) {
        let Some(id) = self.chat_topic(name, &reference) else {
            return;
        };
        let Some(me) = self.conversations.get(&id) else {
            self.error("forbidden", "subscribe to the chat topic first", reference);
            return;
        };
        let tracking = &self.state.tracking;
        tracking.typing(id, self.id, &me.key, &me.name).await;
    }

    /// The shipment of a `chat:{id}` topic, or none (and the client told).
    fn chat_topic(&self, name: &str, reference: &Option<Value>) -> Option<i64> {
        match Topic::parse(name) {
            Some(Topic::Chat(id)) => Some(id),
            _ => {
                self.error("bad_topic", "chat topics are chat:{id}", reference.clone());
                None
            }
        }
    }

    /// Answers a frame: `fields` with its `type` and, when the client gave one, its `ref`.
    fn reply(&self, kind: &str, mut fields: Value, reference: &Option<Value>) {
        fields["type"] = json!(kind);
        if let Some(r) = reference {
            fields["ref"] = r.clone();
        }
        self.send(fields);
    }

    /// Refuses a chat frame that failed; one that worked was acknowledged before publishing.
    fn chat_refused(&self, done: Result<chat::Message, AppError>, reference: Option<Value>) {
        if let Err(e) = done {
            self.refuse(e, reference);
        }
    }

    /// Refuses a frame with the error the API would answer, naming the field when there is one.
    fn refuse(&self, e: AppError, reference: Option<Value>) {
        let message = match &e {
            AppError::Database(_) | AppError::Internal(_) | AppError::Unavailable(_) => {
                tracing::error!(error = %e, "handling a chat frame");
                "try again".to_owned()
            }
            _ => e.to_string(),
        };
        let mut frame = json!({"type": "error", "code": e.code(), "message": message});
        if let Some(field) = e.field() {
            frame["field"] = json!(field);
        }
        if let AppError::RateLimited(wait) = e {
            frame["retry_after_ms"] = json!(wait.as_millis() as u64);
        }
        if let Some(r) = reference {
            frame["ref"] = r;
        }
        self.send(frame);
    }

    /// Acknowledges an alert; the change reaches every subscriber of `alerts` as an event, and
    /// this connection also gets the reply.
    async fn acknowledge(&self, alert_id: i64, reference: Option<Value>) {
        let Viewer::User(user) = &self.viewer else {
            self.error(
                "forbidden",
                "share links cannot acknowledge alerts",
                reference,
            );
            return;
        };
        match alerts::acknowledge(&self.state.db, &self.state.tracking, user, alert_id).await {
            Ok(alert) => {
                let mut frame = json!({"type": "acknowledged", "alert": alert});
                if let Some(r) = reference {
                    frame["ref"] = r;
                }
                self.send(frame);
            }
            Err(AppError::Forbidden(_)) => self.error(
                "forbidden",
                "only dispatchers acknowledge alerts",
                reference,
            ),
            Err(AppError::NotFound(_)) => self.error("not_found", "no such alert", reference),
            Err(e) => {
                tracing::error!(error = %e, "acknowledging an alert");
                self.error("internal", "try again", reference);
            }
        }
    }

    async fn subscribe(
        &mut self,
        name: &str,
        since: Option<i64>,
        reference: Option<Value>,
    ) -> Flow {
        let Some(topic) = Topic::parse(name) else {
            self.error(
                "bad_topic",
                "topics are fleet, alerts, vehicle:{id}, shipment:{id} and chat:{id}",
                reference,
            );
            return Flow::Continue;
        };
        if since.is_some_and(|s| s < 0) {
            self.error("bad_frame", "since must not be negative", reference);
            return Flow::Continue;
        }
        let key = topic.key(self.viewer.organisation_id());
        self.drop_subscription(key).await;
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            self.error(
                "too_many_subscriptions",
                "unsubscribe from something first",
                reference,
            );
            return Flow::Continue;
        }
        // Authorise before registering: a refused topic never sees an event.
        let participant = match self.authorize(topic).await {
            Ok(participant) => participant,
            Err(e) if refused(&e) => {
                self.error(
                    "forbidden",
                    "you may not subscribe to this topic",
                    reference,
                );
                return Flow::Continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "authorising a subscription");
                self.error("internal", "try again", reference);
                return Flow::Continue;
            }
        };
        let sub = self
            .state
            .tracking
            .subscribe(key, self.id, self.outbox.clone())
            .await;
        match self.catch_up(topic, key, since).await {
            Ok((snapshot, replay)) => {
                let mut frame =
                    json!({"type": "subscribed", "topic": topic.to_string(), "snapshot": snapshot});
                if let Some(r) = reference {
                    frame["ref"] = r;
                }
                self.send(frame);
                let mut floor = snapshot["seq"].as_i64().unwrap_or(0);
                if let Some(since) = since {
                    floor = since;
                    match replay {
                        Some(events) => {
                            for (seq, frame) in events {
                                self.outbox.push(Utf8Bytes::from(frame), None);
                                floor = floor.max(seq);
                            }
                        }
                        None => {
                            floor = snapshot["seq"].as_i64().unwrap_or(0);
                            self.error(
                                "since_too_old",
                                "too many missed events; the snapshot is current",
                                None,
                            );
                        }
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
            }
            Err(e) => {
                self.state.tracking.unsubscribe(&sub).await;
                tracing::error!(error = %e, "reading a snapshot");
                self.error("internal", "try again", reference);
            }
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
                    self.send(json!({
                        "type": "unsubscribed", "topic": topic.to_string(), "reason": "forbidden",
                        "message": "you may no longer see this topic",
                    }));
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
    ) -> Result<(Value, Option<Vec<(i64, String)>>), AppError> {
        let db = &self.state.db;
        let seq = super::read_seq(db).await?;
        let mut snapshot = match topic {
            Topic::Fleet => {
                json!({"vehicles": vehicles::list(db, self.viewer.organisation_id()).await?})
            }
            Topic::Alerts => {
                let org = self.viewer.organisation_id();
                json!({
                    "alerts": alerts::recent(db, org, SNAPSHOT_ALERTS).await?,
                    "unacknowledged": alerts::unacknowledged(db, org, None).await?,
                })
            }
            Topic::Vehicle(id) => {
                json!({"vehicle": vehicles::get_visible(db, &self.viewer, id).await?})
            }
            Topic::Shipment(id) => {
                json!({"shipment": shipments::load_visible(db, &self.viewer, id).await?})
            }
            Topic::Chat(id) => chat::snapshot(db, &self.viewer, id).await?,
        };
        snapshot["seq"] = json!(seq);
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
