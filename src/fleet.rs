//! The fleet at a glance: every vehicle's current position as GeoJSON, the vehicles nearest a
//! point.
use axum::{extract::State, routing::get, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    auth::CurrentUser,
    error::{ApiQuery, AppError, AppResult},
    vehicles::Vehicle,
    AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/fleet", get(fleet))
        .route("/vehicles/nearby", get(nearby))
}

#[derive(Deserialize)]
struct FleetQuery {
    bbox: Option<String>,
}

/// `minLon,minLat,maxLon,maxLat`, each in range and min ≤ max.
fn parse_bbox(s: &str) -> AppResult<[f64; 4]> {
    let bad = || {
        AppError::validation(
            "bbox",
            "bbox must be minLon,minLat,maxLon,maxLat in degrees",
        )
    };
    let parts: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [min_lon, min_lat, max_lon, max_lat] = parts[..] else {
        return Err(bad());
    };
    let lon_ok = |v: f64| (-180.0..=180.0).contains(&v);
    let lat_ok = |v: f64| (-90.0..=90.0).contains(&v);
    if !(lon_ok(min_lon) && lon_ok(max_lon) && lat_ok(min_lat) && lat_ok(max_lat))
        || min_lon > max_lon
        || min_lat > max_lat
    {
        return Err(bad());
    }
    Ok([min_lon, min_lat, max_lon, max_lat])
}

async fn fleet(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> AppResult<Json<Value>> {
    user.require_dispatcher()?;
    let bbox = q.bbox.as_deref().map(parse_bbox).transpose()?;
    let rows: Vec<Vehicle> = sqlx::query_as(
        "SELECT id, name, speed_unit, created_at, last_position FROM vehicles
         WHERE organisation_id = $1 AND last_point IS NOT NULL
           AND ($2::float8 IS NULL OR last_point && ST_MakeEnvelope($2, $3, $4, $5, 4326)::geography)
         ORDER BY name, id",
    )
    .bind(user.organisation_id)
    .bind(bbox.map(|b| b[0]))
    .bind(bbox.map(|b| b[1]))
    .bind(bbox.map(|b| b[2]))
    .bind(bbox.map(|b| b[3]))
    .fetch_all(&state.db)
    .await?;
    let features: Vec<Value> = rows
        .into_iter()
        .filter_map(|v| {
            let p = v.last_position?;
            Some(json!({
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [p["lon"], p["lat"]]},
                "properties": {"vehicle_id": v.id, "name": v.name, "position": p},
            }))
        })
        .collect();
    Ok(Json(
        json!({"type": "FeatureCollection", "features": features}),
    ))
}

#[derive(Deserialize)]
struct NearbyQuery {
    lat: f64,
    lon: f64,
    radius_m: Option<f64>,
    limit: Option<i64>,
}

#[derive(Serialize, sqlx::FromRow)]
struct Near {
    #[sqlx(flatten)]
    vehicle: Vehicle,
    distance_m: f64,
}

async fn nearby(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<NearbyQuery>,
) -> AppResult<Json<Vec<Near>>> {
    user.require_dispatcher()?;
    if !(-90.0..=90.0).contains(&q.lat) {
        return Err(AppError::validation(
            "lat",
            "lat must be between -90 and 90",
        ));
    }
    if !(-180.0..=180.0).contains(&q.lon) {
        return Err(AppError::validation(
            "lon",
            "lon must be between -180 and 180",
        ));
    }
    let radius = q.radius_m.unwrap_or(10_000.0);
    if !(radius > 0.0 && radius <= 100_000.0) {
        return Err(AppError::validation(
            "radius_m",
            "radius_m must be between 0 and 100000",
        ));
    }
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(AppError::validation(
            "limit",
            "limit must be between 1 and 100",
        ));
    }
    // ST_DWithin uses the GiST index on last_point. The matches are ordered by their distance
    // rather than by the index's `<->`: PostGIS's geography index ordering fails near the poles
    // ("index returned tuples in wrong order"), and the radius keeps the sort small.
    let rows: Vec<Near> = sqlx::query_as(
        "SELECT id, name, speed_unit, created_at, last_position,
                ST_Distance(last_point, ref.p) AS distance_m
         FROM vehicles, (SELECT ST_SetSRID(ST_MakePoint($2, $3), 4326)::geography AS p) AS ref
         WHERE organisation_id = $1 AND ST_DWithin(last_point, ref.p, $4)
         ORDER BY distance_m, id LIMIT $5",
    )
    .bind(user.organisation_id)
    .bind(q.lon)
    .bind(q.lat)
    .bind(radius)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(rows))
}
