//! A connection's outgoing queue: bounded, and conflating when behind. A reader that keeps up
//! gets every frame. When the queue fills, older waiting positions are dropped wherever a newer
//! position of the same vehicle on the same topic waits behind them, so a slow reader gets the
//! latest state instead of a growing backlog. A reader that is behind even then overflows the
//! queue and is closed with a code telling it to resume.
use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use super::TopicKey;

/// Frames a connection may have waiting before it counts as behind.
pub const OUTBOX_CAPACITY: usize = 1024;
/// Conflating must free at least this many places, or the reader is too slow to keep.
const MIN_FREED: usize = OUTBOX_CAPACITY / 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxClosed;

#[derive(Default)]
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
}

#[derive(Default)]
struct Inner {
    /// Each frame with its (topic, vehicle) if a newer one of the same may replace it.
    queue: VecDeque<(Utf8Bytes, Option<(TopicKey, i64)>)>,
    overflowed: bool,
}

impl Inner {
    /// Drops every conflatable frame that has a newer one of the same key behind it.
    fn conflate(&mut self) {
        let before = self.queue.len();
        let mut newer: HashSet<(TopicKey, i64)> = HashSet::new();
        let mut kept = VecDeque::with_capacity(before);
        while let Some((frame, key)) = self.queue.pop_back() {
            if let Some(k) = key {
                if !newer.insert(k) {
                    continue;
                }
            }
            kept.push_front((frame, key));
        }
        CONFLATED.fetch_add(
            (before - kept.len()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.queue = kept;
    }
}

/// Frames dropped for a newer one of the same vehicle, by every outbox of the process.
static CONFLATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many queued position frames were replaced by a newer one of the same vehicle.
pub fn conflated_frames() -> u64 {
    CONFLATED.load(std::sync::atomic::Ordering::Relaxed)
}

impl Outbox {
    /// Queues a frame; `conflate` names the (topic, vehicle) a newer frame may stand in for.
    /// Returns false once the queue has overflowed: the connection must be closed.
    pub fn push(&self, frame: Utf8Bytes, conflate: Option<(TopicKey, i64)>) -> bool {
        let mut inner = self.inner.lock().expect("outbox poisoned");
        if inner.overflowed {
            return false;
        }
        if inner.queue.len() >= OUTBOX_CAPACITY {
            inner.conflate();
            if inner.queue.len() > OUTBOX_CAPACITY - MIN_FREED {
                inner.overflowed = true;
                inner.queue = VecDeque::new();
                drop(inner);
                self.notify.notify_one();
                return false;
            }
        }
        inner.queue.push_back((frame, conflate));
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
                    let Some((frame, _)) = inner.queue.pop_front() else {
                        break;
                    };
                    out.push(frame);
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
    async fn a_reader_that_keeps_up_gets_every_frame() {
        let outbox = Outbox::default();
        let key = (TopicKey::Vehicle(1), 1);
        for f in ["a1", "a2", "a3"] {
            outbox.push(frame(f), Some(key));
        }
        let mut out = Vec::new();
        outbox.recv_many(&mut out, 10).await.unwrap();
        let got: Vec<&str> = out.iter().map(|f| f.as_str()).collect();
        assert_eq!(got, ["a1", "a2", "a3"]);
    }

    #[tokio::test]
    async fn a_full_queue_keeps_only_the_newest_position_per_vehicle() {
        let outbox = Outbox::default();
        let topic = TopicKey::Fleet { organisation_id: 1 };
        for i in 0..OUTBOX_CAPACITY {
            let vehicle = (i % 3) as i64;
            assert!(outbox.push(frame(&format!("v{vehicle}-{i}")), Some((topic, vehicle))));
        }
        assert!(outbox.push(frame("late"), None), "conflating made room");
        let mut out = Vec::new();
        outbox.recv_many(&mut out, OUTBOX_CAPACITY).await.unwrap();
        let got: Vec<String> = out.iter().map(|f| f.to_string()).collect();
        // The three newest pushes are the newest of each vehicle, in the order they were queued.
        let mut expected: Vec<String> = Vec::new();
        expected.extend((OUTBOX_CAPACITY - 3..OUTBOX_CAPACITY).map(|i| format!("v{}-{i}", i % 3)));
        expected.push("late".to_owned());
        assert_eq!(got, expected);
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
