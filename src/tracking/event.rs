//! The event: a committed change that subscribers hear of (a position, an alert's change, a chat
//! message or read mark), with the seq it was committed under; and [`EventTx`], the one way to
//! commit events. It takes the `event_seq` row lock, held to commit, hands out the seqs, records
//! the last one, and only once the transaction has committed are the events published (through
//! the sequencer and, with Redis, to the other instances).
//!
//! What an event says is its capability's own type, seen here only through [`EventData`]: the
//! real-time path frames and routes every kind alike and depends on none of them.
use std::{
    fmt,
    ops::{Deref, DerefMut},
};

use serde_json::value::RawValue;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{
    frames,
    seq::{flush_wal, lock_seq, lock_seq_released, set_seq},
    Batch, TopicKey, Tracking,
};

/// What an event says: each kind of event is a type of the capability that commits it (a
/// position's in `tracking::position`, an alert's change in `alerts`, a chat message and a read
/// mark in `chat`).
pub trait EventData: fmt::Debug + Send + Sync + 'static {
    /// The frame's `type`.
    fn kind(&self) -> &'static str;
    /// The topics it is published on.
    fn keys(&self) -> Vec<TopicKey>;
    /// The frame's `event`, written before `data`: which change of its subject this is (an
    /// alert's `raised`, `cleared`, …). None for most kinds.
    fn event(&self) -> Option<&str> {
        None
    }
    /// The vehicle a newer event may stand in for this one for in a slow client's outbox.
    /// None, the default, for an event every subscriber must get.
    fn conflate_vehicle(&self) -> Option<i64> {
        None
    }
    /// The frame's `data`, serialised once for all the event's topics.
    fn data(&self) -> serde_json::Result<Box<RawValue>>;
}

/// One event, at its seq.
#[derive(Debug)]
pub struct Event {
    pub seq: i64,
    pub data: Box<dyn EventData>,
}

impl Event {
    pub fn new(seq: i64, data: impl EventData) -> Event {
        Event {
            seq,
            data: Box::new(data),
        }
    }
}

/// A transaction that commits events. [`EventTx::begin`] takes the seq lock; seqs are handed
/// out with [`EventTx::next_seq`] (or [`EventTx::hand_out`]), statements run on the
/// transaction (it derefs to the connection), the events stored are given to
/// [`EventTx::push`], and [`EventTx::commit`] records the last seq and commits. Dropped
/// uncommitted, it rolls back and the seqs it handed out are never used.
pub struct EventTx {
    tx: Transaction<'static, Postgres>,
    /// Set when the lock is released at commit before the WAL flush
    /// ([`EventTx::begin_released`]): the pool the flush is then waited for on.
    flush_after: Option<PgPool>,
    /// The counter's value when the lock was taken: this transaction's seqs follow it.
    locked: i64,
    /// The last seq handed out.
    last: i64,
    /// The last seq a statement of the caller's wrote to the counter (see [`EventTx::record_seq`]).
    recorded: i64,
    events: Vec<Event>,
}

impl EventTx {
    /// Begins a transaction and takes the seq lock, which every other event transaction then
    /// waits for until this one ends: seqs follow commit order across every instance.
    pub async fn begin(db: &PgPool) -> sqlx::Result<EventTx> {
        let mut tx = db.begin().await?;
        let locked = lock_seq(&mut tx).await?;
        Ok(EventTx::locked(tx, locked, None))
    }

    /// As [`EventTx::begin`], but the seq lock is released as soon as the commit is recorded,
    /// before the WAL reaches the disk, and [`EventTx::commit`] then waits for the flush outside
    /// the lock: the next transaction's statements overlap this one's fsync, and concurrent
    /// flushes share one. Commit order is still seq order (the lock is held to the commit
    /// record, and the WAL is written in that order), and a commit still returns only once it
    /// is durable; in between it is visible but not yet on disk, which is why a seq read to be
    /// relied on is read with [`read_seq`](super::read_seq).
    pub async fn begin_released(db: &PgPool) -> sqlx::Result<EventTx> {
        let mut tx = db.begin().await?;
        let locked = lock_seq_released(&mut tx).await?;
        Ok(EventTx::locked(tx, locked, Some(db.clone())))
    }

    fn locked(
        tx: Transaction<'static, Postgres>,
        locked: i64,
        flush_after: Option<PgPool>,
    ) -> Self {
        EventTx {
            tx,
            flush_after,
            locked,
            last: locked,
            recorded: locked,
            events: Vec::new(),
        }
    }

    /// Hands out the next seq.
    pub fn next_seq(&mut self) -> i64 {
        self.last += 1;
        self.last
    }

    /// Lets `plan`, a pure planner, hand out seqs itself: it is given the last seq handed out
    /// and advances it past every one it uses.
    pub fn hand_out<R>(&mut self, plan: impl FnOnce(&mut i64) -> R) -> R {
        let before = self.last;
        let planned = plan(&mut self.last);
        debug_assert!(self.last >= before, "seqs are never taken back");
        planned
    }

    /// The last seq handed out, for a statement of the caller's that writes it to the counter
    /// itself (saving a round trip on a hot path); [`EventTx::commit`] then leaves the counter
    /// alone unless more seqs are handed out.
    pub fn record_seq(&mut self) -> i64 {
        self.recorded = self.last;
        self.last
    }

    /// Adds a stored event, to be published once the transaction commits.
    pub fn push(&mut self, event: Event) {
        debug_assert!(
            event.seq > self.locked && event.seq <= self.last,
            "an event takes a seq this transaction handed out"
        );
        self.events.push(event);
    }

    /// Records the last seq handed out and commits; returns once the commit is durable. The
    /// events are published when the caller says ([`Committed::publish`]), so that it can
    /// answer its own client first.
    pub async fn commit(self) -> sqlx::Result<Committed> {
        self.commit_recorded().await?.durable().await
    }

    /// Records the last seq handed out and commits, but returns as soon as the commit is
    /// recorded: for a transaction begun with [`EventTx::begin_released`], before it is on disk,
    /// which [`Recorded::durable`] then waits for.
    pub async fn commit_recorded(mut self) -> sqlx::Result<Recorded> {
        if self.last > self.recorded {
            set_seq(&mut self.tx, self.last).await?;
        }
        self.tx.commit().await?;
        Ok(Recorded {
            flush_after: self.flush_after,
            committed: Committed {
                first: self.locked + 1,
                last: self.last,
                events: self.events,
            },
        })
    }

    /// Rolls back now: nothing is stored, and the seqs handed out are given back.
    pub async fn rollback(self) -> sqlx::Result<()> {
        self.tx.rollback().await
    }
}

/// A commit that is recorded, and perhaps not yet durable.
pub struct Recorded {
    flush_after: Option<PgPool>,
    committed: Committed,
}

impl Recorded {
    /// Waits until the commit is on disk. Nothing may be told of it before: should the flush
    /// fail, the caller answers with an error, and the events reach subscribers from the
    /// database if the commit turns out to have survived.
    pub async fn durable(self) -> sqlx::Result<Committed> {
        if let Some(pool) = &self.flush_after {
            flush_wal(pool).await?;
        }
        Ok(self.committed)
    }
}

impl Deref for EventTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for EventTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// Events committed under seqs `first..=last` (some seqs may have no event: a filtered point,
/// a refused raise), not yet published.
#[must_use = "committed events are published with `publish`"]
#[derive(Debug)]
pub struct Committed {
    first: i64,
    last: i64,
    events: Vec<Event>,
}

impl Committed {
    /// Publishes the events on the topics someone watches, each topic's frame built once.
    pub fn publish(mut self, tracking: &Tracking) {
        if self.last < self.first {
            return; // No seq was handed out.
        }
        self.events.sort_by_key(|e| e.seq);
        let events = self
            .events
            .iter()
            .flat_map(|e| frames(e, |k| tracking.wants(k)))
            .collect();
        tracking.committed(Batch {
            first: self.first,
            last: self.last,
            events,
        });
    }
}
