//! Reading missed events back from PostGIS, through one query path ([`Replay::between`]): for
//! `subscribe` with `since` ([`Replay::since`]), and for the sequencer's gap fill. Each capability
//! that commits events registers the [`EventSource`] its events are read back from (positions
//! here, alerts and chat in theirs); their events are merged in seq order and framed exactly as
//! live delivery frames them.
//!
//! The sources' queries stay runtime-checked rather than `query!`: they are put together at run
//! time, the driver's filter added where it applies, the row's columns shared with every other
//! read of positions, alerts and messages.
use std::collections::HashSet;

use futures_util::future::BoxFuture;
use sqlx::PgPool;

use super::{frames, Event, Published, TopicKey};

/// Most events one `since` replay sends; a client further behind takes a fresh snapshot.
pub const REPLAY_LIMIT: i64 = 10_000;

/// What a source is asked for: its events with seq in `(after, through]` on any of `keys`, at
/// most `limit` of them. With `driver`, only those of shipments assigned to that driver now (a
/// vehicle's earlier trips with other drivers are not theirs to see).
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub keys: &'a HashSet<TopicKey>,
    pub after: i64,
    pub through: i64,
    pub driver: Option<i64>,
    pub limit: i64,
}

impl Window<'_> {
    /// The ids of the keys that `pick` maps to one, for a query's `= ANY($n)`.
    pub fn ids(&self, pick: impl Fn(TopicKey) -> Option<i64>) -> Vec<i64> {
        self.keys.iter().filter_map(|k| pick(*k)).collect()
    }

    /// Whether `seq` falls inside the window.
    pub fn holds(&self, seq: i64) -> bool {
        seq > self.after && seq <= self.through
    }
}

/// Where one kind of event is read back from.
pub trait EventSource: Send + Sync {
    /// The events of this kind inside `window`, in any order.
    fn events<'a>(
        &'a self,
        db: &'a PgPool,
        window: Window<'a>,
    ) -> BoxFuture<'a, sqlx::Result<Vec<Event>>>;
}

/// Every registered source, read as one.
pub struct Replay {
    sources: Vec<Box<dyn EventSource>>,
}

impl Replay {
    pub fn new(sources: Vec<Box<dyn EventSource>>) -> Replay {
        Replay { sources }
    }

    /// The frames live delivery sent on `key` after `since`, in seq order. For driver `driver`,
    /// only what they may see now. `None` if there are more than [`REPLAY_LIMIT`].
    pub async fn since(
        &self,
        db: &PgPool,
        key: TopicKey,
        since: i64,
        driver: Option<i64>,
    ) -> sqlx::Result<Option<Vec<Published>>> {
        let keys = HashSet::from([key]);
        let window = Window {
            keys: &keys,
            after: since,
            through: i64::MAX,
            driver,
            limit: REPLAY_LIMIT + 1,
        };
        let events = self.between(db, window).await?;
        Ok((events.len() as i64 <= REPLAY_LIMIT).then_some(events))
    }

    /// The frames inside `window`, in seq order: what live delivery sent the subscribers of its
    /// keys. Each source reads up to `limit`, so a caller that must not exceed `limit` frames
    /// passes one more and checks.
    pub async fn between(&self, db: &PgPool, window: Window<'_>) -> sqlx::Result<Vec<Published>> {
        let mut events = Vec::new();
        for source in &self.sources {
            events.extend(source.events(db, window).await?);
        }
        events.sort_by_key(|e| e.seq);
        let wanted = |k| window.keys.contains(&k);
        Ok(events.iter().flat_map(|e| frames(e, wanted)).collect())
    }
}
