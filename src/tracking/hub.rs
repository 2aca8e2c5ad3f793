//! The hub: which connections are subscribed to which topic, and delivery of committed events.
//!
//! An event is serialised once per topic and the same bytes go to every subscriber. A new
//! subscription starts out buffering: it collects live events while its snapshot or `since`
//! replay is read from the database, then goes live above a floor seq, so the hand-over from
//! stored to live events has no gap and no duplicate.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
};

use axum::extract::ws::Utf8Bytes;

use super::{Outbox, TopicKey};

/// Events one subscription may buffer while its replay is read.
const BUFFER_LIMIT: usize = 10_000;

/// One committed event, ready for delivery on one topic.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub seq: i64,
    /// Positions of the same vehicle may replace each other while queued; late points may not,
    /// since they fill in the track.
    pub conflate_vehicle: Option<i64>,
    pub frame: Utf8Bytes,
}

pub struct Subscription {
    pub key: TopicKey,
    pub connection: u64,
    outbox: Arc<Outbox>,
    state: Mutex<SubState>,
}

enum SubState {
    Buffering(Vec<Delivery>),
    Live { floor: i64 },
    Overflowed,
}

impl Subscription {
    fn deliver(&self, d: &Delivery) {
        let mut state = self.state.lock().expect("subscription poisoned");
        match &mut *state {
            SubState::Live { floor } => {
                if d.seq > *floor && !self.push(d) {
                    *state = SubState::Overflowed;
                }
            }
            SubState::Buffering(buffer) => {
                if buffer.len() < BUFFER_LIMIT {
                    buffer.push(d.clone());
                } else {
                    *state = SubState::Overflowed;
                }
            }
            SubState::Overflowed => {}
        }
    }

    /// Sends a frame outside the seq order (typing, presence) if the subscription is live; one
    /// still catching up misses it, which is fine for frames about the present.
    fn push_ephemeral(&self, frame: &Utf8Bytes) {
        let mut state = self.state.lock().expect("subscription poisoned");
        if matches!(*state, SubState::Live { .. }) && !self.outbox.push(frame.clone(), None) {
            *state = SubState::Overflowed;
        }
    }

    fn push(&self, d: &Delivery) -> bool {
        self.outbox
            .push(d.frame.clone(), d.conflate_vehicle.map(|v| (self.key, v)))
    }

    /// Ends buffering: delivers what was buffered above `floor`, then everything live above it.
    /// False if the subscription overflowed meanwhile (the connection must resume).
    pub fn go_live(&self, floor: i64) -> bool {
        let mut state = self.state.lock().expect("subscription poisoned");
        let SubState::Buffering(buffer) = std::mem::replace(&mut *state, SubState::Live { floor })
        else {
            *state = SubState::Overflowed;
            return false;
        };
        for d in buffer.iter().filter(|d| d.seq > floor) {
            if !self.push(d) {
                *state = SubState::Overflowed;
                return false;
            }
        }
        true
    }
}

#[derive(Default)]
pub struct Hub {
    topics: RwLock<HashMap<TopicKey, Vec<Arc<Subscription>>>>,
    next_connection: std::sync::atomic::AtomicU64,
}

impl Hub {
    pub fn new_connection_id(&self) -> u64 {
        self.next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Registers a buffering subscription; call [`Subscription::go_live`] once caught up.
    pub fn subscribe(
        &self,
        key: TopicKey,
        connection: u64,
        outbox: Arc<Outbox>,
    ) -> Arc<Subscription> {
        let sub = Arc::new(Subscription {
            key,
            connection,
            outbox,
            state: Mutex::new(SubState::Buffering(Vec::new())),
        });
        self.topics
            .write()
            .expect("hub poisoned")
            .entry(key)
            .or_default()
            .push(sub.clone());
        sub
    }

    pub fn unsubscribe(&self, sub: &Subscription) {
        let mut topics = self.topics.write().expect("hub poisoned");
        if let Some(subs) = topics.get_mut(&sub.key) {
            subs.retain(|s| s.connection != sub.connection);
            if subs.is_empty() {
                topics.remove(&sub.key);
            }
        }
    }

    pub fn has_subscribers(&self, key: &TopicKey) -> bool {
        self.topics.read().expect("hub poisoned").contains_key(key)
    }

    /// Delivers an event to every local subscriber of `key`.
    pub fn publish(
        &self,
        key: TopicKey,
        seq: i64,
        conflate_vehicle: Option<i64>,
        frame: Utf8Bytes,
    ) {
        let topics = self.topics.read().expect("hub poisoned");
        let Some(subs) = topics.get(&key) else { return };
        let delivery = Delivery {
            seq,
            conflate_vehicle,
            frame,
        };
        for sub in subs {
            sub.deliver(&delivery);
        }
    }

    /// Sends an ephemeral frame to every live local subscriber of `key` but `except`.
    pub fn broadcast(&self, key: TopicKey, frame: Utf8Bytes, except: Option<u64>) {
        let topics = self.topics.read().expect("hub poisoned");
        for sub in topics.get(&key).into_iter().flatten() {
            if Some(sub.connection) != except {
                sub.push_ephemeral(&frame);
            }
        }
    }

    /// Sends an ephemeral frame to connection `connection`'s subscription of `key`.
    pub fn send_to(&self, key: TopicKey, connection: u64, frame: Utf8Bytes) {
        let topics = self.topics.read().expect("hub poisoned");
        for sub in topics.get(&key).into_iter().flatten() {
            if sub.connection == connection {
                sub.push_ephemeral(&frame);
            }
        }
    }

    /// The topics that have local subscribers now.
    pub fn subscribed_keys(&self) -> HashSet<TopicKey> {
        self.topics
            .read()
            .expect("hub poisoned")
            .keys()
            .copied()
            .collect()
    }

    pub fn subscription_count(&self) -> usize {
        self.topics
            .read()
            .expect("hub poisoned")
            .values()
            .map(Vec::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(outbox: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        if !outbox.is_empty() {
            outbox.recv_many(&mut out, 100).await.unwrap();
        }
        out.iter().map(|f| f.to_string()).collect()
    }

    #[tokio::test]
    async fn buffered_events_at_or_below_the_floor_are_dropped_on_going_live() {
        let hub = Hub::default();
        let outbox = Arc::new(Outbox::default());
        let key = TopicKey::Shipment(1);
        let sub = hub.subscribe(key, 1, outbox.clone());
        hub.publish(key, 5, None, Utf8Bytes::from_static("five"));
        hub.publish(key, 7, None, Utf8Bytes::from_static("seven"));
        assert!(
            drain(&outbox).await.is_empty(),
            "nothing is sent while buffering"
        );
        assert!(sub.go_live(5));
        hub.publish(key, 6, None, Utf8Bytes::from_static("six"));
        hub.publish(key, 8, None, Utf8Bytes::from_static("eight"));
        assert_eq!(drain(&outbox).await, ["seven", "six", "eight"]);
    }

    #[tokio::test]
    async fn unsubscribed_connections_get_nothing_and_other_topics_are_separate() {
        let hub = Hub::default();
        let a = Arc::new(Outbox::default());
        let b = Arc::new(Outbox::default());
        let sa = hub.subscribe(TopicKey::Fleet { organisation_id: 1 }, 1, a.clone());
        let sb = hub.subscribe(TopicKey::Fleet { organisation_id: 2 }, 2, b.clone());
        sa.go_live(0);
        sb.go_live(0);
        hub.publish(
            TopicKey::Fleet { organisation_id: 1 },
            1,
            None,
            Utf8Bytes::from_static("org1"),
        );
        assert_eq!(drain(&a).await, ["org1"]);
        assert!(drain(&b).await.is_empty());
        hub.unsubscribe(&sa);
        hub.publish(
            TopicKey::Fleet { organisation_id: 1 },
            2,
            None,
            Utf8Bytes::from_static("again"),
        );
        assert!(drain(&a).await.is_empty());
        assert!(!hub.has_subscribers(&TopicKey::Fleet { organisation_id: 1 }));
    }
}
