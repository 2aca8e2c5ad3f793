//! Where positions go out: committed events are put in seq order (the [`Sequencer`]), fanned out
//! to other instances through Redis ([`Fanout`]), and delivered by the [`Hub`] to WebSocket
//! sessions, each with a bounded outbox. The session speaks the protocol in docs/API.md.
mod fanout;
mod hub;
mod outbox;
mod publish;
mod replay;
mod sequencer;
mod session;
mod topic;

use std::sync::Arc;

pub use fanout::Fanout;
pub use hub::{Hub, Subscription};
pub use outbox::{conflated_frames, Outbox, OutboxClosed};
pub use publish::frames;
pub use replay::read_seq;
pub use sequencer::{Batch, Published, Sequencer};
pub use session::router;
pub use topic::{Topic, TopicKey};

/// The real-time side of one instance: what the writer hands committed events to, and what
/// sessions subscribe through.
pub struct Tracking {
    pub hub: Arc<Hub>,
    pub sequencer: Arc<Sequencer>,
    pub fanout: Option<Arc<Fanout>>,
}

impl Tracking {
    /// A batch was committed by this instance's writer.
    pub fn committed(&self, batch: Batch) {
        if let Some(fanout) = &self.fanout {
            fanout.publish(batch.clone());
        }
        self.sequencer.accept(batch);
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

    pub async fn unsubscribe(&self, sub: &Subscription) {
        self.hub.unsubscribe(sub);
        if let Some(fanout) = &self.fanout {
            fanout.release(sub.key).await;
        }
    }
}
