//! Reading missed events back from PostGIS, through one query path ([`events_between`]): for
//! `subscribe` with `since` ([`events_since`]), and for the sequencer's gap fill. Events are
//! positions, alerts (raised, and their latest change) and chat (each message at its latest
//! change, and read marks), merged in seq order, framed exactly as live delivery frames them.
use std::collections::HashSet;

use sqlx::PgPool;

use super::{frames, Event, Published, TopicKey};
use crate::{
    alerts::{Alert, ALERT_COLUMNS},
    chat,
    fleet::shipments::of_driver,
    tracking::position::{PositionRow, POSITION_COLUMNS},
};

/// Most events one `since` replay sends; a client further behind takes a fresh snapshot.
pub const REPLAY_LIMIT: i64 = 10_000;

/// The frames live delivery sent on `key` after `since`, in seq order: published positions
/// (never filtered ones), alert and chat events. For driver `driver`, only the positions and
/// alerts of shipments assigned to them now: a vehicle's earlier trips with other drivers are not
/// theirs to see. `None` if there are more than [`REPLAY_LIMIT`].
pub async fn events_since(
    pool: &PgPool,
    key: TopicKey,
    since: i64,
    driver: Option<i64>,
) -> sqlx::Result<Option<Vec<Published>>> {
    let keys = HashSet::from([key]);
    let events = events_between(pool, &keys, since, i64::MAX, driver, REPLAY_LIMIT + 1).await?;
    Ok((events.len() as i64 <= REPLAY_LIMIT).then_some(events))
}

#[derive(sqlx::FromRow)]
struct OwnedRow {
    organisation_id: i64,
    #[sqlx(flatten)]
    row: PositionRow,
}

/// The frames with seq in `(after, through]` on any of `keys`, in seq order: what live delivery
/// sent their subscribers. With `driver`, positions and alerts only of the shipments assigned to
/// that driver now. Each kind of row is read up to `limit`, so a caller that must not exceed
/// `limit` frames passes one more and checks.
pub async fn events_between(
    pool: &PgPool,
    keys: &HashSet<TopicKey>,
    after: i64,
    through: i64,
    driver: Option<i64>,
    limit: i64,
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
    let mut events = Vec::new();
    if !organisations.is_empty() || !vehicles.is_empty() || !shipments.is_empty() {
        let theirs = of_driver(7);
        let rows: Vec<OwnedRow> = sqlx::query_as(&format!(
            "SELECT organisation_id, seq, {POSITION_COLUMNS} FROM positions
             WHERE seq > $1 AND seq <= $2 AND filter_reason IS NULL
               AND (organisation_id = ANY($3) OR vehicle_id = ANY($4) OR shipment_id = ANY($5))
               AND {theirs}
             ORDER BY seq LIMIT $6"
        ))
        .bind(after)
        .bind(through)
        .bind(&organisations)
        .bind(&vehicles)
        .bind(&shipments)
        .bind(limit)
        .bind(driver)
        .fetch_all(pool)
        .await?;
        events.extend(
            rows.into_iter()
                .map(|r| Event::position(r.row.seq, r.organisation_id, r.row.position)),
        );
    }
    if !alert_organisations.is_empty() || !shipments.is_empty() {
        let theirs = of_driver(6);
        let alerts: Vec<Alert> = sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE ((id > $1 AND id <= $2) OR (updated_seq > $1 AND updated_seq <= $2))
               AND (organisation_id = ANY($3) OR shipment_id = ANY($4)) AND {theirs}
             ORDER BY id LIMIT $5"
        ))
        .bind(after)
        .bind(through)
        .bind(&alert_organisations)
        .bind(&shipments)
        .bind(limit)
        .bind(driver)
        .fetch_all(pool)
        .await?;
        events.extend(
            alerts
                .into_iter()
                .flat_map(|a| alert_events(a, after, through)),
        );
    }
    if !conversations.is_empty() {
        let (messages, marks) =
            chat::changes_between(pool, &conversations, after, through, limit).await?;
        events.extend(messages.into_iter().map(Event::chat));
        events.extend(marks.into_iter().map(Event::chat_read));
    }
    events.sort_by_key(|e| e.seq);
    let wanted = |k| keys.contains(&k);
    Ok(events.iter().flat_map(|e| frames(e, wanted)).collect())
}

/// An alert's events with seq in `(after, through]`: its raise (whose seq is its id), and its
/// latest change.
fn alert_events(alert: Alert, after: i64, through: i64) -> Vec<Event> {
    let within = |seq: i64| seq > after && seq <= through;
    let mut events = Vec::new();
    if within(alert.id) {
        events.push(Event::alert(alert.id, "raised", alert.clone()));
    }
    if let Some(seq) = alert.updated_seq.filter(|s| within(*s)) {
        events.push(Event::alert(seq, alert.last_event.clone(), alert));
    }
    events
}
