//! Reading missed events back from PostGIS: for `subscribe` with `since`, and for the
//! sequencer's gap fill. Events are positions, alerts (raised, and their latest change) and chat
//! (each message at its latest change, and read marks), merged in seq order, framed exactly as
//! live delivery frames them.
//!
//! Its queries stay runtime-checked rather than `query!`: they are put together at run time, the
//! column to filter on chosen by topic, the row's columns shared with every other read of
//! positions, alerts and messages.
use std::collections::HashSet;

use sqlx::PgPool;

use super::{frames, Published, TopicKey};
use crate::{
    alerts::{Alert, ALERT_COLUMNS},
    chat,
    position::{position_frame, PositionRow, POSITION_COLUMNS},
    shipments::of_driver,
};

/// Most events one `since` replay sends; a client further behind takes a fresh snapshot.
pub const REPLAY_LIMIT: i64 = 10_000;

/// The frames live delivery sent on `key` after `since`, in seq order: published positions
/// (never filtered ones) and alert events. For driver `driver`, only the positions of shipments
/// assigned to them now: a vehicle's earlier trips with other drivers are not theirs to see.
/// `None` if there are more than [`REPLAY_LIMIT`].
pub async fn events_since(
    pool: &PgPool,
    key: TopicKey,
    since: i64,
    driver: Option<i64>,
) -> sqlx::Result<Option<Vec<(i64, String)>>> {
    let topic = key.topic();
    let (column, id) = match key {
        TopicKey::Chat(id) => {
            let events = chat::events_between(pool, &[id], since, i64::MAX, REPLAY_LIMIT + 1)
                .await?
                .into_iter()
                .map(|e| (e.seq, e.frame.to_string()))
                .collect::<Vec<_>>();
            return Ok((events.len() as i64 <= REPLAY_LIMIT).then_some(events));
        }
        TopicKey::Fleet { organisation_id } => (Some("organisation_id"), organisation_id),
        TopicKey::Vehicle(id) => (Some("vehicle_id"), id),
        TopicKey::Shipment(id) => (Some("shipment_id"), id),
        TopicKey::Alerts { organisation_id } => (None, organisation_id),
    };
    let mut events = Vec::new();
    let theirs = of_driver(4);
    // The column name comes from the match above, never from input.
    if let Some(column) = column {
        let rows: Vec<PositionRow> = sqlx::query_as(&format!(
            "SELECT seq, {POSITION_COLUMNS} FROM positions
             WHERE {column} = $1 AND seq > $2 AND filter_reason IS NULL AND {theirs}
             ORDER BY seq LIMIT $3"
        ))
        .bind(id)
        .bind(since)
        .bind(REPLAY_LIMIT + 1)
        .bind(driver)
        .fetch_all(pool)
        .await?;
        for r in rows {
            let data = serde_json::to_string(&r.position).expect("positions serialise");
            events.push((r.seq, position_frame(&topic, r.seq, &data)));
        }
    }
    let alert_column = match key {
        TopicKey::Alerts { .. } => Some("organisation_id"),
        TopicKey::Shipment(_) => Some("shipment_id"),
        _ => None,
    };
    if let Some(column) = alert_column {
        let alerts: Vec<Alert> = sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE {column} = $1 AND (id > $2 OR updated_seq > $2) AND {theirs}
             ORDER BY id LIMIT $3"
        ))
        .bind(id)
        .bind(since)
        .bind(REPLAY_LIMIT + 1)
        .bind(driver)
        .fetch_all(pool)
        .await?;
        for a in &alerts {
            for (seq, event) in a.events_in(since, i64::MAX) {
                let frame = a.frames(seq, event, |k| k == key);
                events.extend(frame.into_iter().map(|p| (seq, p.frame.to_string())));
            }
        }
    }
    if events.len() as i64 > REPLAY_LIMIT {
        return Ok(None);
    }
    events.sort_by_key(|(seq, _)| *seq);
    Ok(Some(events))
}

#[derive(sqlx::FromRow)]
struct OwnedRow {
    organisation_id: i64,
    #[sqlx(flatten)]
    row: PositionRow,
}

/// The events with seq in `(after, through]` on any of `keys`, in seq order: what live delivery
/// would have sent this instance's subscribers.
pub async fn events_between(
    pool: &PgPool,
    keys: &HashSet<TopicKey>,
    after: i64,
    through: i64,
) -> sqlx::Result<Vec<Published>> {
    let mut organisations = Vec::new();
    let mut alert_organisations = Vec::new();
    let mut vehicles = Vec::new();
    let mut shipments = Vec::new();
    let mut conversations = Vec::new();
    for key in keys {
        match *key {
            TopicKey::Fleet { organisation_id } => organisations.push(organisation_id),
            TopicKey::Alerts { organisation_id } => alert_organisations.push(organisation_id),
            TopicKey::Vehicle(id) => vehicles.push(id),
            TopicKey::Shipment(id) => shipments.push(id),
            TopicKey::Chat(id) => conversations.push(id),
        }
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = |k| keys.contains(&k);
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
    let mut events: Vec<Published> = rows
        .into_iter()
        .flat_map(|r| frames(r.row.seq, r.organisation_id, &r.row.position, wanted))
        .collect();
    if !alert_organisations.is_empty() || !shipments.is_empty() {
        let alerts: Vec<Alert> = sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE ((id > $1 AND id <= $2) OR (updated_seq > $1 AND updated_seq <= $2))
               AND (organisation_id = ANY($3) OR shipment_id = ANY($4))"
        ))
        .bind(after)
        .bind(through)
        .bind(&alert_organisations)
        .bind(&shipments)
        .fetch_all(pool)
        .await?;
        for a in &alerts {
            for (seq, event) in a.events_in(after, through) {
                events.extend(a.frames(seq, event, wanted));
            }
        }
        events.sort_by_key(|e| e.seq);
    }
    if !conversations.is_empty() {
        events.extend(chat::events_between(pool, &conversations, after, through, i64::MAX).await?);
        events.sort_by_key(|e| e.seq);
    }
    Ok(events)
}
