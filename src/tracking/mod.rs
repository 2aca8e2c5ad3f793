//! Where positions go out: committed events are put in seq order (the [`Sequencer`]), fanned out
//! to other instances through Redis ([`Fanout`]), and delivered by the [`Hub`] to WebSocket
//! sessions, each with a bounded outbox. The session speaks the protocol in docs/API.md.
mod fanout;
pub(crate) mod frame;
mod hub;
mod outbox;
mod presence;
mod publish;
mod replay;
mod seq;
mod sequencer;
pub(crate) mod session;
mod topic;

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::auth::{Revocations, Revoked};

pub use fanout::Fanout;
use fanout::PRESENCE_REFRESH;
use frame::ServerFrame;
pub use hub::{Hub, Subscription};
pub use outbox::{conflated_frames, Outbox, OutboxClosed};
pub use presence::Presence;
pub use publish::frames;
pub use seq::{lock_seq, next_seq, read_seq, set_seq};
pub use sequencer::{Batch, Published, Sequencer};
pub use session::router;
pub use topic::{Topic, TopicKey};

/// The real-time side of one instance: what the writer hands committed events to, and what
/// sessions subscribe through.
pub struct Tracking {
    pub hub: Arc<Hub>,
    pub sequencer: Arc<Sequencer>,
    pub fanout: Option<Arc<Fanout>>,
    pub presence: Presence,
    pub revocations: Arc<Revocations>,
}

impl Tracking {
    /// A batch was committed by this instance's writer.
    pub fn committed(&self, batch: Batch) {
        if let Some(fanout) = &self.fanout {
            fanout.publish(batch.clone());
        }
        self.sequencer.accept(batch);
    }

    /// Ends `revoked` access everywhere, now: on this instance directly, on the others through
    /// Redis. The caller has already recorded the change in the database, which every later
    /// request and every socket's periodic re-check consult.
    pub async fn revoke(&self, revoked: Revoked) {
        let closed = self.revocations.apply(revoked);
        if let Some(fanout) = &self.fanout {
            fanout.publish_revocation(revoked).await;
        }
        tracing::info!(?revoked, sockets_closed = closed, "access revoked");
    }

    /// Whether events on `key` need frames: always with Redis (other instances may watch it),
    /// else only while this instance has subscribers. An event committed before a subscription
    /// registers is covered by that subscription's snapshot or replay, so skipping it is safe.
    pub fn wants(&self, key: TopicKey) -> bool {
        self.fanout.is_some() || self.hub.has_subscribers(&key)
    }

    /// Registers a (buffering) subscription; with Redis, returns once this instance will hear of
    /// every event on the topic from now on.
    pub async fn subscribe(
        &self,
        key: TopicKey,
        connection: u64,
        outbox: Arc<Outbox>,
    ) -> Arc<Subscription> {
        let sub = self.hub.subscribe(key, connection, outbox);
        if let Some(fanout) = &self.fanout {
            fanout.acquire(key).await;
        }
        sub
    }

    /// Sends a frame that needs no order (typing, presence) to conversation `shipment`'s live
    /// subscribers, on this instance but not to connection `except`, and on the others.
    async fn ephemeral(&self, shipment: i64, frame: ServerFrame, except: Option<u64>) {
        let frame = frame.text();
        if let Some(fanout) = &self.fanout {
            fanout.publish_ephemeral(shipment, &frame).await;
        }
        self.hub
            .broadcast(TopicKey::Chat(shipment), Utf8Bytes::from(frame), except);
    }

    /// Who is in the conversation, on every instance; with Redis the entry of `participant` is
    /// first recorded or removed as `present` says. Falls back on this instance's own view.
    async fn online(
        &self,
        shipment: i64,
        participant: &str,
        name: &str,
        present: Option<bool>,
    ) -> Vec<(String, String)> {
        let everywhere = match &self.fanout {
            Some(fanout) => fanout.presence(shipment, participant, name, present).await,
            None => None,
        };
        everywhere.unwrap_or_else(|| self.presence.online(shipment))
    }

    /// Counts a socket (connection `connection`) into a conversation. Everyone hears of a
    /// participant coming online; the joining socket always gets who is there.
    pub async fn join_chat(&self, shipment: i64, connection: u64, key: &str, name: &str) {
        let came_online = self.presence.join(shipment, key, name);
        let online = self
            .online(shipment, key, name, came_online.then_some(true))
            .await;
        let frame = ServerFrame::presence(shipment, online);
        if came_online {
            self.ephemeral(shipment, frame, None).await;
        } else {
            self.hub.send_to(
                TopicKey::Chat(shipment),
                connection,
                Utf8Bytes::from(frame.text()),
            );
        }
    }

    /// Uncounts a socket that left a conversation; everyone hears if it was the participant's
    /// last.
    pub async fn leave_chat(&self, shipment: i64, key: &str) {
        if let Some(name) = self.presence.leave(shipment, key) {
            let online = self.online(shipment, key, &name, Some(false)).await;
            let frame = ServerFrame::presence(shipment, online);
            self.ephemeral(shipment, frame, None).await;
        }
    }

    /// Forwards "typing" to the others in the conversation, throttled per participant.
    pub async fn typing(&self, shipment: i64, connection: u64, key: &str, name: &str) {
        if self
            .presence
            .typing(shipment, key, std::time::Instant::now())
        {
            let frame = ServerFrame::typing(shipment, key, name);
            self.ephemeral(shipment, frame, Some(connection)).await;
        }
    }

    /// Keeps this instance's presence entries in Redis alive until cancelled.
    pub async fn refresh_presence(self: Arc<Self>, cancel: CancellationToken) {
        let Some(fanout) = &self.fanout else { return };
        let mut tick = tokio::time::interval(PRESENCE_REFRESH);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => fanout.refresh_presence(&self.presence.entries()).await,
            }
        }
    }

    pub async fn unsubscribe(&self, sub: &Subscription) {
        self.hub.unsubscribe(sub);
        if let Some(fanout) = &self.fanout {
            fanout.release(sub.key).await;
        }
    }
}
