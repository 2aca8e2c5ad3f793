//! The event seq counter (`event_seq`): one row whose lock, held to commit, puts every event of
//! every writer (positions, alerts, chat) in commit order. Events are committed through
//! [`EventTx`](super::EventTx), which takes the lock and records the counter.
use sqlx::{PgConnection, PgPool};

/// The highest seq committed so far. Every event committed later gets a larger one.
pub async fn read_seq(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT value FROM event_seq")
        .fetch_one(pool)
        .await
}

/// Takes the counter's row lock (held to commit); returns the last seq handed out.
pub async fn lock_seq(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT value FROM event_seq FOR UPDATE")
        .fetch_one(conn)
        .await
}

/// Records the last seq handed out, under the lock [`lock_seq`] took.
pub(super) async fn set_seq(conn: &mut PgConnection, value: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE event_seq SET value = $1")
        .bind(value)
        .execute(conn)
        .await
        .map(|_| ())
}
