//! The WebSocket protocol (docs/API.md), over the real-time path of [`crate::tracking`]: its
//! [`frame`]s, and one connection per [`Session`]: authentication before the upgrade, then one
//! task that reads client frames, writes the outbox (one frame per message, or with `?batch=true`
//! the frames ready together as one JSON array), pings, and stops on shutdown. Subscriptions are
//! removed on every way out. Each client frame is applied by the file of its concern, as `apply` on the frame:
//! [`subscriptions`] (subscribe, unsubscribe, and what a subscription needs), [`chat`] and
//! [`alerts`]. The connection itself is opened by [`handshake`] and written through [`wire`],
//! which keep an idle connection's memory small and write all that is ready at once.
mod alerts;
mod chat;
pub mod frame;
mod handshake;
mod subscriptions;
mod wire;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{ws::Utf8Bytes, State},
    http::HeaderMap,
    response::Response,
    routing::get,
    Router,
};
use bytes::Bytes;
use chrono::Utc;
use futures_util::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{
    self,
    protocol::{frame::coding::CloseCode, CloseFrame, WebSocketConfig},
    Message,
};

use crate::{
    auth::{self, Revoked, ShareAccess, Viewer},
    error::openapi::{BadRequest, CommonErrors, Forbidden},
    error::{ApiQuery, AppError},
    security,
    tracking::{Outbox, Subscription, TopicKey},
    AppState,
};
use frame::{ClientFrame, Envelope, Me, ServerFrame};
use handshake::Handshake;
use wire::Socket;
pub use wire::FRAGMENT_BYTES;

/// Largest client frame (and message) accepted; bigger ones close the connection with
/// [`CLOSE_TOO_BIG`].
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// The close code for a client frame over [`MAX_FRAME_BYTES`] ("message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;
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
/// Frames written per wake-up of the writer: each is its own message, sent together and flushed
/// once.
const DRAIN: usize = 64;
/// Frames written per wake-up of a batching connection: they go out as one message, so a bigger
/// drain means fewer messages for the client to receive and parse when many are ready.
const BATCH_DRAIN: usize = 256;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WsQuery {
    /// A JWT, for clients that cannot set headers.
    token: Option<String>,
    /// A share link token.
    share: Option<String>,
    /// `true`: when several frames are ready at once, send them as one text message holding a
    /// JSON array of the frames, in order (a lone frame is still sent as itself).
    #[serde(default)]
    batch: bool,
}

#[utoipa::path(
    get,
    path = "/ws",
    operation_id = "websocket",
    summary = "Live positions and alerts (WebSocket)",
    description = "Upgrades to a WebSocket speaking JSON text frames (subscribe to `fleet`, `alerts`, `vehicle:{id}` or `shipment:{id}`, resume with `since`; `acknowledge` an alert). Authenticate with `Authorization: Bearer <jwt>`, `?token=<jwt>`, the session cookie, or `?share=<share token>`. A browser's `Origin` must be this site or an allowed origin (`403`). With `?batch=true`, frames ready together arrive as one JSON array message. The frames, topics and close codes are described in docs/API.md#websocket-get-apiv1ws.",
    tag = "tracking",
    params(WsQuery),
    responses(
        (status = 101, description = "Switching protocols: the WebSocket is open."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = []), ("share" = []), ("wsToken" = [])),
)]
async fn upgrade(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<WsQuery>,
    headers: HeaderMap,
    ws: Result<Handshake, AppError>,
) -> Result<Response, AppError> {
    let signed_in = |s: auth::Session| (Viewer::User(s.user), Some(s.id));
    let (viewer, session) = match (query.share, query.token) {
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
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        // Small buffers keep an idle connection cheap: client frames are a few hundred bytes, and
        // the buffer grows for the rare bigger one. Frames are not buffered by the protocol but
        // handed straight to `wire::Coalesce`, which writes them together.
        .read_buffer_size(512)
        .write_buffer_size(0);
    let tracker = state.tracker.clone();
    Ok(ws?.accept(config, &tracker, move |socket| async move {
        let metrics = state.metrics.clone();
        metrics.websocket_connections.inc();
        Session::new(state, viewer, session, query.batch)
            .run(socket)
            .await;
        metrics.websocket_connections.dec();
    }))
}

/// The frames, each already JSON, as one JSON array, in order: joined, not serialised again.
fn as_array(frames: &[Utf8Bytes]) -> String {
    let len = frames.iter().map(|f| f.len() + 1).sum::<usize>() + 1;
    let mut text = String::with_capacity(len);
    text.push('[');
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(frame.as_str());
    }
    text.push(']');
    text
}

/// Whether a read failed because the client's frame or message was over [`MAX_FRAME_BYTES`].
/// The reader stops at the frame's header, so the connection cannot go on; the client is told
/// why with a close frame rather than left with a dropped connection.
fn too_big(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}

struct Session {
    state: AppState,
    viewer: Viewer,
    /// The sign-in a user's connection opened with; signing it out closes the connection.
    session: Option<i64>,
    id: u64,
    /// The client asked for the frames ready together as one array message.
    batch: bool,
    outbox: Arc<Outbox>,
    subscriptions: HashMap<TopicKey, Arc<Subscription>>,
    /// Who this connection is in each conversation it has joined (subscribed to `chat:{id}`).
    conversations: HashMap<i64, crate::chat::Participant>,
}

/// What the connection does after an event.
#[derive(Clone, Copy)]
enum Flow {
    Continue,
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The peer is gone: end without a close frame.
    End,
}

/// The close for a client that cannot keep up.
const TOO_SLOW: Flow = Flow::Close(CLOSE_TOO_SLOW, "too far behind; resume with since");
/// The close for credentials revoked while connected.
const REVOKED: Flow = Flow::Close(CLOSE_REVOKED, "access was revoked; sign in again");

impl Session {
    fn new(state: AppState, viewer: Viewer, session: Option<i64>, batch: bool) -> Self {
        let id = state.tracking.hub.new_connection_id();
        Session {
            state,
            viewer,
            session,
            id,
            batch,
            outbox: Arc::new(Outbox::default()),
            subscriptions: HashMap::new(),
            conversations: HashMap::new(),
        }
    }

    async fn run(mut self, socket: Socket) {
        let (mut sink, mut stream) = socket.split();
        let user = match &self.viewer {
            Viewer::User(u) => Some(Me::from(u)),
            Viewer::Share(_) => None,
        };
        self.send(ServerFrame::Hello {
            server_time: Utc::now(),
            user,
        });
        let close = self.serve(&mut sink, &mut stream).await;
        self.state.revocations.unwatch(self.id);
        let keys: Vec<TopicKey> = self.subscriptions.keys().copied().collect();
        for key in keys {
            self.drop_subscription(key).await;
        }
        if let Flow::Close(code, reason) = close {
            if code == CLOSE_TOO_SLOW {
                self.state.metrics.slow_clients_closed.inc();
            }
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                sink.send(Message::Close(Some(frame))),
            )
            .await;
        }
    }

    /// The connection loop: until it ends, how ([`Flow::Close`] or [`Flow::End`]).
    async fn serve(
        &mut self,
        sink: &mut SplitSink<Socket, Message>,
        stream: &mut SplitStream<Socket>,
    ) -> Flow {
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
        // Allocated per wake-up and dropped after, so an idle connection holds no buffer.
        let mut frames = Vec::new();
        let drain = if self.batch { BATCH_DRAIN } else { DRAIN };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Flow::Close(CLOSE_RESTART, "server restarting; resume with since"),
                _ = watch.revoked.cancelled() => return REVOKED,
                _ = &mut expired => return Flow::Close(CLOSE_REVOKED, "the session or share link has expired"),
                _ = watch.access_changed.notified() => self.recheck_subscriptions().await,
                _ = recheck.tick() => {
                    if !auth::still_valid(&self.state.db, &self.viewer, self.session).await {
                        return REVOKED;
                    }
                    self.recheck_subscriptions().await;
                }
                ready = self.outbox.recv_many(&mut frames, drain) => {
                    if ready.is_err() {
                        return TOO_SLOW;
                    }
                    // Everything ready goes out with one flush: one write to the socket.
                    let write = async {
                        if self.batch && frames.len() > 1 {
                            wire::feed_text(sink, Bytes::from(as_array(&frames))).await?;
                        } else {
                            for frame in frames.drain(..) {
                                wire::feed_text(sink, Bytes::from(frame)).await?;
                            }
                        }
                        sink.flush().await
                    };
                    let written = tokio::time::timeout(write_timeout, write).await;
                    frames = Vec::new();
                    match written {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Flow::End,
                        Err(_) => return TOO_SLOW,
                    }
                }
                msg = stream.next() => {
                    last_heard = Instant::now();
                    if let flow @ (Flow::Close(..) | Flow::End) = self.on_message(msg).await {
                        return flow;
                    }
                    let every = self.ping_every(presence_limit);
                    if ping.period() != every {
                        ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                    }
                }
                _ = ping.tick() => {
                    let limit = if self.in_conversation() { presence_limit } else { IDLE_LIMIT };
                    if last_heard.elapsed() > limit {
                        return Flow::End;
                    }
                    let sent = tokio::time::timeout(write_timeout, sink.send(Message::Ping(Default::default()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        return Flow::End;
                    }
                }
            }
        }
    }

    /// Acts on what the peer sent.
    async fn on_message(&mut self, msg: Option<Result<Message, tungstenite::Error>>) -> Flow {
        match msg {
            // Boxed: handling a frame (a subscribe reads the database) needs far more state than
            // waiting does, and only while it runs.
            Some(Ok(Message::Text(text))) => Box::pin(self.on_text(&text)).await,
            Some(Ok(Message::Binary(_))) => {
                self.send(ServerFrame::error("bad_frame", "frames are JSON text"));
                Flow::Continue
            }
            // Raw frames are what this server writes; reading yields whole messages.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Flow::Continue,
            Some(Ok(Message::Close(_))) | None => Flow::End,
            Some(Err(e)) if too_big(&e) => Flow::Close(CLOSE_TOO_BIG, "frames are at most 64 KiB"),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket read failed");
                Flow::End
            }
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

    /// Refuses a frame that failed with the error the API would answer; one that worked was
    /// answered already.
    fn refuse<T>(&self, r: &Option<Value>, done: Result<T, AppError>) {
        if let Err(e) = done {
            self.reply(r, ServerFrame::from(e));
        }
    }

    /// Decodes a client frame and applies it.
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
            ClientFrame::Subscribe(f) => return f.apply(self, r).await,
            ClientFrame::Unsubscribe(f) => f.apply(self, r).await,
            ClientFrame::Acknowledge(f) => f.apply(self, r).await,
            ClientFrame::ChatSend(f) => f.apply(self, r).await,
            ClientFrame::ChatEdit(f) => f.apply(self, r).await,
            ClientFrame::ChatDelete(f) => f.apply(self, r).await,
            ClientFrame::ChatReact(f) => f.apply(self, r).await,
            ClientFrame::ChatRead(f) => f.apply(self, r).await,
            ClientFrame::Typing(f) => f.apply(self, r).await,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_ready_together_make_one_json_array_in_order() {
        let frames = [
            Utf8Bytes::from_static(r#"{"type":"position","seq":1}"#),
            Utf8Bytes::from_static(r#"{"type":"vehicle","seq":2,"data":{"name":"a,]"}}"#),
        ];
        let array: Vec<Value> = serde_json::from_str(&as_array(&frames)).unwrap();
        let each: Vec<Value> = frames
            .iter()
            .map(|f| serde_json::from_str(f.as_str()).unwrap())
            .collect();
        assert_eq!(array, each);
    }
}
