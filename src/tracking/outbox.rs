//! A connection's outgoing queue: bounded, and conflating. While a position waits to be written,
//! a newer position of the same vehicle on the same topic replaces it, so a slow reader gets the
//! latest state instead of a growing backlog. A reader that still falls too far behind overflows
//! the queue and is closed with a code telling it to resume.
use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use super::TopicKey;

/// Frames a connection may have waiting before it counts as too slow.
pub const OUTBOX_CAPACITY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxClosed;

#[derive(Default)]
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Entry>,
    /// The newest waiting frame per (topic, vehicle); the queue holds its place in line.
    latest: HashMap<(TopicKey, i64), Utf8Bytes>,
    overflowed: bool,
}

enum Entry {
    Frame(Utf8Bytes),
    Conflated(TopicKey, i64),
}

impl Outbox {
    /// Queues a frame. With `conflate`, replaces a waiting frame of the same (topic, vehicle).
    /// Returns false once the queue has overflowed: the connection must be closed.
    pub fn push(&self, frame: Utf8Bytes, conflate: Option<(TopicKey, i64)>) -> bool {
        let mut inner = self.inner.lock().expect("outbox poisoned");
        if inner.overflowed {
            return false;
        }
        if let Some(key) = conflate {
            if let Some(waiting) = inner.latest.get_mut(&key) {
                *waiting = frame;
                return true;
            }
        }
        if inner.queue.len() >= OUTBOX_CAPACITY {
            inner.overflowed = true;
            inner.queue.clear();
            inner.latest.clear();
            drop(inner);
            self.notify.notify_one();
            return false;
        }
        match conflate {
            Some(key) => {
                inner.latest.insert(key, frame);
                inner.queue.push_back(Entry::Conflated(key.0, key.1));
            }
            None => inner.queue.push_back(Entry::Frame(frame)),
        }
        drop(inner);
        self.notify.notify_one();
        true
    }

    /// Waits for frames and moves up to `max` of them into `out`, oldest first.
    pub async fn recv_many(
        &self,
        out: &mut Vec<Utf8Bytes>,
        max: usize,
    ) -> Result<(), OutboxClosed> {
        loop {
            {
                let mut inner = self.inner.lock().expect("outbox poisoned");
                if inner.overflowed {
                    return Err(OutboxClosed);
                }
                while out.len() < max {
                    let Some(entry) = inner.queue.pop_front() else {
                        break;
                    };
                    match entry {
                        Entry::Frame(f) => out.push(f),
                        Entry::Conflated(topic, vehicle) => {
                            if let Some(f) = inner.latest.remove(&(topic, vehicle)) {
                                out.push(f);
                            }
                        }
                    }
                }
                if !out.is_empty() {
                    return Ok(());
                }
            }
            self.notify.notified().await;
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("outbox poisoned").queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &str) -> Utf8Bytes {
        Utf8Bytes::from(s.to_owned())
    }

    #[tokio::test]
    async fn newer_position_of_a_vehicle_replaces_the_waiting_one_in_place() {
        let outbox = Outbox::default();
        let topic = TopicKey::Vehicle(1);
        outbox.push(frame("a1"), Some((topic, 1)));
        outbox.push(frame("b1"), Some((topic, 2)));
        outbox.push(frame("a2"), Some((topic, 1)));
        outbox.push(frame("hello"), None);
        let mut out = Vec::new();
        outbox.recv_many(&mut out, 10).await.unwrap();
        let got: Vec<&str> = out.iter().map(|f| f.as_str()).collect();
        assert_eq!(got, ["a2", "b1", "hello"]);
    }

    #[tokio::test]
    async fn overflow_closes_the_outbox() {
        let outbox = Outbox::default();
        for i in 0..OUTBOX_CAPACITY {
            assert!(outbox.push(frame(&i.to_string()), None));
        }
        assert!(!outbox.push(frame("one too many"), None));
        let mut out = Vec::new();
        assert_eq!(outbox.recv_many(&mut out, 10).await, Err(OutboxClosed));
    }
}
