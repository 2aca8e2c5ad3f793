//! Reading missed events back from PostGIS for `subscribe` with `since`.
use std::collections::HashSet;

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
    Ok(Some(
        rows.into_iter().map(|r| (r.seq, r.position)).collect(),
    ))
}

#[derive(sqlx::FromRow)]
struct OwnedRow {
    organisation_id: i64,
    #[sqlx(flatten)]
    row: PositionRow,
}

/// Published positions with seq in `(after, through]` on any of `keys`, in seq order, with
/// their organisation: what live delivery would have sent this instance's subscribers.
pub async fn positions_between(
    pool: &PgPool,
    keys: &HashSet<TopicKey>,
    after: i64,
    through: i64,
) -> sqlx::Result<Vec<(i64, i64, Position)>> {
    let mut organisations = Vec::new();
    let mut vehicles = Vec::new();
    let mut shipments = Vec::new();
    for key in keys {
        match *key {
            TopicKey::Fleet { organisation_id } => organisations.push(organisation_id),
            TopicKey::Vehicle(id) => vehicles.push(id),
            TopicKey::Shipment(id) => shipments.push(id),
        }
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<OwnedRow> = sqlx::query_as(&format!(
        "SELECT organisation_id, seq, {POSITION_COLUMNS} FROM positions
         WHERE seq > $1 AND seq <= $2 AND filter_reason IS NULL
           AND (organisation_id = ANY($3) OR vehicle_id = ANY($4) OR shipment_id = ANY($5))
         ORDER BY seq"
    ))
    .bind(after)
    .bind(through)
    .bind(&organisations)
    .bind(&vehicles)
    .bind(&shipments)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.row.seq, r.organisation_id, r.row.position))
        .collect())
}
