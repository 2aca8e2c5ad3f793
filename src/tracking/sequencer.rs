//! Puts every committed event of every instance into seq order before the hub delivers it.
//!
//! Writers take contiguous seq ranges under a lock held to commit, so when an instance has seen
//! seq N, every seq below N is already committed. An instance therefore never has to guess: it
//! delivers batches strictly in seq order, holds a batch that arrives early (from Redis, or from
//! its own writer racing another instance's publish) for a moment, and fills any gap that does
//! not close by itself from PostGIS. So each connection sees its events in seq order, and the
//! highest seq a client has seen is an exact resume point, across instances, through Redis
//! outages, and with no Redis at all.
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Hub, Replay, TopicKey, Window};

/// How long an early batch waits for the ones before it (normally in flight through Redis)
/// before the gap is read from the database.
const GAP_HOLD: Duration = Duration::from_millis(50);
/// Most seqs one read from the database covers; a longer gap is read in steps.
const FILL_STEP: i64 = 20_000;
/// How often the sequencer compares its position with the database's counter, which catches
/// events whose announcement never arrived (Redis down) even when nothing else happens.
const CATCH_UP_EVERY: Duration = Duration::from_secs(1);

/// One event on one topic, serialised once: the frame every subscriber of the topic receives.
#[derive(Debug, Clone)]
pub struct Published {
    pub key: TopicKey,
    pub seq: i64,
    /// Set for positions that a newer one of the same vehicle may stand in for.
    pub conflate_vehicle: Option<i64>,
    pub frame: Utf8Bytes,
}

/// The events of one commit: seqs `first..=last` (some may be unpublished, e.g. filtered
/// points), with their publishable events in seq order.
#[derive(Debug, Clone)]
pub struct Batch {
    pub first: i64,
    pub last: i64,
    pub events: Vec<Published>,
}

pub struct Sequencer {
    hub: Arc<Hub>,
    state: Mutex<State>,
    gap: Notify,
    /// Events read from the database because no one brought them in time.
    filled: AtomicU64,
}

struct State {
    /// Every seq up to here has been handed to the hub.
    delivered: i64,
    /// Batches that arrived before the seqs below them, by first seq.
    early: BTreeMap<i64, Batch>,
    /// When the oldest still-open gap was noticed.
    gap_since: Option<Instant>,
}

impl Sequencer {
    /// Starts delivering after `delivered` (the counter's value when the instance starts).
    pub fn new(hub: Arc<Hub>, delivered: i64) -> Arc<Sequencer> {
        Arc::new(Sequencer {
            hub,
            state: Mutex::new(State {
                delivered,
                early: BTreeMap::new(),
                gap_since: None,
            }),
            gap: Notify::new(),
            filled: AtomicU64::new(0),
        })
    }

    /// How many events were read from the database to fill gaps.
    pub fn filled_from_database(&self) -> u64 {
        self.filled.load(Ordering::Relaxed)
    }

    pub fn delivered(&self) -> i64 {
        self.state.lock().expect("sequencer poisoned").delivered
    }

    /// Takes a committed batch from any source; delivers everything now in order.
    pub fn accept(&self, batch: Batch) {
        let mut state = self.state.lock().expect("sequencer poisoned");
        if batch.last <= state.delivered {
            return; // Seen already: our own batch echoed, or a gap filled meanwhile.
        }
        if batch.first > state.delivered + 1 {
            state.early.entry(batch.first).or_insert(batch);
            if state.gap_since.is_none() {
                state.gap_since = Some(Instant::now());
                self.gap.notify_one();
            }
            return;
        }
        self.deliver(&mut state, batch);
        loop {
            let delivered = state.delivered;
            let Some(entry) = state.early.first_entry() else {
                break;
            };
            if entry.get().first > delivered + 1 {
                break;
            }
            let next = entry.remove();
            self.deliver(&mut state, next);
        }
        if state.early.is_empty() {
            state.gap_since = None;
        }
    }

    fn deliver(&self, state: &mut State, batch: Batch) {
        for e in batch.events.iter().filter(|e| e.seq > state.delivered) {
            self.hub
                .publish(e.key, e.seq, e.conflate_vehicle, e.frame.clone());
        }
        state.delivered = state.delivered.max(batch.last);
    }

    /// The range to read from the database now, if a gap has been open too long or the
    /// database is ahead of us with nothing on its way.
    fn gap_to_fill(&self, counter: Option<i64>) -> Option<(i64, i64)> {
        self.gap_to_fill_at(counter, Instant::now())
    }

    /// [`Sequencer::gap_to_fill`] as of `now`.
    fn gap_to_fill_at(&self, counter: Option<i64>, now: Instant) -> Option<(i64, i64)> {
        let state = self.state.lock().expect("sequencer poisoned");
        let held = |since: Instant| now.saturating_duration_since(since) >= GAP_HOLD;
        match (state.early.first_key_value(), state.gap_since) {
            (Some((first, _)), Some(since)) if held(since) => Some((
                state.delivered,
                (first - 1).min(state.delivered + FILL_STEP),
            )),
            (Some(_), _) => None,
            (None, _) => counter
                .filter(|c| *c > state.delivered)
                .map(|c| (state.delivered, c.min(state.delivered + FILL_STEP))),
        }
    }

    /// Fills gaps from PostGIS until cancelled: when an early batch has waited [`GAP_HOLD`],
    /// and every [`CATCH_UP_EVERY`] when the database's counter is ahead.
    pub async fn fill_gaps(
        self: Arc<Self>,
        db: PgPool,
        replay: Arc<Replay>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(CATCH_UP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What the counter said at the last tick: only a gap that was already there a tick ago
        // is filled, so events still on their way through Redis are not read twice.
        let mut previous_counter: Option<i64> = None;
        loop {
            let mut counter = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.gap.notified() => {
                    tokio::time::sleep(GAP_HOLD).await;
                    None
                }
                _ = tick.tick() => match super::read_seq(&db).await {
                    Ok(now) => previous_counter.replace(now),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the event counter");
                        None
                    }
                },
            };
            while let Some((after, through)) = self.gap_to_fill(counter.take()) {
                match self.read_gap(&db, &replay, after, through).await {
                    Ok(batch) => {
                        tracing::debug!(
                            after,
                            through,
                            events = batch.events.len(),
                            "filled a gap from the database"
                        );
                        self.filled
                            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                        self.accept(batch);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, after, through, "filling a gap from the database");
                        break;
                    }
                }
                if cancel.is_cancelled() {
                    break;
                }
            }
        }
    }

    async fn read_gap(
        &self,
        db: &PgPool,
        replay: &Replay,
        after: i64,
        through: i64,
    ) -> sqlx::Result<Batch> {
        let keys = self.hub.subscribed_keys();
        let window = Window {
            keys: &keys,
            after,
            through,
            driver: None,
            limit: i64::MAX,
        };
        let events = replay.between(db, window).await?;
        Ok(Batch {
            first: after + 1,
            last: through,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::Outbox;

    fn batch(first: i64, last: i64) -> Batch {
        let key = TopicKey::Vehicle(1);
        let events = (first..=last)
            .map(|seq| Published {
                key,
                seq,
                conflate_vehicle: None,
                frame: Utf8Bytes::from(seq.to_string()),
            })
            .collect();
        Batch {
            first,
            last,
            events,
        }
    }

    async fn received(outbox: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        if !outbox.is_empty() {
            outbox.recv_many(&mut out, 1000).await.unwrap();
        }
        out.iter().map(|f| f.to_string()).collect()
    }

    #[tokio::test]
    async fn batches_are_delivered_in_seq_order_whatever_order_they_arrive_in() {
        let hub = Arc::new(Hub::default());
        let outbox = Arc::new(Outbox::default());
        hub.subscribe(TopicKey::Vehicle(1), 1, outbox.clone())
            .go_live(0);
        let seq = Sequencer::new(hub, 0);
        seq.accept(batch(4, 5));
        seq.accept(batch(3, 3));
        assert!(received(&outbox).await.is_empty(), "held until 1..2 arrive");
        seq.accept(batch(1, 2));
        assert_eq!(received(&outbox).await, ["1", "2", "3", "4", "5"]);
        seq.accept(batch(2, 3));
        seq.accept(batch(1, 5));
        assert!(received(&outbox).await.is_empty(), "nothing twice");
        assert_eq!(seq.delivered(), 5);
    }

    #[tokio::test]
    async fn an_open_gap_is_reported_only_after_the_hold() {
        let seq = Sequencer::new(Arc::new(Hub::default()), 10);
        assert_eq!(seq.gap_to_fill(Some(10)), None);
        assert_eq!(
            seq.gap_to_fill(Some(12)),
            Some((10, 12)),
            "the database is ahead"
        );
        // Judged by the test's clock: however long the machine takes between the lines.
        let arrived = Instant::now();
        seq.accept(batch(14, 15));
        assert_eq!(
            seq.gap_to_fill_at(None, arrived),
            None,
            "an early batch waits first"
        );
        let later = Instant::now() + GAP_HOLD;
        assert_eq!(seq.gap_to_fill_at(None, later), Some((10, 13)));
    }
}
