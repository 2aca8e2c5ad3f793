//! A vehicle's history for the map: its trips, stops and alerts over a time range.
//!
//! Closed trips are read from `segments` alone (their tracks stored simplified to 2 m), clipped
//! to the range and simplified again to the tolerance the map asks for (about a screen pixel at
//! its zoom), so a day of 1 Hz fixes answers in milliseconds and in a small body. Only the trip
//! going on now, which has no stored track yet, is read from the positions log (accepted fixes
//! only), as is a closed trip whose track was never stored.
use axum::{extract::State, routing::get, Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{
    detect::Kind,
    path::{self, Vertex},
    OVERLAPPING,
};
use crate::{
    alerts::Rule,
    auth::CurrentUser,
    error::openapi::{BadRequest, CommonErrors, Forbidden, Id, NotFound},
    error::{ApiPath, ApiQuery, AppError, AppResult},
    AppState,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/vehicles/{id}/history", get(history))
}

/// The longest range one answer covers.
const MAX_RANGE_DAYS: i64 = 31;
const MAX_TOLERANCE_M: f64 = 10_000.0;
/// Most alerts one answer pins.
const MAX_ALERTS: i64 = 1_000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Start of the range (RFC 3339).
    from: DateTime<Utc>,
    /// End of the range (RFC 3339): after `from`, at most 31 days later.
    to: DateTime<Utc>,
    /// How far (in metres) a track may stray from the fixes it stands for: the page asks for
    /// about the size of a screen pixel at its zoom. 0 and 2 give the track as stored (the trip
    /// going on now, every fix with 0).
    #[param(minimum = 0, maximum = 10000, default = 2)]
    tolerance_m: Option<f64>,
}

/// A vehicle's trips, stops and alerts over a time range.
#[derive(Serialize, ToSchema)]
pub struct History {
    vehicle: VehicleName,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// The tolerance the tracks were simplified to, in metres.
    tolerance_m: f64,
    /// Trips and stops that overlap the range, in time order.
    segments: Vec<HistorySegment>,
    /// Alerts of the vehicle in the range (by the time of the fix that raised them, else when
    /// raised), in time order; at most 1000.
    alerts: Vec<HistoryAlert>,
}

#[derive(Serialize, ToSchema)]
struct VehicleName {
    id: i64,
    name: String,
}

/// A trip or a stop, by `kind`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum HistorySegment {
    Trip(HistoryTrip),
    Stop(HistoryStop),
}

/// The vehicle on the move.
#[derive(Serialize, ToSchema)]
struct HistoryTrip {
    /// Its first fix.
    started_at: DateTime<Utc>,
    /// Its last fix (so far, while in progress).
    ended_at: DateTime<Utc>,
    /// The trip going on now: it may still grow.
    in_progress: bool,
    distance_m: f64,
    max_speed_mps: f32,
    /// Its track within the range.
    path: PathArrays,
}

/// The vehicle staying in one place.
#[derive(Serialize, ToSchema)]
struct HistoryStop {
    /// Where it stopped.
    place: Place,
    arrival: DateTime<Utc>,
    /// Null while it is still there.
    #[schema(required = true)]
    departure: Option<DateTime<Utc>>,
    /// From arrival to departure (or to its last fix, while it is still there).
    duration_s: i64,
    /// The stop going on now.
    in_progress: bool,
}

/// A track as parallel arrays, one entry per vertex, in time order: latitude and longitude
/// (rounded to 6 decimals, about 10 cm), time in milliseconds since the epoch, and speed in m/s
/// (null where the device reported none).
#[derive(Default, Serialize, ToSchema)]
struct PathArrays {
    lat: Vec<f64>,
    lon: Vec<f64>,
    t: Vec<i64>,
    speed: Vec<Option<f32>>,
}

#[derive(Serialize, ToSchema)]
struct Place {
    lat: f64,
    lon: f64,
}

/// An alert, pinned where and when it was raised.
#[derive(Serialize, ToSchema)]
struct HistoryAlert {
    id: i64,
    rule: Rule,
    /// The time of the fix that raised it, or (for an alert raised by the clock) when raised.
    at: DateTime<Utc>,
    /// Where the fix that raised it was; null for an alert raised by the clock.
    #[schema(required = true)]
    place: Option<Place>,
    #[schema(required = true)]
    geofence_id: Option<i64>,
    /// What the rule says about it (as in the alerts API).
    #[schema(value_type = Object)]
    details: Value,
}

#[utoipa::path(
    get,
    path = "/vehicles/{id}/history",
    operation_id = "vehicleHistory",
    summary = "A vehicle's trips, stops and alerts over a time range (dispatcher)",
    description = "Dispatchers and admins. Trips carry their track, clipped to the range and simplified to `tolerance_m`, as parallel arrays; the trip or stop going on now has `in_progress`. `400` for a range that is empty, reversed or longer than 31 days, or a tolerance outside 0 to 10000.",
    tag = "vehicles",
    params(Id, HistoryQuery),
    responses(
        (status = 200, body = History, description = "The vehicle's history in the range."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn history(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> AppResult<Json<History>> {
    user.require_dispatcher()?;
    let tolerance_m = q.tolerance_m.unwrap_or(path::STORED_TOLERANCE_M);
    if !tolerance_m.is_finite() || !(0.0..=MAX_TOLERANCE_M).contains(&tolerance_m) {
        return Err(AppError::validation(
            "tolerance_m",
            "tolerance_m must be 0 to 10000 metres",
        ));
    }
    if q.to <= q.from {
        return Err(AppError::validation("to", "to must be after from"));
    }
    if q.to - q.from > Duration::days(MAX_RANGE_DAYS) {
        return Err(AppError::validation(
            "to",
            "the range may be at most 31 days long",
        ));
    }
    let name: String =
        sqlx::query_scalar("SELECT name FROM vehicles WHERE id = $1 AND organisation_id = $2")
            .bind(id)
            .bind(user.organisation_id)
            .fetch_optional(&state.db)
            .await?
            .ok_or(AppError::NotFound("vehicle"))?;
    let range = Range {
        from: q.from,
        to: q.to,
        tolerance_m,
    };
    let rows = segment_rows(&state.db, user.organisation_id, id, &range).await?;
    let mut segments = Vec::with_capacity(rows.len());
    for row in rows {
        segments.push(match row.kind {
            Kind::Trip => HistorySegment::Trip(trip(&state.db, id, row, &range).await?),
            Kind::Stop => HistorySegment::Stop(HistoryStop {
                place: place(row.start_lat, row.start_lon),
                arrival: row.started_at,
                departure: row.closed.then_some(row.ended_at),
                duration_s: (row.ended_at - row.started_at).num_seconds(),
                in_progress: !row.closed,
            }),
        });
    }
    let alerts = alerts(&state.db, user.organisation_id, id, &range).await?;
    Ok(Json(History {
        vehicle: VehicleName { id, name },
        from: q.from,
        to: q.to,
        tolerance_m,
        segments,
        alerts,
    }))
}

struct Range {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tolerance_m: f64,
}

#[derive(sqlx::FromRow)]
struct SegmentRow {
    kind: Kind,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    closed: bool,
    start_lat: f64,
    start_lon: f64,
    distance_m: f64,
    max_speed_mps: f32,
    path: Option<Vec<u8>>,
}

/// The vehicle's segments overlapping the range ([`OVERLAPPING`]).
async fn segment_rows(
    db: &sqlx::PgPool,
    organisation_id: i64,
    vehicle_id: i64,
    range: &Range,
) -> sqlx::Result<Vec<SegmentRow>> {
    const COLUMNS: &str = "kind, started_at, ended_at, closed,
        ST_Y(start_point::geometry) AS start_lat, ST_X(start_point::geometry) AS start_lon,
        distance_m, max_speed_mps, path";
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM ({OVERLAPPING}) s ORDER BY started_at"
    ))
    .bind(organisation_id)
    .bind([vehicle_id])
    .bind(range.from)
    .bind(range.to)
    .fetch_all(db)
    .await
}

/// A trip with its track in the range: the stored one if there is one, else its accepted fixes
/// (the trip going on now reaches up to the range's end: fixes not yet segmented belong to it).
async fn trip(
    db: &sqlx::PgPool,
    vehicle_id: i64,
    row: SegmentRow,
    range: &Range,
) -> sqlx::Result<HistoryTrip> {
    let vertices = match (&row.path, row.closed) {
        (Some(stored), true) => {
            let clipped = clip(&path::decode(row.started_at, stored), range);
            if range.tolerance_m > path::STORED_TOLERANCE_M {
                path::simplify(clipped, range.tolerance_m, |v| (v.lat, v.lon))
            } else {
                clipped
            }
        }
        _ => {
            let until = if row.closed {
                row.ended_at.min(range.to)
            } else {
                range.to
            };
            let fixes: Vec<path::FixRow> = sqlx::query_as(&format!(
                "SELECT {} FROM positions
                 WHERE vehicle_id = $1 AND recorded_at >= $2 AND recorded_at <= $3
                   AND filter_reason IS NULL
                 ORDER BY recorded_at",
                path::FIX_COLUMNS
            ))
            .bind(vehicle_id)
            .bind(row.started_at.max(range.from))
            .bind(until)
            .fetch_all(db)
            .await?;
            let vertices: Vec<Vertex> = fixes.into_iter().map(Vertex::from).collect();
            path::simplify(vertices, range.tolerance_m, |v| (v.lat, v.lon))
        }
    };
    let ended_at = match vertices.last() {
        Some(last) if !row.closed => row.ended_at.max(last.at),
        _ => row.ended_at,
    };
    Ok(HistoryTrip {
        started_at: row.started_at,
        ended_at,
        in_progress: !row.closed,
        distance_m: row.distance_m,
        max_speed_mps: row.max_speed_mps,
        path: arrays(&vertices),
    })
}

/// The part of a track within the range, with a vertex placed on it where it crosses either end.
fn clip(vertices: &[Vertex], range: &Range) -> Vec<Vertex> {
    let start = vertices.partition_point(|v| v.at < range.from);
    let end = vertices.partition_point(|v| v.at <= range.to).max(start);
    let mut out = Vec::with_capacity(end - start + 2);
    if start > 0 && start < vertices.len() && vertices[start].at > range.from {
        out.push(between(&vertices[start - 1], &vertices[start], range.from));
    }
    out.extend_from_slice(&vertices[start..end]);
    if end > 0 && end < vertices.len() && vertices[end - 1].at < range.to {
        out.push(between(&vertices[end - 1], &vertices[end], range.to));
    }
    out
}

/// Where the track between `a` and `b` was at `at` (between their times), as a straight line.
fn between(a: &Vertex, b: &Vertex, at: DateTime<Utc>) -> Vertex {
    let span = (b.at - a.at).num_milliseconds() as f64;
    let f = if span > 0.0 {
        (at - a.at).num_milliseconds() as f64 / span
    } else {
        0.0
    };
    let speed = match (a.speed, b.speed) {
        (Some(x), Some(y)) => Some(x + (y - x) * f as f32),
        (x, y) => x.or(y),
    };
    Vertex {
        at,
        lat: a.lat + (b.lat - a.lat) * f,
        lon: a.lon + (b.lon - a.lon) * f,
        speed,
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn place(lat: f64, lon: f64) -> Place {
    Place {
        lat: round6(lat),
        lon: round6(lon),
    }
}

fn arrays(vertices: &[Vertex]) -> PathArrays {
    PathArrays {
        lat: vertices.iter().map(|v| round6(v.lat)).collect(),
        lon: vertices.iter().map(|v| round6(v.lon)).collect(),
        t: vertices.iter().map(|v| v.at.timestamp_millis()).collect(),
        speed: vertices
            .iter()
            .map(|v| v.speed.map(|s| (s * 100.0).round() / 100.0))
            .collect(),
    }
}

#[derive(sqlx::FromRow)]
struct AlertRow {
    id: i64,
    rule: Rule,
    at: DateTime<Utc>,
    lat: Option<f64>,
    lon: Option<f64>,
    geofence_id: Option<i64>,
    details: Value,
}

async fn alerts(
    db: &sqlx::PgPool,
    organisation_id: i64,
    vehicle_id: i64,
    range: &Range,
) -> sqlx::Result<Vec<HistoryAlert>> {
    let rows: Vec<AlertRow> = sqlx::query_as(
        "SELECT id, rule, COALESCE(position_at, raised_at) AS at,
                ST_Y(point::geometry) AS lat, ST_X(point::geometry) AS lon, geofence_id, details
         FROM alerts
         WHERE vehicle_id = $1 AND organisation_id = $2
           AND COALESCE(position_at, raised_at) BETWEEN $3 AND $4
         ORDER BY 3, id LIMIT $5",
    )
    .bind(vehicle_id)
    .bind(organisation_id)
    .bind(range.from)
    .bind(range.to)
    .bind(MAX_ALERTS)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| HistoryAlert {
            id: r.id,
            rule: r.rule,
            at: r.at,
            place: r.lat.zip(r.lon).map(|(lat, lon)| place(lat, lon)),
            geofence_id: r.geofence_id,
            details: r.details,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn line(n: i64) -> Vec<Vertex> {
        (0..n)
            .map(|i| Vertex {
                at: at(i * 10),
                lat: 48.0 + i as f64 * 0.001,
                lon: 11.0,
                speed: Some(i as f32),
            })
            .collect()
    }

    #[test]
    fn clipping_places_a_vertex_where_the_track_crosses_each_end() {
        let track = line(10);
        let range = Range {
            from: at(15),
            to: at(42),
            tolerance_m: 0.0,
        };
        let clipped = clip(&track, &range);
        let times: Vec<_> = clipped.iter().map(|v| v.at).collect();
        assert_eq!(times, [at(15), at(20), at(30), at(40), at(42)]);
        assert!((clipped[0].lat - 48.0015).abs() < 1e-9);
        assert_eq!(clipped[0].speed, Some(1.5));

        // A range inside one stretch between two vertices is that stretch's part.
        let inside = clip(
            &track,
            &Range {
                from: at(11),
                to: at(12),
                tolerance_m: 0.0,
            },
        );
        assert_eq!(
            inside.iter().map(|v| v.at).collect::<Vec<_>>(),
            [at(11), at(12)]
        );
        // A range covering the track keeps it whole, and one ending on a vertex adds none.
        let whole = Range {
            from: at(-100),
            to: at(90),
            tolerance_m: 0.0,
        };
        assert_eq!(clip(&track, &whole), track);
    }
}
