//! The position: what a device reports, checked at the edge, and what Waymark stores and publishes.
//!
//! A [`NewPosition`] that exists has a latitude, longitude and time inside their ranges; the
//! writer and everything after it never see raw input.
use chrono::{DateTime, Duration, TimeZone, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{
    value::{to_raw_value, RawValue},
    Map, Value,
};
use sqlx::PgPool;

use super::{Event, EventData, EventSource, TopicKey, Window};
use crate::{
    auth::of_driver,
    error::{contains_nul, AppError},
};

/// Most extra attributes one position may carry.
pub const MAX_ATTRIBUTES: usize = 32;
/// How far ahead of the server clock a device time may be before it is nonsense.
pub const MAX_FUTURE: Duration = Duration::hours(24);
/// The largest accuracy or speed: they are stored as 4-byte floats, where more is infinite.
const FLOAT4_MAX: f64 = f32::MAX as f64;

/// Why the filter marked a position: its `filter_reason` (never current, never published).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum FilterReason {
    NullIsland,
    Future,
    /// Ahead of the server clock by more than its device's clock usually is.
    ClockAhead,
    Outdated,
    Inaccurate,
    Jump,
}

/// A vehicle's fix, when and where: its current position, which a new point is compared with,
/// or a neighbour in time of a late one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastFix {
    pub recorded_at: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
}

/// A device's position report, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPosition {
    pub lat: f64,
    pub lon: f64,
    pub recorded_at: DateTime<Utc>,
    pub accuracy: Option<f64>,
    /// m/s.
    pub speed: Option<f64>,
    /// Degrees clockwise from north.
    pub heading: Option<f64>,
    pub altitude: Option<f64>,
    /// Percent.
    pub battery: Option<f64>,
    /// Keys the native format does not define, kept as they came.
    pub attributes: Option<Map<String, Value>>,
}

/// A stored position as the API returns it and the hub publishes it. Speed in m/s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Position {
    pub vehicle_id: i64,
    #[schema(required = true)]
    pub shipment_id: Option<i64>,
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    pub lon: f64,
    pub recorded_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// Metres.
    #[schema(required = true, minimum = 0)]
    pub accuracy: Option<f32>,
    /// m/s.
    #[schema(required = true, minimum = 0)]
    pub speed: Option<f32>,
    /// Degrees clockwise from north.
    #[schema(required = true, minimum = 0, maximum = 360)]
    pub heading: Option<f32>,
    /// Metres.
    #[schema(required = true)]
    pub altitude: Option<f32>,
    /// Percent.
    #[schema(required = true, minimum = 0, maximum = 100)]
    pub battery: Option<f32>,
    /// True for a point older than the vehicle's newest: part of the track, never moves the
    /// marker.
    pub late: bool,
    /// The shipment's estimated arrival as of this position: on live frames and the current
    /// position of a vehicle in transit, not on points read back from the track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[sqlx(default)]
    #[schema(nullable = false)]
    pub eta: Option<DateTime<Utc>>,
}

fn earliest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap()
}

impl NewPosition {
    /// Checks a position of the native JSON format (`lat`, `lon` or `lng`, `recorded_at`, …).
    pub fn from_json(value: Value, now: DateTime<Utc>) -> Result<Self, AppError> {
        let Value::Object(mut obj) = value else {
            return Err(AppError::validation("", "a position must be a JSON object"));
        };
        let lat = take_number(&mut obj, "lat")?;
        if obj.contains_key("lon") && obj.contains_key("lng") {
            return Err(AppError::validation("lng", "give lon or lng, not both"));
        }
        let lon = match take_number(&mut obj, "lon")? {
            Some(lon) => Some(lon),
            None => take_number(&mut obj, "lng")?,
        };
        let lat = lat.ok_or_else(|| AppError::validation("lat", "lat is required"))?;
        let lon = lon.ok_or_else(|| AppError::validation("lon", "lon is required"))?;
        let recorded_at = match obj.remove("recorded_at") {
            None | Some(Value::Null) => now,
            Some(Value::String(s)) => parse_rfc3339(&s)?,
            Some(_) => {
                return Err(AppError::validation(
                    "recorded_at",
                    "recorded_at must be an RFC 3339 string",
                ))
            }
        };
        let position = NewPosition {
            lat,
            lon,
            recorded_at: to_micros(recorded_at),
            accuracy: take_number(&mut obj, "accuracy")?,
            speed: take_number(&mut obj, "speed")?,
            heading: take_number(&mut obj, "heading")?,
            altitude: take_number(&mut obj, "altitude")?,
            battery: take_number(&mut obj, "battery")?,
            attributes: (!obj.is_empty()).then_some(obj),
        };
        position.validate(now)?;
        Ok(position)
    }

    /// The range checks every ingest format shares.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), AppError> {
        if let Some(attributes) = &self.attributes {
            if attributes
                .iter()
                .any(|(k, v)| k.contains('\0') || contains_nul(v))
            {
                return Err(AppError::validation(
                    "attributes",
                    "attributes may not contain the NUL character",
                ));
            }
        }
        check_range("lat", self.lat, -90.0, 90.0)?;
        check_range("lon", self.lon, -180.0, 180.0)?;
        if let Some(v) = self.accuracy {
            check_range("accuracy", v, 0.0, FLOAT4_MAX)?;
        }
        if let Some(v) = self.speed {
            check_range("speed", v, 0.0, FLOAT4_MAX)?;
        }
        if let Some(v) = self.heading {
            check_range("heading", v, 0.0, 360.0)?;
        }
        if let Some(v) = self.altitude {
            check_range("altitude", v, -20_000.0, 100_000.0)?;
        }
        if let Some(v) = self.battery {
            check_range("battery", v, 0.0, 100.0)?;
        }
        if self.recorded_at < earliest() {
            return Err(AppError::validation(
                "recorded_at",
                "recorded_at is before 2000-01-01",
            ));
        }
        if self.recorded_at > now + MAX_FUTURE {
            return Err(AppError::validation(
                "recorded_at",
                "recorded_at is more than 24 h ahead of the server clock",
            ));
        }
        if let Some(attrs) = &self.attributes {
            if attrs.len() > MAX_ATTRIBUTES {
                return Err(AppError::validation(
                    "attributes",
                    format!("at most {MAX_ATTRIBUTES} extra attributes are kept"),
                ));
            }
        }
        Ok(())
    }
}

/// PostgreSQL keeps microseconds: trimming at the edge makes the time a device sent, the one
/// stored and the one published the same value, which duplicate detection relies on. A leap
/// second (`:60`, which chrono reads at any minute) becomes the next second's start, as
/// PostgreSQL stores it; published as `:60` it would differ, and browsers cannot parse it.
pub fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, AppError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            AppError::validation(
                "recorded_at",
                "recorded_at must be an RFC 3339 time such as 2026-01-31T12:00:00Z",
            )
        })
}

fn take_number(obj: &mut Map<String, Value>, field: &str) -> Result<Option<f64>, AppError> {
    number_field(obj.remove(field).as_ref(), field)
}

/// A JSON value that must be a finite number if present; errors name `field`.
pub fn number_field(value: Option<&Value>, field: &str) -> Result<Option<f64>, AppError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| AppError::validation(field, format!("{field} must be a finite number"))),
        Some(_) => Err(AppError::validation(
            field,
            format!("{field} must be a number"),
        )),
    }
}

fn check_range(field: &str, v: f64, min: f64, max: f64) -> Result<(), AppError> {
    if !v.is_finite() {
        return Err(AppError::validation(
            field,
            format!("{field} must be a finite number"),
        ));
    }
    if v < min || v > max {
        let message = if max == FLOAT4_MAX {
            if v < min {
                format!("{field} must not be negative")
            } else {
                format!("{field} is too large")
            }
        } else {
            format!("{field} must be between {min} and {max}")
        };
        return Err(AppError::validation(field, message));
    }
    Ok(())
}

/// The columns that make a [`PositionRow`] (after `seq`), for every query that reads positions.
pub const POSITION_COLUMNS: &str = "vehicle_id, shipment_id, ST_Y(point::geometry) AS lat, \
     ST_X(point::geometry) AS lon, recorded_at, received_at, accuracy, speed, heading, altitude, \
     battery, late";

/// A row of the positions table, as `seq` and [`POSITION_COLUMNS`] read it.
#[derive(Debug, sqlx::FromRow)]
pub struct PositionRow {
    pub seq: i64,
    #[sqlx(flatten)]
    pub position: Position,
}

/// A stored position, published: on its organisation's `fleet`, its `vehicle:{id}` and its
/// `shipment:{id}` if it has one.
#[derive(Debug)]
pub struct PositionEvent {
    pub organisation_id: i64,
    pub position: Position,
}

impl EventData for PositionEvent {
    fn kind(&self) -> &'static str {
        "position"
    }

    fn keys(&self) -> Vec<TopicKey> {
        let mut keys = vec![
            TopicKey::Fleet {
                organisation_id: self.organisation_id,
            },
            TopicKey::Vehicle(self.position.vehicle_id),
        ];
        keys.extend(self.position.shipment_id.map(TopicKey::Shipment));
        keys
    }

    /// Current positions are conflated; late points fill in tracks and must all arrive.
    fn conflate_vehicle(&self) -> Option<i64> {
        (!self.position.late).then_some(self.position.vehicle_id)
    }

    fn data(&self) -> serde_json::Result<Box<RawValue>> {
        to_raw_value(&self.position)
    }
}

/// Published positions read back: never filtered ones.
pub struct PositionEvents;

#[derive(sqlx::FromRow)]
struct OwnedRow {
    organisation_id: i64,
    #[sqlx(flatten)]
    row: PositionRow,
}

impl EventSource for PositionEvents {
    fn events<'a>(
        &'a self,
        db: &'a PgPool,
        window: Window<'a>,
    ) -> BoxFuture<'a, sqlx::Result<Vec<Event>>> {
        Box::pin(async move {
            let organisations = window.ids(TopicKey::fleet);
            let vehicles = window.ids(TopicKey::vehicle);
            let shipments = window.ids(TopicKey::shipment);
            if organisations.is_empty() && vehicles.is_empty() && shipments.is_empty() {
                return Ok(Vec::new());
            }
            let theirs = of_driver(7);
            let rows: Vec<OwnedRow> = sqlx::query_as(&format!(
                "SELECT organisation_id, seq, {POSITION_COLUMNS} FROM positions
                 WHERE seq > $1 AND seq <= $2 AND filter_reason IS NULL
                   AND (organisation_id = ANY($3) OR vehicle_id = ANY($4) OR shipment_id = ANY($5))
                   AND {theirs}
                 ORDER BY seq LIMIT $6"
            ))
            .bind(window.after)
            .bind(window.through)
            .bind(&organisations)
            .bind(&vehicles)
            .bind(&shipments)
            .bind(window.limit)
            .bind(window.driver)
            .fetch_all(db)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let data = PositionEvent {
                        organisation_id: r.organisation_id,
                        position: r.row.position,
                    };
                    Event::new(r.row.seq, data)
                })
                .collect())
        })
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl NewPosition {
    /// What every accepted position guarantees; panics naming the position otherwise. For the
    /// fuzz targets and the parsers' property tests.
    pub fn assert_in_range(&self) {
        let p = self;
        let now = Utc::now();
        assert!(
            p.lat.is_finite() && (-90.0..=90.0).contains(&p.lat),
            "{p:?}"
        );
        assert!(
            p.lon.is_finite() && (-180.0..=180.0).contains(&p.lon),
            "{p:?}"
        );
        assert!(
            p.recorded_at <= now + MAX_FUTURE + Duration::minutes(1),
            "{p:?}"
        );
        assert!(p.recorded_at.timestamp() >= 946_684_800, "{p:?}");
        // PostgreSQL keeps microseconds since an epoch: the stored time is the accepted one.
        assert_eq!(
            DateTime::from_timestamp_micros(p.recorded_at.timestamp_micros()),
            Some(p.recorded_at),
            "{p:?}"
        );
        for (v, lo, hi) in [
            (p.accuracy, 0.0, f64::MAX),
            (p.speed, 0.0, f64::MAX),
            (p.heading, 0.0, 360.0),
            (p.altitude, -20_000.0, 100_000.0),
            (p.battery, 0.0, 100.0),
        ] {
            if let Some(v) = v {
                assert!(v.is_finite() && v >= lo && v <= hi, "{p:?}");
                // These are stored as 4-byte floats.
                assert!((v as f32).is_finite(), "{p:?}");
            }
        }
        if let Some(attributes) = &p.attributes {
            assert!(attributes.len() <= MAX_ATTRIBUTES, "{p:?}");
            // PostgreSQL's jsonb cannot store U+0000.
            let nul = attributes
                .iter()
                .any(|(k, v)| k.contains('\0') || contains_nul(v));
            assert!(!nul, "{p:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_lng_alias_and_keeps_unknown_keys() {
        let now = Utc::now();
        for both in [
            json!({"lat": 1.5, "lon": 2.5, "lng": 181}),
            json!({"lat": 1.5, "lon": null, "lng": 2.5}),
        ] {
            let refused = NewPosition::from_json(both, now).unwrap_err();
            assert_eq!(refused.field(), Some("lng"), "one longitude only");
        }
        let p = NewPosition::from_json(json!({"lat": 1.5, "lng": 2.5, "fix": "3d"}), now).unwrap();
        assert_eq!((p.lat, p.lon, p.recorded_at), (1.5, 2.5, to_micros(now)));
        assert_eq!(p.attributes.unwrap()["fix"], "3d");
    }

    #[test]
    fn names_the_field_that_is_out_of_range() {
        let now = Utc::now();
        let cases = [
            (json!({"lat": 91, "lon": 0}), "lat"),
            (json!({"lat": 0, "lon": -180.5}), "lon"),
            (json!({"lat": 0, "lon": 0, "accuracy": -1}), "accuracy"),
            (json!({"lat": 0, "lon": 0, "speed": -0.1}), "speed"),
            (json!({"lat": 0, "lon": 0, "speed": 1e39}), "speed"),
            (json!({"lat": 0, "lon": 0, "accuracy": 3.5e38}), "accuracy"),
            (json!({"lat": 0, "lon": 0, "heading": 361}), "heading"),
            (json!({"lat": 0, "lon": 0, "battery": 101}), "battery"),
            (json!({"lat": "1", "lon": 0}), "lat"),
            (json!({"lon": 0}), "lat"),
            (json!({"lat": 0}), "lon"),
            (
                json!({"lat": 0, "lon": 0, "recorded_at": "yesterday"}),
                "recorded_at",
            ),
            (
                json!({"lat": 0, "lon": 0, "recorded_at": "1999-12-31T23:59:59Z"}),
                "recorded_at",
            ),
        ];
        for (input, field) in cases {
            let err = NewPosition::from_json(input.clone(), now).unwrap_err();
            assert_eq!(
                err.field().expect("a validation error"),
                field,
                "input {input}"
            );
        }
    }

    #[test]
    fn a_leap_second_is_stored_and_published_as_the_next_second() {
        let now = Utc::now();
        let at =
            |s: &str| NewPosition::from_json(json!({"lat": 0, "lon": 0, "recorded_at": s}), now);
        let leap = at("2016-12-31T23:59:60.25Z").unwrap().recorded_at;
        assert_eq!(leap, at("2017-01-01T00:00:00.25Z").unwrap().recorded_at);
        assert_eq!(leap.to_rfc3339(), "2017-01-01T00:00:00.250+00:00");
        let any_minute = at("2025-06-15T13:45:60Z").unwrap().recorded_at;
        assert_eq!(any_minute.to_rfc3339(), "2025-06-15T13:46:00+00:00");
        // Below a microsecond is trimmed, as before.
        let trimmed = at("2025-06-15T13:45:12.123456789Z").unwrap().recorded_at;
        assert_eq!(trimmed.to_rfc3339(), "2025-06-15T13:45:12.123456+00:00");
    }

    #[test]
    fn rejects_times_more_than_a_day_ahead() {
        let now = Utc::now();
        let ahead = (now + Duration::hours(25)).to_rfc3339();
        let err = NewPosition::from_json(json!({"lat": 0, "lon": 0, "recorded_at": ahead}), now)
            .unwrap_err();
        assert_eq!(err.field().expect("a validation error"), "recorded_at");
        let fine = (now + Duration::hours(23)).to_rfc3339();
        assert!(
            NewPosition::from_json(json!({"lat": 0, "lon": 0, "recorded_at": fine}), now).is_ok()
        );
    }
}
