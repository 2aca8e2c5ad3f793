//! Geofences through the API: a GeoJSON polygon, or a circle as centre and radius; optionally
//! only for some vehicles or one shipment, with its own debounce and a dwell time. Every change
//! bumps the organisation's geofence version in the same transaction, which is how every
//! instance's index learns of it.
use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use super::fences::polygon_from_geojson;
use crate::{
    alerts::openapi::NewGeofence,
    auth::CurrentUser,
    error::openapi::{BadRequest, CommonErrors, Forbidden, Id, NotFound, UnsupportedMediaType},
    error::{ApiJson, ApiPath, AppError, AppResult},
    AppState,
};

const MAX_POSITIONS: usize = 10_000;
const MAX_NAME: usize = 200;
const MAX_VEHICLES: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/geofences", get(list).post(create))
        .route("/geofences/{id}", get(get_one).patch(update).delete(remove))
}

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Geofence {
    pub id: i64,
    pub name: String,
    /// GeoJSON Polygon (a circle's too, as drawn).
    #[schema(value_type = crate::alerts::openapi::Polygon)]
    pub area: Value,
    /// Centre and radius, for a circle.
    #[schema(value_type = Option<Circle>, required = true)]
    pub circle: Option<Value>,
    /// Empty: every vehicle.
    pub vehicle_ids: Vec<i64>,
    #[schema(required = true)]
    pub shipment_id: Option<i64>,
    /// Null: the organisation's `alerts.geofence_debounce_s`.
    #[schema(required = true)]
    pub debounce_s: Option<i32>,
    /// Seconds inside after which a visit raises `geofence_dwell`; null: never.
    #[schema(required = true)]
    pub dwell_s: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SELECT: &str = "SELECT id, name, ST_AsGeoJSON(area, 7)::jsonb AS area,
    CASE WHEN center IS NULL THEN NULL ELSE jsonb_build_object('lat', ST_Y(center::geometry),
        'lon', ST_X(center::geometry), 'radius_m', radius_m) END AS circle,
    vehicle_ids, shipment_id, debounce_s, dwell_s, created_at, updated_at FROM geofences";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Circle {
    #[schema(minimum = -90, maximum = 90)]
    lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    lon: f64,
    #[schema(minimum = 1, maximum = 100000)]
    radius_m: f64,
}

/// A create body, or (every field optional) a change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    as = GeofenceChange,
    description = "Any of the fields; `area` or `circle` replaces the shape (an `area` checked as on create)."
)]
pub(crate) struct Input {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(value_type = Option<crate::alerts::openapi::Polygon>)]
    area: Option<Value>,
    circle: Option<Circle>,
    #[schema(max_items = 1000)]
    vehicle_ids: Option<Vec<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    shipment_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(minimum = 0, maximum = 3600)]
    debounce_s: Option<Option<i32>>,
    /// Raise `geofence_dwell` once a visit has lasted this long; null: never.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(minimum = 60, maximum = 86400)]
    dwell_s: Option<Option<i32>>,
}

/// Tells a key set to `null` (`Some(None)`) from a key left out (`None`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The shape as PostGIS input: (polygon GeoJSON, or circle centre lon, lat and radius).
enum ShapeInput {
    Polygon(String),
    Circle(f64, f64, f64),
}

async fn check_shape(db: &PgPool, input: &Input) -> AppResult<Option<ShapeInput>> {
    match (&input.area, &input.circle) {
        (Some(_), Some(_)) => Err(AppError::validation(
            "area",
            "give either area or circle, not both",
        )),
        (Some(area), None) => {
            let polygon = check_polygon(area)?;
            check_valid(db, &polygon).await?;
            Ok(Some(ShapeInput::Polygon(polygon)))
        }
        (None, Some(c)) => {
            if !(-90.0..=90.0).contains(&c.lat) || !(-180.0..=180.0).contains(&c.lon) {
                return Err(AppError::validation(
                    "circle",
                    "circle must have lat in -90..90 and lon in -180..180",
                ));
            }
            if !(1.0..=100_000.0).contains(&c.radius_m) {
                return Err(AppError::validation(
                    "circle.radius_m",
                    "circle.radius_m must be 1 to 100000 metres",
                ));
            }
            Ok(Some(ShapeInput::Circle(c.lon, c.lat, c.radius_m)))
        }
        (None, None) => Ok(None),
    }
}

/// A GeoJSON Polygon of closed rings of at least four valid `[lon, lat]` positions, as GeoJSON
/// text.
fn check_polygon(area: &Value) -> AppResult<String> {
    let bad = |m: &str| AppError::validation("area", m);
    if area.get("type").and_then(Value::as_str) != Some("Polygon") {
        return Err(bad("area must be a GeoJSON Polygon"));
    }
    let rings = area
        .get("coordinates")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| bad("area needs coordinates: a list of rings"))?;
    let mut total = 0;
    for ring in rings {
        let points = ring
            .as_array()
            .ok_or_else(|| bad("each ring must be a list of positions"))?;
        total += points.len();
        if points.len() < 4 || total > MAX_POSITIONS {
            return Err(bad(
                "each ring needs at least 4 positions, and the area at most 10000",
            ));
        }
        let mut coords = Vec::with_capacity(points.len());
        for p in points {
            match (
                p.get(0).and_then(Value::as_f64),
                p.get(1).and_then(Value::as_f64),
            ) {
                (Some(lon), Some(lat))
                    if (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat) =>
                {
                    coords.push((lon, lat));
                }
                _ => return Err(bad("each position must be [lon, lat] in range")),
            }
        }
        if coords.first() != coords.last() {
            return Err(bad("each ring must end where it starts"));
        }
    }
    polygon_from_geojson(area).ok_or_else(|| bad("area is not a polygon"))?;
    Ok(json!({"type": "Polygon", "coordinates": rings}).to_string())
}

/// What PostGIS says of a polygon: whether it is valid, and if not why and where.
struct Validity {
    valid: bool,
    reason: Option<String>,
    lon: Option<f64>,
    lat: Option<f64>,
    area: f64,
}

/// Refuses a polygon that encloses no proper area: rings that cross themselves or each other
/// (a bow tie, a spike that doubles back), a hole outside its shell, or no area at all. PostGIS
/// would store it, but what is inside it would be anyone's guess. Judged in plain lon/lat, as
/// the geofence index judges positions.
async fn check_valid(db: &PgPool, geojson: &str) -> AppResult<()> {
    let v = sqlx::query_as!(
        Validity,
        r#"SELECT (d).valid AS "valid!", (d).reason, ST_X((d).location) AS lon,
             ST_Y((d).location) AS lat, ST_Area(g) AS "area!"
           FROM (SELECT ST_IsValidDetail(g) AS d, g
                 FROM (SELECT ST_GeomFromGeoJSON($1) AS g) AS input) AS checked"#,
        geojson
    )
    .fetch_one(db)
    .await?;
    let why = if !v.valid {
        let reason = v
            .reason
            .unwrap_or_else(|| "invalid".to_owned())
            .to_lowercase();
        match (v.lon, v.lat) {
            (Some(lon), Some(lat)) => format!("{reason} at [{lon}, {lat}]"),
            _ => reason,
        }
    } else if v.area <= 0.0 {
        "it encloses no area".to_owned()
    } else {
        return Ok(());
    };
    Err(AppError::validation(
        "area",
        format!("area is not a valid polygon: {why}"),
    ))
}

async fn check_fields(db: &PgPool, organisation_id: i64, input: &Input) -> AppResult<()> {
    if let Some(name) = &input.name {
        if name.trim().is_empty() || name.chars().count() > MAX_NAME {
            return Err(AppError::validation(
                "name",
                "name must be 1 to 200 characters",
            ));
        }
    }
    if let Some(Some(d)) = input.debounce_s {
        if !(0..=3600).contains(&d) {
            return Err(AppError::validation(
                "debounce_s",
                "debounce_s must be 0 to 3600 seconds, or null for the organisation's",
            ));
        }
    }
    if let Some(Some(d)) = input.dwell_s {
        if !(60..=86_400).contains(&d) {
            return Err(AppError::validation(
                "dwell_s",
                "dwell_s must be 60 to 86400 seconds, or null for no dwell alert",
            ));
        }
    }
    if let Some(ids) = &input.vehicle_ids {
        if ids.len() > MAX_VEHICLES {
            return Err(AppError::validation("vehicle_ids", "at most 1000 vehicles"));
        }
        let found = sqlx::query_scalar!(
            r#"SELECT count(*) AS "found!" FROM vehicles WHERE organisation_id = $1 AND id = ANY($2)"#,
            organisation_id,
            ids
        )
        .fetch_one(db)
        .await?;
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        if found != unique.len() as i64 {
            return Err(AppError::validation("vehicle_ids", "no such vehicle"));
        }
    }
    if let Some(Some(s)) = input.shipment_id {
        let ok = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM shipments WHERE id = $1 AND organisation_id = $2)
               AS "ok!""#,
            s,
            organisation_id
        )
        .fetch_one(db)
        .await?;
        if !ok {
            return Err(AppError::validation("shipment_id", "no such shipment"));
        }
    }
    Ok(())
}

async fn bump_version(conn: &mut PgConnection, organisation_id: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE organisations SET geofence_version = geofence_version + 1 WHERE id = $1",
        organisation_id
    )
    .execute(conn)
    .await
    .map(|_| ())
}

async fn fetch(db: &PgPool, organisation_id: i64, id: i64) -> AppResult<Geofence> {
    sqlx::query_as(&format!("{SELECT} WHERE organisation_id = $1 AND id = $2"))
        .bind(organisation_id)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(AppError::NotFound("geofence"))
}

/// Every geofence of the organisation, for the dispatcher's map.
#[utoipa::path(
    get,
    path = "/geofences",
    operation_id = "listGeofences",
    summary = "List geofences",
    description = "Dispatchers and admins.",
    tag = "alerts",
    responses(
        (status = 200, body = Vec<Geofence>, description = "Every geofence of the organisation."),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
)]
async fn list(State(state): State<AppState>, user: CurrentUser) -> AppResult<Json<Vec<Geofence>>> {
    user.require_dispatcher()?;
    let fences = sqlx::query_as(&format!(
        "{SELECT} WHERE organisation_id = $1 ORDER BY name, id LIMIT 20000"
    ))
    .bind(user.organisation_id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(fences))
}

#[utoipa::path(
    get,
    path = "/geofences/{id}",
    operation_id = "getGeofence",
    summary = "Get a geofence",
    tag = "alerts",
    params(Id),
    responses(
        (status = 200, body = Geofence, description = "The geofence."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
)]
async fn get_one(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<Geofence>> {
    user.require_dispatcher()?;
    Ok(Json(fetch(&state.db, user.organisation_id, id).await?))
}

/// The shape's columns (area, center, radius) from `$n`, `$n+1`, ... in an INSERT or UPDATE.
const AREA: &str = "CASE WHEN $2::text IS NOT NULL
        THEN ST_SetSRID(ST_GeomFromGeoJSON($2), 4326)::geography
        ELSE ST_Buffer(ST_SetSRID(ST_MakePoint($3, $4), 4326)::geography, $5, 'quad_segs=16')::geography END";
const CENTER: &str = "CASE WHEN $2::text IS NOT NULL THEN NULL
        ELSE ST_SetSRID(ST_MakePoint($3, $4), 4326)::geography END";
const RADIUS: &str = "CASE WHEN $2::text IS NOT NULL THEN NULL ELSE $5::float8 END";

fn shape_binds(shape: &ShapeInput) -> (Option<String>, Option<f64>, Option<f64>, Option<f64>) {
    match shape {
        ShapeInput::Polygon(g) => (Some(g.clone()), None, None, None),
        ShapeInput::Circle(lon, lat, r) => (None, Some(*lon), Some(*lat), Some(*r)),
    }
}

#[utoipa::path(
    post,
    path = "/geofences",
    operation_id = "createGeofence",
    summary = "Create a geofence",
    description = "Dispatchers and admins.",
    tag = "alerts",
    request_body = NewGeofence,
    responses(
        (status = 201, body = Geofence, description = "The geofence."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 415, response = UnsupportedMediaType),
        CommonErrors,
    ),
)]
async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AppResult<(StatusCode, Json<Geofence>)> {
    user.require_dispatcher()?;
    let name = input
        .name
        .as_deref()
        .ok_or_else(|| AppError::validation("name", "name is required"))?;
    let shape = check_shape(&state.db, &input)
        .await?
        .ok_or_else(|| AppError::validation("area", "give an area (Polygon) or a circle"))?;
    check_fields(&state.db, user.organisation_id, &input).await?;
    let (geojson, lon, lat, radius) = shape_binds(&shape);
    let mut tx = state.db.begin().await?;
    let id: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO geofences (organisation_id, area, center, radius_m, name, vehicle_ids,
             shipment_id, debounce_s, dwell_s)
         VALUES ($1, {AREA}, {CENTER}, {RADIUS}, $6, $7, $8, $9, $10) RETURNING id"
    ))
    .bind(user.organisation_id)
    .bind(geojson)
    .bind(lon)
    .bind(lat)
    .bind(radius)
    .bind(name.trim())
    .bind(input.vehicle_ids.clone().unwrap_or_default())
    .bind(input.shipment_id.flatten())
    .bind(input.debounce_s.flatten())
    .bind(input.dwell_s.flatten())
    .fetch_one(&mut *tx)
    .await?;
    bump_version(&mut tx, user.organisation_id).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(fetch(&state.db, user.organisation_id, id).await?),
    ))
}

#[utoipa::path(
    patch,
    path = "/geofences/{id}",
    operation_id = "updateGeofence",
    summary = "Change a geofence",
    tag = "alerts",
    params(Id),
    request_body = Input,
    responses(
        (status = 200, body = Geofence, description = "The changed geofence."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 415, response = UnsupportedMediaType),
        CommonErrors,
    ),
)]
async fn update(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(input): ApiJson<Input>,
) -> AppResult<Json<Geofence>> {
    user.require_dispatcher()?;
    fetch(&state.db, user.organisation_id, id).await?;
    let shape = check_shape(&state.db, &input).await?;
    check_fields(&state.db, user.organisation_id, &input).await?;
    let mut tx = state.db.begin().await?;
    if let Some(shape) = &shape {
        let (geojson, lon, lat, radius) = shape_binds(shape);
        sqlx::query(&format!(
            "UPDATE geofences SET area = {AREA}, center = {CENTER}, radius_m = {RADIUS}
             WHERE id = $1"
        ))
        .bind(id)
        .bind(geojson)
        .bind(lon)
        .bind(lat)
        .bind(radius)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query!(
        "UPDATE geofences SET name = COALESCE($2, name), vehicle_ids = COALESCE($3, vehicle_ids),
             shipment_id = CASE WHEN $4 THEN $5 ELSE shipment_id END,
             debounce_s = CASE WHEN $6 THEN $7 ELSE debounce_s END,
             dwell_s = CASE WHEN $8 THEN $9 ELSE dwell_s END, updated_at = now()
         WHERE id = $1",
        id,
        input.name.as_deref().map(str::trim),
        input.vehicle_ids.as_deref(),
        input.shipment_id.is_some(),
        input.shipment_id.flatten(),
        input.debounce_s.is_some(),
        input.debounce_s.flatten(),
        input.dwell_s.is_some(),
        input.dwell_s.flatten()
    )
    .execute(&mut *tx)
    .await?;
    bump_version(&mut tx, user.organisation_id).await?;
    tx.commit().await?;
    Ok(Json(fetch(&state.db, user.organisation_id, id).await?))
}

#[utoipa::path(
    delete,
    path = "/geofences/{id}",
    operation_id = "deleteGeofence",
    summary = "Delete a geofence",
    description = "A vehicle inside it is forgotten there without an exit alert.",
    tag = "alerts",
    params(Id),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
)]
async fn remove(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<StatusCode> {
    user.require_dispatcher()?;
    let mut tx = state.db.begin().await?;
    let done = sqlx::query!(
        "DELETE FROM geofences WHERE id = $1 AND organisation_id = $2",
        id,
        user.organisation_id
    )
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(AppError::NotFound("geofence"));
    }
    bump_version(&mut tx, user.organisation_id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
