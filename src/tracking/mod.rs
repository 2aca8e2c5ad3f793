//! Where positions, alerts and chat go out: each change is an [`Event`], committed with a seq
//! through an [`EventTx`] and framed in one envelope ([`frames`]); committed events are put in
//! seq order (the [`Sequencer`]), fanned out to other instances through Redis ([`Fanout`]), and
//! delivered by the [`Hub`] to subscribers, each with a bounded outbox. The WebSocket sessions
//! that subscribe (`crate::socket`) speak the protocol in docs/API.md. Missed events are read back
//! through [`Replay`], from the sources each capability registers.
mod cluster;
mod event;
mod fanout;
mod hub;
mod outbox;
pub mod position;
mod presence;
mod publish;
mod replay;
mod seq;
mod sequencer;
mod topic;

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::auth::{Revocations, Revoked};

pub use event::{Committed, Event, EventData, EventTx};
pub use fanout::Fanout;
use fanout::PRESENCE_REFRESH;
pub use hub::{Hub, Subscription};
pub use outbox::{conflated_frames, Outbox, OutboxClosed};
pub use presence::{Presence, TYPING_SHOWN_FOR};
pub use publish::frames;
pub use replay::{EventSource, Replay, Window, REPLAY_LIMIT};
pub use seq::{lock_seq, read_seq};
pub use sequencer::{Batch, Published, Sequencer};
pub use topic::{Topic, TopicKey};

/// The real-time side of one instance: what the writer hands committed events to, and what
/// sessions subscribe through.
pub struct Tracking {
    pub hub: Arc<Hub>,
    pub sequencer: Arc<Sequencer>,
    pub fanout: Option<Arc<Fanout>>,
    pub presence: Presence,
    pub revocations: Arc<Revocations>,
    /// Reads missed events back, for `since` and the sequencer.
    pub replay: Arc<Replay>,
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
    pub async fn ephemeral(&self, shipment: i64, frame: String, except: Option<u64>) {
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

    /// Counts a socket into a conversation: whether the participant came online with it, and who
    /// is there now, `(participant, name)`.
    pub async fn join_chat(
        &self,
        shipment: i64,
        key: &str,
        name: &str,
    ) -> (bool, Vec<(String, String)>) {
        let came_online = self.presence.join(shipment, key, name);
        let online = self
            .online(shipment, key, name, came_online.then_some(true))
            .await;
        (came_online, online)
    }

    /// Uncounts a socket that left a conversation: who is there now if it was the participant's
    /// last.
    pub async fn leave_chat(&self, shipment: i64, key: &str) -> Option<Vec<(String, String)>> {
        let name = self.presence.leave(shipment, key)?;
        Some(self.online(shipment, key, &name, Some(false)).await)
    }

    /// Whether a participant's "typing" is forwarded now: throttled per participant.
    pub fn typing_due(&self, shipment: i64, key: &str) -> bool {
        self.presence
            .typing(shipment, key, std::time::Instant::now())
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
