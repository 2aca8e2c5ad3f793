//! A shipment's driven track: its accepted fixes as GeoJSON or GPX, simplified on request.
use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::load_visible;
use crate::{
    auth::Viewer,
    error::openapi::{BadRequest, CommonErrors, Forbidden, Id, NotFound},
    error::{ApiPath, ApiQuery, AppError, AppResult},
    fleet::openapi::{TrackFeatureCollection, TrackFormat},
    history::{
        export::gpx::{self, TrackPoint},
        path,
    },
    tracking::position::{PositionRow, POSITION_COLUMNS},
    AppState,
};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/shipments/{id}/track", get(track))
}

/// Most fixes one track answer holds.
const MAX_TRACK_POINTS: i64 = 200_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TrackQuery {
    /// Only points recorded at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Reply format.
    #[param(value_type = Option<TrackFormat>, inline, default = "geojson")]
    format: Option<String>,
    /// Douglas–Peucker tolerance in metres.
    #[param(minimum = 0, maximum = 100000)]
    simplify_m: Option<f64>,
}

#[utoipa::path(
    get,
    path = "/shipments/{id}/track",
    operation_id = "track",
    summary = "A shipment's track",
    description = "Dispatchers, admins, its driver, or its share link. Filtered points are left out.",
    tag = "shipments",
    params(Id, TrackQuery),
    responses(
        (status = 200, description = "The ordered track: GeoJSON (default) or GPX 1.1.", content(
            (TrackFeatureCollection = "application/json"),
            (String = "application/gpx+xml"),
        )),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = []), ("share" = [])),
)]
async fn track(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<TrackQuery>,
) -> AppResult<Response> {
    let shipment = load_visible(&state.db, &viewer, id).await?;
    let format = q.format.as_deref().unwrap_or("geojson");
    if format != "geojson" && format != "gpx" {
        return Err(AppError::validation(
            "format",
            "format must be geojson or gpx",
        ));
    }
    if q.simplify_m
        .is_some_and(|m| !m.is_finite() || !(0.0..=100_000.0).contains(&m))
    {
        return Err(AppError::validation(
            "simplify_m",
            "simplify_m must be between 0 and 100000",
        ));
    }
    let rows: Vec<PositionRow> = sqlx::query_as(&format!(
        "SELECT seq, {POSITION_COLUMNS} FROM positions
         WHERE shipment_id = $1 AND filter_reason IS NULL AND ($2::timestamptz IS NULL OR recorded_at >= $2)
         ORDER BY recorded_at LIMIT $3"
    ))
    .bind(id)
    .bind(q.since)
    .bind(MAX_TRACK_POINTS)
    .fetch_all(&state.db)
    .await?;
    let rows = match q.simplify_m {
        Some(m) if m > 0.0 => path::simplify(rows, m, |r| (r.position.lat, r.position.lon)),
        _ => rows,
    };
    if format == "gpx" {
        return Ok((
            [(header::CONTENT_TYPE, gpx::CONTENT_TYPE)],
            to_gpx(&shipment.reference, &rows),
        )
            .into_response());
    }
    let coordinates: Vec<[f64; 2]> = rows
        .iter()
        .map(|r| [r.position.lon, r.position.lat])
        .collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.position.recorded_at).collect();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    Ok(Json(json!({
        "type": "FeatureCollection",
        "features": [{
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": coordinates},
            "properties": {"shipment_id": id, "times": times, "seqs": seqs},
        }],
    }))
    .into_response())
}

fn to_gpx(name: &str, rows: &[PositionRow]) -> String {
    let points: Vec<TrackPoint> = rows
        .iter()
        .map(|r| {
            let p = &r.position;
            TrackPoint {
                recorded_at: p.recorded_at,
                lat: p.lat,
                lon: p.lon,
                altitude: p.altitude,
                speed: p.speed,
                heading: p.heading,
                accuracy: p.accuracy,
                battery: p.battery,
            }
        })
        .collect();
    gpx::document(name, &points)
}
