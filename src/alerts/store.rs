//! Alerts in PostGIS: the row, and the statements that raise, clear and acknowledge them. Every change
//! takes its seq in the event transaction that stores it (`tracking::EventTx`), which publishes
//! it as an event, so the sequencer, the Redis fan-out and `since` replay carry alerts exactly
//! as they carry positions.
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{
    value::{to_raw_value, RawValue},
    Value,
};
use sqlx::{PgConnection, PgPool};

use super::{rules::Change, Rule};
use crate::{
    auth::{of_driver, CurrentUser},
    tracking::{Event, EventData, EventSource, TopicKey, Window},
};

/// An alert as the API returns it and event frames carry it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Alert {
    /// Also the seq of the event that raised it.
    pub id: i64,
    #[serde(skip)]
    pub organisation_id: i64,
    pub rule: Rule,
    #[schema(required = true)]
    pub vehicle_id: Option<i64>,
    #[schema(required = true)]
    pub shipment_id: Option<i64>,
    #[schema(required = true)]
    pub geofence_id: Option<i64>,
    /// Device time of the position that raised it; null for the clock's alerts.
    #[schema(required = true)]
    pub position_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub lat: Option<f64>,
    #[schema(required = true)]
    pub lon: Option<f64>,
    pub raised_at: DateTime<Utc>,
    /// Rule-specific: `geofence`, `crossed_at`; `since`, `minutes`, `left_at`, `geofence_deleted`; `limit_mps`, `peak_mps`, `since`, `seconds`; `distance_m`, `limit_m`, `back_on_route_at`, `farthest_m`; `minutes`, `moving_again_at`; `last_position_at`, `reporting_again_at`; `eta`, `due_at`.
    #[schema(value_type = Object)]
    pub details: Value,
    /// When the condition ended (back on route, reporting again, moving again, the overspeed episode over, the vehicle out of the geofence it dwelt in).
    #[schema(required = true)]
    pub cleared_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub acknowledged_by: Option<i64>,
    #[serde(skip)]
    pub updated_seq: Option<i64>,
    #[serde(skip)]
    pub last_event: AlertEvent,
}

/// What happened to an alert: an event on its topics, and its `last_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AlertEvent {
    Raised,
    Cleared,
    Acknowledged,
}

impl AlertEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Raised => "raised",
            AlertEvent::Cleared => "cleared",
            AlertEvent::Acknowledged => "acknowledged",
        }
    }
}

/// The columns that make an [`Alert`].
pub const ALERT_COLUMNS: &str = "id, organisation_id, rule, vehicle_id, shipment_id, geofence_id, \
     position_at, ST_Y(point::geometry) AS lat, ST_X(point::geometry) AS lon, raised_at, details, \
     cleared_at, acknowledged_at, acknowledged_by, updated_seq, last_event";

/// A change of an alert (`event`: raised, cleared, acknowledged, …), with the alert as it was
/// after it: published on its organisation's `alerts` and its shipment's topic.
#[derive(Debug)]
pub struct AlertChange {
    pub event: AlertEvent,
    pub alert: Alert,
}

impl AlertChange {
    /// The change as an event at `seq`.
    pub fn at(seq: i64, event: AlertEvent, alert: Alert) -> Event {
        Event::new(seq, AlertChange { event, alert })
    }
}

impl EventData for AlertChange {
    fn kind(&self) -> &'static str {
        "alert"
    }

    fn keys(&self) -> Vec<TopicKey> {
        let mut keys = vec![TopicKey::Alerts {
            organisation_id: self.alert.organisation_id,
        }];
        keys.extend(self.alert.shipment_id.map(TopicKey::Shipment));
        keys
    }

    fn event(&self) -> Option<&str> {
        Some(self.event.as_str())
    }

    fn data(&self) -> serde_json::Result<Box<RawValue>> {
        to_raw_value(&self.alert)
    }
}

/// Alerts read back: each alert's raise (whose seq is its id) and its latest change.
pub struct AlertEvents;

impl EventSource for AlertEvents {
    fn events<'a>(
        &'a self,
        db: &'a PgPool,
        window: Window<'a>,
    ) -> BoxFuture<'a, sqlx::Result<Vec<Event>>> {
        Box::pin(async move {
            let organisations = window.ids(TopicKey::alerts);
            let shipments = window.ids(TopicKey::shipment);
            if organisations.is_empty() && shipments.is_empty() {
                return Ok(Vec::new());
            }
            let theirs = of_driver(6);
            let alerts: Vec<Alert> = sqlx::query_as(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts
                 WHERE ((id > $1 AND id <= $2) OR (updated_seq > $1 AND updated_seq <= $2))
                   AND (organisation_id = ANY($3) OR shipment_id = ANY($4)) AND {theirs}
                 ORDER BY id LIMIT $5"
            ))
            .bind(window.after)
            .bind(window.through)
            .bind(&organisations)
            .bind(&shipments)
            .bind(window.limit)
            .bind(window.driver)
            .fetch_all(db)
            .await?;
            Ok(alerts
                .into_iter()
                .flat_map(|alert| {
                    let raised = window
                        .holds(alert.id)
                        .then(|| AlertChange::at(alert.id, AlertEvent::Raised, alert.clone()));
                    let changed = alert
                        .updated_seq
                        .filter(|s| window.holds(*s))
                        .map(|seq| AlertChange::at(seq, alert.last_event, alert));
                    raised.into_iter().chain(changed)
                })
                .collect())
        })
    }
}

/// Where and for whom a raised alert happened.
pub struct Subject {
    pub organisation_id: i64,
    pub vehicle_id: i64,
    pub shipment_id: Option<i64>,
    /// The position that raised it: device time and place.
    pub position: Option<(DateTime<Utc>, f64, f64)>,
}

/// Stores `changes` (under the seq lock) and returns each stored event as (seq, event, alert),
/// in seq order. A raise the database refuses as a repeat (a shipment arrives and is late
/// once) and a clear of an alert cleared already store nothing and are left out.
pub async fn apply(
    conn: &mut PgConnection,
    changes: &[(Subject, Change)],
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<(i64, AlertEvent, Alert)>> {
    let mut raised = RaiseColumns::default();
    let (mut clear_id, mut clear_seq, mut clear_at, mut clear_details) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (subject, change) in changes {
        match change {
            Change::Raise {
                id,
                rule,
                geofence_id,
                details,
            } => raised.push(*id, subject, *rule, *geofence_id, details),
            Change::Clear {
                id,
                seq,
                at,
                details,
            } => {
                clear_id.push(*id);
                clear_seq.push(*seq);
                clear_at.push(*at);
                clear_details.push(details.to_string());
            }
        }
    }
    let mut out = Vec::new();
    if !raised.id.is_empty() {
        let rows: Vec<Alert> = sqlx::query_as(&format!(
            "INSERT INTO alerts (id, organisation_id, rule, vehicle_id, shipment_id, geofence_id,
                 position_at, point, raised_at, details)
             SELECT i, o, r, v, s, g, pa, ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography, $11,
                 d::jsonb
             FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
                 $6::bigint[], $7::timestamptz[], $8::float8[], $9::float8[], $10::text[])
                 AS t(i, o, r, v, s, g, pa, lat, lon, d)
             ON CONFLICT DO NOTHING
             RETURNING {ALERT_COLUMNS}"
        ))
        .bind(&raised.id)
        .bind(&raised.organisation)
        .bind(&raised.rule)
        .bind(&raised.vehicle)
        .bind(&raised.shipment)
        .bind(&raised.geofence)
        .bind(&raised.position_at)
        .bind(&raised.lat)
        .bind(&raised.lon)
        .bind(&raised.details)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        out.extend(rows.into_iter().map(|a| (a.id, AlertEvent::Raised, a)));
    }
    if !clear_id.is_empty() {
        let rows: Vec<Alert> = sqlx::query_as(&format!(
            "UPDATE alerts SET cleared_at = u.at, details = details || u.d::jsonb,
                 updated_seq = u.seq, last_event = 'cleared'
             FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[], $4::text[])
                 AS u(alert, seq, at, d)
             WHERE alerts.id = u.alert AND alerts.cleared_at IS NULL
             RETURNING {}",
            ALERT_COLUMNS.replace("id, organisation_id", "alerts.id, organisation_id")
        ))
        .bind(&clear_id)
        .bind(&clear_seq)
        .bind(&clear_at)
        .bind(&clear_details)
        .fetch_all(&mut *conn)
        .await?;
        out.extend(rows.into_iter().filter_map(|a| {
            let seq = a.updated_seq?;
            Some((seq, AlertEvent::Cleared, a))
        }));
    }
    out.sort_by_key(|(seq, _, _)| *seq);
    Ok(out)
}

/// Acknowledges alert `id` of `user`'s organisation as `user`, as event `seq`; none if it is
/// acknowledged already.
pub async fn acknowledge(
    conn: &mut PgConnection,
    id: i64,
    user: &CurrentUser,
    seq: i64,
) -> sqlx::Result<Option<Alert>> {
    sqlx::query_as(&format!(
        "UPDATE alerts SET acknowledged_at = now(), acknowledged_by = $3, updated_seq = $4,
             last_event = 'acknowledged'
         WHERE id = $1 AND organisation_id = $2 AND acknowledged_at IS NULL
         RETURNING {ALERT_COLUMNS}"
    ))
    .bind(id)
    .bind(user.organisation_id)
    .bind(user.id)
    .bind(seq)
    .fetch_optional(conn)
    .await
}

#[derive(Default)]
struct RaiseColumns {
    id: Vec<i64>,
    organisation: Vec<i64>,
    rule: Vec<Rule>,
    vehicle: Vec<i64>,
    shipment: Vec<Option<i64>>,
    geofence: Vec<Option<i64>>,
    position_at: Vec<Option<DateTime<Utc>>>,
    lat: Vec<Option<f64>>,
    lon: Vec<Option<f64>>,
    details: Vec<String>,
}

impl RaiseColumns {
    fn push(
        &mut self,
        id: i64,
        subject: &Subject,
        rule: Rule,
        geofence_id: Option<i64>,
        details: &Value,
    ) {
        self.id.push(id);
        self.organisation.push(subject.organisation_id);
        self.rule.push(rule);
        self.vehicle.push(subject.vehicle_id);
        self.shipment.push(subject.shipment_id);
        self.geofence.push(geofence_id);
        self.position_at.push(subject.position.map(|p| p.0));
        self.lat.push(subject.position.map(|p| p.1));
        self.lon.push(subject.position.map(|p| p.2));
        self.details.push(details.to_string());
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::tracking::{frames, Published};

    fn at() -> DateTime<Utc> {
        "2026-01-02T03:04:05Z".parse().unwrap()
    }

    fn texts(published: &[Published]) -> Vec<String> {
        published.iter().map(|p| p.frame.to_string()).collect()
    }

    #[test]
    fn an_alert_frame_names_its_event_before_the_data() {
        let alert = Alert {
            id: 5,
            organisation_id: 3,
            rule: Rule::Silent,
            vehicle_id: Some(7),
            shipment_id: None,
            geofence_id: None,
            position_at: None,
            lat: None,
            lon: None,
            raised_at: at(),
            details: json!({"minutes": 12}),
            cleared_at: Some(at()),
            acknowledged_at: None,
            acknowledged_by: None,
            updated_seq: Some(8),
            last_event: AlertEvent::Cleared,
        };
        let data = serde_json::to_string(&alert).unwrap();
        let published = frames(&AlertChange::at(8, AlertEvent::Cleared, alert), |_| true);
        assert_eq!(
            texts(&published),
            [format!(
                r#"{{"type":"alert","topic":"alerts","seq":8,"event":"cleared","data":{data}}}"#
            )]
        );
        assert_eq!(published[0].key, TopicKey::Alerts { organisation_id: 3 });
    }
}
