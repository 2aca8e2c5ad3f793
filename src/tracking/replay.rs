//! Reading missed events back from PostGIS for `subscribe` with `since`.
use sqlx::PgPool;

use super::TopicKey;
use crate::position::{Position, PositionRow, POSITION_COLUMNS};

/// Most events one `since` replay sends; a client further behind takes a fresh snapshot.
pub const REPLAY_LIMIT: i64 = 10_000;

/// The highest seq committed so far. Every event committed later gets a larger one.
pub async fn read_seq(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT value FROM event_seq")
        .fetch_one(pool)
        .await
}

/// The events live delivery sent on `key` after `since`, in seq order: published positions
/// only (never filtered ones). `None` if there are more than [`REPLAY_LIMIT`].
pub async fn positions_since(
    pool: &PgPool,
    key: TopicKey,
    since: i64,
) -> sqlx::Result<Option<Vec<(i64, Position)>>> {
    let (column, id) = match key {
        TopicKey::Fleet { organisation_id } => ("organisation_id", organisation_id),
        TopicKey::Vehicle(id) => ("vehicle_id", id),
        TopicKey::Shipment(id) => ("shipment_id", id),
    };
    // The column name comes from the match above, never from input.
    let sql = format!(
        "SELECT seq, {POSITION_COLUMNS} FROM positions
         WHERE {column} = $1 AND seq > $2 AND filter_reason IS NULL
         ORDER BY seq LIMIT $3"
    );
    let rows: Vec<PositionRow> = sqlx::query_as(&sql)
        .bind(id)
        .bind(since)
        .bind(REPLAY_LIMIT + 1)
        .fetch_all(pool)
        .await?;
    if rows.len() as i64 > REPLAY_LIMIT {
        return Ok(None);
    }
    Ok(Some(rows.into_iter().map(|r| (r.seq, r.into())).collect()))
}
