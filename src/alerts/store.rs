//! Alerts in PostGIS: the row, the frames they are published as, and the statements that raise,
//! clear and acknowledge them. Every change takes its seq under the `event_seq` lock in the
//! transaction that stores it, so the sequencer, the Redis fan-out and `since` replay carry
//! alerts exactly as they carry positions.
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

use super::{rules::Change, Rule};
use crate::tracking::{Published, TopicKey};

/// An alert as the API returns it and frames carry it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Alert {
    /// Also the seq of the event that raised it.
    pub id: i64,
    #[serde(skip)]
    pub organisation_id: i64,
    #[schema(value_type = Rule)]
    pub rule: String,
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
    pub last_event: String,
}

/// The columns that make an [`Alert`].
pub const ALERT_COLUMNS: &str = "id, organisation_id, rule, vehicle_id, shipment_id, geofence_id, \
     position_at, ST_Y(point::geometry) AS lat, ST_X(point::geometry) AS lon, raised_at, details, \
     cleared_at, acknowledged_at, acknowledged_by, updated_seq, last_event";

impl Alert {
    /// The topics an alert is published on: its organisation's `alerts` and its shipment's.
    pub fn keys(&self) -> Vec<TopicKey> {
        let mut keys = vec![TopicKey::Alerts {
            organisation_id: self.organisation_id,
        }];
        if let Some(s) = self.shipment_id {
            keys.push(TopicKey::Shipment(s));
        }
        keys
    }

    /// Its events with seq in `(after, through]`: the raise, and the latest change.
    pub fn events_in(&self, after: i64, through: i64) -> Vec<(i64, &str)> {
        let mut events = Vec::new();
        if self.id > after && self.id <= through {
            events.push((self.id, "raised"));
        }
        if let Some(seq) = self.updated_seq.filter(|s| *s > after && *s <= through) {
            events.push((seq, self.last_event.as_str()));
        }
        events
    }

    /// The frames of one of its events on the topics `wanted` keeps.
    pub fn frames(
        &self,
        seq: i64,
        event: &str,
        wanted: impl Fn(TopicKey) -> bool,
    ) -> Vec<Published> {
        let keys: Vec<TopicKey> = self.keys().into_iter().filter(|k| wanted(*k)).collect();
        if keys.is_empty() {
            return Vec::new();
        }
        let data = serde_json::to_string(self).expect("alerts serialise");
        keys.into_iter()
            .map(|key| Published {
                key,
                seq,
                conflate_vehicle: None,
                frame: alert_frame(&key.topic(), seq, event, &data).into(),
            })
            .collect()
    }
}

/// The event frame for an alert on a topic: the same bytes live and on replay.
pub fn alert_frame(topic: &impl std::fmt::Display, seq: i64, event: &str, data: &str) -> String {
    format!(r#"{{"type":"alert","topic":"{topic}","seq":{seq},"event":"{event}","data":{data}}}"#)
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
) -> sqlx::Result<Vec<(i64, &'static str, Alert)>> {
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
        out.extend(rows.into_iter().map(|a| (a.id, "raised", a)));
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
            Some((seq, "cleared", a))
        }));
    }
    out.sort_by_key(|(seq, _, _)| *seq);
    Ok(out)
}

#[derive(Default)]
struct RaiseColumns {
    id: Vec<i64>,
    organisation: Vec<i64>,
    rule: Vec<&'static str>,
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
        self.rule.push(rule.as_str());
        self.vehicle.push(subject.vehicle_id);
        self.shipment.push(subject.shipment_id);
        self.geofence.push(geofence_id);
        self.position_at.push(subject.position.map(|p| p.0));
        self.lat.push(subject.position.map(|p| p.1));
        self.lon.push(subject.position.map(|p| p.2));
        self.details.push(details.to_string());
    }
}
