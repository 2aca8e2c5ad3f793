//! The event seq counter (`event_seq`): one row whose lock, held to commit, puts every event of
//! every writer (positions, alerts, chat) in commit order. Events are committed through
//! [`EventTx`](super::EventTx), which takes the lock and records the counter.
//!
//! The position writer commits with the lock released before the WAL reaches the disk
//! ([`lock_seq_released`]) and then waits for the flush outside it ([`flush_wal`]), so that one
//! batch's fsync overlaps the next batch's statements. A commit made that way is visible before
//! it is durable, for the milliseconds until its flush; so a seq that is read to be relied on
//! later (a snapshot's, a resume point, the sequencer's catch-up) is read with [`read_seq`],
//! which waits for the flush that covers it.
use sqlx::{PgConnection, PgPool};

/// The highest seq committed so far, durably: every event committed later gets a larger one.
/// The read is its own [`flush_wal`], so it returns only once every commit it saw is on disk.
pub async fn read_seq(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(&format!("SELECT value, {FLUSH_MARK} FROM event_seq"))
        .fetch_one(pool)
        .await
}

/// Takes the counter's row lock (held to commit); returns the last seq handed out.
pub async fn lock_seq(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT value FROM event_seq FOR UPDATE")
        .fetch_one(conn)
        .await
}

/// As [`lock_seq`], for a transaction whose `COMMIT` is to release the lock as soon as its
/// commit record is written, before the WAL flush: the caller must [`flush_wal`] after the
/// commit and before it acknowledges or publishes anything.
pub async fn lock_seq_released(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT value, set_config('synchronous_commit', 'off', true) FROM event_seq FOR UPDATE",
    )
    .fetch_one(conn)
    .await
}

/// A transactional logical message: a WAL record of the statement's own transaction, written
/// after every commit it can see. A transaction that wrote WAL commits synchronously, waiting
/// for the flush up to its own commit record, so the commits before it are on disk too. (An id
/// alone is not enough: a transaction whose only record is its commit is committed
/// asynchronously.) Nothing decodes these messages; no table is touched.
const FLUSH_MARK: &str = "pg_logical_emit_message(true, 'waymark', '')";

/// Waits until everything committed so far is on disk ([`FLUSH_MARK`]). Concurrent flushes
/// share one fsync (PostgreSQL's group commit).
pub async fn flush_wal(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query(&format!("SELECT {FLUSH_MARK}"))
        .execute(pool)
        .await
        .map(|_| ())
}

/// Records the last seq handed out, under the lock [`lock_seq`] took.
pub(super) async fn set_seq(conn: &mut PgConnection, value: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE event_seq SET value = $1")
        .bind(value)
        .execute(conn)
        .await
        .map(|_| ())
}
