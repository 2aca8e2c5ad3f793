//! Shipments: a vehicle's trip from origin to destination, its driven track, and the share links
//! that let a customer follow it.
use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use chrono::{DateTime, Duration, Utc};
use geo::{Coord, LineString, SimplifyIdx};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::{token, CurrentUser, Revoked, Role, Viewer},
    error::{from_json, ApiJson, ApiPath, ApiQuery, AppError, AppResult},
    openapi::{
        responses::{
            BadRequest, Conflict, Forbidden, Internal, NotFound, TooLarge, Unauthorized,
            Unavailable, UnsupportedMediaType,
        },
        schemas::{self, Id, Share, ShipmentStatus, TrackFeatureCollection, TrackFormat},
    },
    position::{Position, PositionRow, POSITION_COLUMNS},
    tracking::lock_seq,
    AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/shipments", get(list).post(create))
        .route("/shipments/{id}", get(get_one).patch(update))
        .route("/shipments/{id}/track", get(track))
        .route("/shipments/{id}/share", post(share))
        .route("/shares/{token}", delete(revoke_share))
}

pub const STATUSES: [&str; 5] = ["planned", "in_transit", "arrived", "delivered", "cancelled"];
const MAX_ROUTE_POINTS: usize = 10_000;
const MAX_TRACK_POINTS: i64 = 200_000;
/// Share links carry 144 random bits.
const SHARE_TOKEN_BYTES: usize = 18;

#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq)]
pub struct Place {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Shipment {
    pub id: i64,
    pub reference: String,
    #[schema(value_type = ShipmentStatus)]
    pub status: String,
    #[schema(value_type = PlaceInput)]
    pub origin: Value,
    #[schema(value_type = PlaceInput)]
    pub destination: Value,
    #[schema(value_type = Option<schemas::LineString>, required = true)]
    pub planned_route: Option<Value>,
    #[schema(required = true)]
    pub vehicle_id: Option<i64>,
    #[schema(required = true)]
    pub driver_id: Option<i64>,
    #[schema(required = true)]
    pub due_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub eta: Option<DateTime<Utc>>,
    /// How the latest ETA was made, while the shipment is planned or in transit on its vehicle.
    #[schema(value_type = Option<crate::alerts::eta::Basis>, required = true)]
    pub eta_basis: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When its first fix was taken (or a dispatcher set it in transit).
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it arrived, was delivered or was cancelled: later fixes are not its own.
    #[schema(required = true)]
    pub ended_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub last_position: Option<Position>,
}

#[derive(sqlx::FromRow)]
struct ShipmentRow {
    id: i64,
    organisation_id: i64,
    reference: String,
    status: String,
    origin_lat: f64,
    origin_lon: f64,
    origin_name: Option<String>,
    destination_lat: f64,
    destination_lon: f64,
    destination_name: Option<String>,
    planned_route: Option<Value>,
    vehicle_id: Option<i64>,
    driver_id: Option<i64>,
    due_at: Option<DateTime<Utc>>,
    eta: Option<DateTime<Utc>>,
    eta_basis: Option<Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
}

const SHIPMENT_SELECT: &str = "SELECT id, organisation_id, reference, status,
    ST_Y(origin::geometry) AS origin_lat, ST_X(origin::geometry) AS origin_lon, origin_name,
    ST_Y(destination::geometry) AS destination_lat, ST_X(destination::geometry) AS destination_lon,
    destination_name, ST_AsGeoJSON(planned_route)::jsonb AS planned_route, vehicle_id, driver_id,
    due_at, eta, created_at, updated_at, started_at, ended_at,
    (SELECT v.alert_state->'progress'->'basis' FROM vehicles v
     WHERE v.id = shipments.vehicle_id AND shipments.status IN ('planned', 'in_transit')
       AND v.alert_state->>'shipment' = shipments.id::text) AS eta_basis
    FROM shipments";

impl ShipmentRow {
    fn into_shipment(self, last_position: Option<Position>) -> Shipment {
        Shipment {
            id: self.id,
            reference: self.reference,
            status: self.status,
            origin: json!({"lat": self.origin_lat, "lon": self.origin_lon, "name": self.origin_name}),
            destination: json!({
                "lat": self.destination_lat, "lon": self.destination_lon, "name": self.destination_name
            }),
            planned_route: self.planned_route,
            vehicle_id: self.vehicle_id,
            driver_id: self.driver_id,
            due_at: self.due_at,
            eta: self.eta,
            eta_basis: self.eta_basis.filter(|b| !b.is_null()),
            created_at: self.created_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            ended_at: self.ended_at,
            last_position,
        }
    }
}

/// The current (newest accepted) position of each shipment.
async fn last_positions(db: &PgPool, ids: &[i64]) -> sqlx::Result<Vec<Position>> {
    let rows: Vec<PositionRow> = sqlx::query_as(&format!(
        "SELECT DISTINCT ON (shipment_id) seq, {POSITION_COLUMNS} FROM positions
         WHERE shipment_id = ANY($1) AND NOT late AND filter_reason IS NULL
         ORDER BY shipment_id, recorded_at DESC"
    ))
    .bind(ids)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.position).collect())
}

async fn with_last_positions(db: &PgPool, rows: Vec<ShipmentRow>) -> sqlx::Result<Vec<Shipment>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut last = last_positions(db, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let at = last.iter().position(|p| p.shipment_id == Some(row.id));
            let position = at.map(|i| last.swap_remove(i));
            row.into_shipment(position)
        })
        .collect())
}

/// SQL saying that a row's `shipment_id` is a shipment assigned now to the driver bound as
/// parameter `$n`; true when that parameter is null (a viewer who is not a driver).
pub fn of_driver(n: usize) -> String {
    format!("(${n}::bigint IS NULL OR shipment_id IN (SELECT id FROM shipments WHERE driver_id = ${n}))")
}

/// The shipment if `viewer` may see it: dispatchers see their organisation's, a driver the ones
/// assigned to them, a share link its own. Anything else is `not_found`.
pub async fn load_visible(db: &PgPool, viewer: &Viewer, id: i64) -> AppResult<Shipment> {
    let row: ShipmentRow = sqlx::query_as(&format!("{SHIPMENT_SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(AppError::NotFound("shipment"))?;
    let visible = row.organisation_id == viewer.organisation_id()
        && match viewer {
            Viewer::User(u) if u.role.dispatches() => true,
            Viewer::User(u) => row.driver_id == Some(u.id),
            Viewer::Share(s) => s.shipment_id == row.id,
        };
    if !visible {
        return Err(AppError::NotFound("shipment"));
    }
    let mut shipments = with_last_positions(db, vec![row]).await?;
    Ok(shipments.remove(0))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only shipments with this status.
    #[param(value_type = Option<ShipmentStatus>, inline)]
    status: Option<String>,
}

#[utoipa::path(
    get,
    path = "/shipments",
    operation_id = "listShipments",
    summary = "List shipments",
    tag = "shipments",
    params(ListQuery),
    responses(
        (status = 200, body = Vec<Shipment>, description = "Newest first (at most 1000). A driver gets the shipments assigned to them."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> AppResult<Json<Vec<Shipment>>> {
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(AppError::validation("status", "unknown status"));
        }
    }
    let driver = (user.role == Role::Driver).then_some(user.id);
    let rows: Vec<ShipmentRow> = sqlx::query_as(&format!(
        "{SHIPMENT_SELECT} WHERE organisation_id = $1 AND ($2::bigint IS NULL OR driver_id = $2)
         AND ($3::text IS NULL OR status = $3) ORDER BY created_at DESC, id DESC LIMIT 1000"
    ))
    .bind(user.organisation_id)
    .bind(driver)
    .bind(q.status)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(with_last_positions(&state.db, rows).await?))
}

#[utoipa::path(
    get,
    path = "/shipments/{id}",
    operation_id = "getShipment",
    summary = "Get a shipment",
    description = "Dispatchers, admins, its driver, or its share link.",
    tag = "shipments",
    params(Id),
    responses(
        (status = 200, body = Shipment, description = "The shipment."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []), ("cookie" = []), ("share" = [])),
)]
async fn get_one(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<Shipment>> {
    Ok(Json(load_visible(&state.db, &viewer, id).await?))
}

/// An origin or destination.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Place)]
struct PlaceInput {
    #[schema(minimum = -90, maximum = 90)]
    lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    lon: f64,
    #[schema(max_length = 200)]
    name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewShipment {
    #[schema(min_length = 1, max_length = 100)]
    reference: String,
    origin: PlaceInput,
    destination: PlaceInput,
    #[schema(value_type = Option<schemas::LineString>)]
    planned_route: Option<Value>,
    vehicle_id: Option<i64>,
    driver_id: Option<i64>,
    due_at: Option<DateTime<Utc>>,
}

fn check_place(field: &str, p: &PlaceInput) -> AppResult<()> {
    if !(-90.0..=90.0).contains(&p.lat) || !(-180.0..=180.0).contains(&p.lon) {
        return Err(AppError::validation(
            field,
            format!("{field} must have lat in -90..90 and lon in -180..180"),
        ));
    }
    if p.name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(AppError::validation(
            field,
            format!("{field}.name is over 200 characters"),
        ));
    }
    Ok(())
}

/// A GeoJSON LineString of 2 to 10 000 valid `[lon, lat]` positions, as PostGIS-ready text.
fn check_route(route: &Value) -> AppResult<String> {
    let bad = |m: &str| AppError::validation("planned_route", m);
    if route.get("type").and_then(Value::as_str) != Some("LineString") {
        return Err(bad("planned_route must be a GeoJSON LineString"));
    }
    let coords = route
        .get("coordinates")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("planned_route needs coordinates"))?;
    if coords.len() < 2 || coords.len() > MAX_ROUTE_POINTS {
        return Err(bad("planned_route must have 2 to 10000 positions"));
    }
    for c in coords {
        let pair = c.as_array().filter(|a| a.len() >= 2);
        let (lon, lat) = match pair {
            Some(a) => (a[0].as_f64(), a[1].as_f64()),
            None => (None, None),
        };
        match (lon, lat) {
            (Some(lon), Some(lat))
                if (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat) => {}
            _ => {
                return Err(bad(
                    "each planned_route position must be [lon, lat] in range",
                ))
            }
        }
    }
    Ok(json!({"type": "LineString", "coordinates": coords}).to_string())
}

async fn check_assignees(
    db: &PgPool,
    organisation_id: i64,
    vehicle_id: Option<i64>,
    driver_id: Option<i64>,
) -> AppResult<()> {
    if let Some(v) = vehicle_id {
        let ok: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM vehicles WHERE id = $1 AND organisation_id = $2)",
        )
        .bind(v)
        .bind(organisation_id)
        .fetch_one(db)
        .await?;
        if !ok {
            return Err(AppError::validation("vehicle_id", "no such vehicle"));
        }
    }
    if let Some(d) = driver_id {
        let ok: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND organisation_id = $2 AND role = 'driver')",
        )
        .bind(d)
        .bind(organisation_id)
        .fetch_one(db)
        .await?;
        if !ok {
            return Err(AppError::validation("driver_id", "no such driver"));
        }
    }
    Ok(())
}

/// Maps the shipments table's constraints to what the client did wrong.
fn constraint_error(e: sqlx::Error) -> AppError {
    match e.as_database_error().and_then(|d| d.constraint()) {
        Some("shipments_reference_key") => {
            AppError::Conflict("a shipment with this reference exists".into())
        }
        Some("shipments_one_active_per_vehicle") => {
            AppError::Conflict("this vehicle already has an active shipment".into())
        }
        _ => e.into(),
    }
}

#[utoipa::path(
    post,
    path = "/shipments",
    operation_id = "createShipment",
    summary = "Create a shipment",
    description = "Dispatchers and admins. `409` when the reference exists or the vehicle already has an active (`planned` or `in_transit`) shipment.",
    tag = "shipments",
    request_body = NewShipment,
    responses(
        (status = 201, body = Shipment, description = "Created."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<NewShipment>,
) -> AppResult<(StatusCode, Json<Shipment>)> {
    user.require_dispatcher()?;
    let reference = body.reference.trim();
    if reference.is_empty() || reference.chars().count() > 100 {
        return Err(AppError::validation(
            "reference",
            "reference must be 1 to 100 characters",
        ));
    }
    check_place("origin", &body.origin)?;
    check_place("destination", &body.destination)?;
    let route = body.planned_route.as_ref().map(check_route).transpose()?;
    check_assignees(
        &state.db,
        user.organisation_id,
        body.vehicle_id,
        body.driver_id,
    )
    .await?;
    let mut tx = window_change(&state.db, body.vehicle_id.is_some()).await?;
    let id: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO shipments (organisation_id, reference, origin, origin_name, destination,
             destination_name, planned_route, vehicle_id, driver_id, due_at, fixes_from)
         VALUES ($1, $2, ST_SetSRID(ST_MakePoint($3, $4), 4326)::geography, $5,
             ST_SetSRID(ST_MakePoint($6, $7), 4326)::geography, $8,
             ST_SetSRID(ST_GeomFromGeoJSON($9), 4326)::geography, $10, $11, $12,
             CASE WHEN $10::bigint IS NOT NULL THEN {} END)
         RETURNING id",
        fixes_from("$10")
    ))
    .bind(user.organisation_id)
    .bind(reference)
    .bind(body.origin.lon)
    .bind(body.origin.lat)
    .bind(&body.origin.name)
    .bind(body.destination.lon)
    .bind(body.destination.lat)
    .bind(&body.destination.name)
    .bind(route)
    .bind(body.vehicle_id)
    .bind(body.driver_id)
    .bind(body.due_at)
    .fetch_one(&mut *tx)
    .await
    .map_err(constraint_error)?;
    tx.commit().await?;
    let shipment = load_visible(&state.db, &Viewer::User(user), id).await?;
    Ok((StatusCode::CREATED, Json(shipment)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ShipmentChange {
    #[schema(value_type = Option<ShipmentStatus>)]
    status: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    reference: Option<String>,
    vehicle_id: Option<i64>,
    driver_id: Option<i64>,
    due_at: Option<DateTime<Utc>>,
}

/// How long before a shipment gets its vehicle a fix may have been taken and still join it, for
/// device clocks that run a little behind.
const FIXES_GRACE: &str = "2 minutes";

/// SQL for the earliest fix time that joins a shipment given vehicle `vehicle` now (a parameter
/// such as `$4`): its assignment less [`FIXES_GRACE`], never before that vehicle's previous
/// shipment ended (see `ingest::attribution`).
fn fixes_from(vehicle: &str) -> String {
    format!(
        "GREATEST(now() - interval '{FIXES_GRACE}', (SELECT max(e.ended_at) FROM shipments e
             WHERE e.vehicle_id = {vehicle} AND e.started_at IS NOT NULL))"
    )
}

/// A transaction for a change that may open or close a shipment's window of fixes, holding
/// the seq lock when `window` says it does: the writer attributes fixes under that lock, so no
/// batch decides by the window as it was and commits after the change. (Without it, a fix
/// written between the change's `now()` and its commit would keep the old attribution.)
async fn window_change(
    db: &PgPool,
    window: bool,
) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = db.begin().await?;
    if window {
        lock_seq(&mut tx).await?;
    }
    Ok(tx)
}

#[utoipa::path(
    patch,
    path = "/shipments/{id}",
    operation_id = "updateShipment",
    summary = "Change a shipment",
    description = "Dispatchers and admins. A `delivered` or `cancelled` shipment keeps its status (`409`).",
    tag = "shipments",
    params(Id),
    request_body = ShipmentChange,
    responses(
        (status = 200, body = Shipment, description = "The changed shipment."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn update(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(change): ApiJson<ShipmentChange>,
) -> AppResult<Json<Shipment>> {
    user.require_dispatcher()?;
    let viewer = Viewer::User(user.clone());
    let current = load_visible(&state.db, &viewer, id).await?;
    if let Some(s) = &change.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(AppError::validation(
                "status",
                "status must be planned, in_transit, arrived, delivered or cancelled",
            ));
        }
        if matches!(current.status.as_str(), "delivered" | "cancelled") && *s != current.status {
            return Err(AppError::Conflict(format!(
                "the shipment is already {}",
                current.status
            )));
        }
    }
    if let Some(r) = &change.reference {
        if r.trim().is_empty() || r.chars().count() > 100 {
            return Err(AppError::validation(
                "reference",
                "reference must be 1 to 100 characters",
            ));
        }
    }
    check_assignees(
        &state.db,
        user.organisation_id,
        change.vehicle_id,
        change.driver_id,
    )
    .await?;
    let mut tx = window_change(
        &state.db,
        change.vehicle_id.is_some() || change.status.is_some(),
    )
    .await?;
    sqlx::query(&format!(
        "UPDATE shipments SET status = COALESCE($2, status), reference = COALESCE($3, reference),
             vehicle_id = COALESCE($4, vehicle_id), driver_id = COALESCE($5, driver_id),
             due_at = COALESCE($6, due_at),
             started_at = CASE WHEN $2 = 'in_transit' THEN COALESCE(started_at, now()) ELSE started_at END,
             -- The time window of its fixes: from when it got this vehicle, to when it ended.
             fixes_from = CASE WHEN $4 IS DISTINCT FROM vehicle_id AND $4 IS NOT NULL
                 THEN {} ELSE fixes_from END,
             ended_at = CASE WHEN COALESCE($2, status) IN ('planned', 'in_transit') THEN NULL
                 ELSE COALESCE(ended_at, now()) END,
             updated_at = now()
         WHERE id = $1",
        fixes_from("$4")
    ))
    .bind(id)
    .bind(&change.status)
    .bind(change.reference.as_deref().map(str::trim))
    .bind(change.vehicle_id)
    .bind(change.driver_id)
    .bind(change.due_at)
    .execute(&mut *tx)
    .await
    .map_err(constraint_error)?;
    tx.commit().await?;
    // The driver it was assigned to may have lost it, or its vehicle: their live subscriptions
    // are re-checked on every instance.
    let changed = change
        .driver_id
        .is_some_and(|d| Some(d) != current.driver_id)
        || change
            .vehicle_id
            .is_some_and(|v| Some(v) != current.vehicle_id)
        || change.status.as_ref().is_some_and(|s| *s != current.status);
    if let (true, Some(driver)) = (changed, current.driver_id) {
        state.revoke(Revoked::Assignment(driver)).await;
    }
    Ok(Json(load_visible(&state.db, &viewer, id).await?))
}

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
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
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
        Some(m) if m > 0.0 && rows.len() > 2 => simplify(rows, m),
        _ => rows,
    };
    if format == "gpx" {
        return Ok((
            [(header::CONTENT_TYPE, "application/gpx+xml")],
            gpx(&shipment.reference, &rows),
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

/// Douglas–Peucker with a tolerance in metres, on a local equirectangular projection (exact
/// enough at the scale of one trip), keeping the original vertices and their times.
fn simplify(rows: Vec<PositionRow>, tolerance_m: f64) -> Vec<PositionRow> {
    const M_PER_DEG: f64 = 111_320.0;
    let cos_lat = rows[0].position.lat.to_radians().cos();
    let line: LineString<f64> = rows
        .iter()
        .map(|r| Coord {
            x: r.position.lon * M_PER_DEG * cos_lat,
            y: r.position.lat * M_PER_DEG,
        })
        .collect();
    let keep = line.simplify_idx(&tolerance_m);
    let mut keep = keep.into_iter().peekable();
    rows.into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            if keep.peek() == Some(&i) {
                keep.next();
                Some(r)
            } else {
                None
            }
        })
        .collect()
}

fn gpx(name: &str, rows: &[PositionRow]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"Waymark\" xmlns=\"http://www.topografix.com/GPX/1/1\">\n<trk><name>",
    );
    out.push_str(&xml_escape(name));
    out.push_str("</name><trkseg>\n");
    for r in rows {
        out.push_str(&format!(
            "<trkpt lat=\"{}\" lon=\"{}\"><time>{}</time></trkpt>\n",
            r.position.lat,
            r.position.lon,
            r.position
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ));
    }
    out.push_str("</trkseg></trk>\n</gpx>\n");
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewShare {
    #[schema(minimum = 60, maximum = 2592000, default = 86400)]
    expires_in_s: Option<i64>,
    /// Let the link's holder write in the shipment's chat.
    #[schema(default = false)]
    chat: Option<bool>,
}

#[utoipa::path(
    post,
    path = "/shipments/{id}/share",
    operation_id = "share",
    summary = "Create a share link",
    description = "Dispatchers and admins. The body is optional.",
    tag = "shipments",
    params(Id),
    request_body = inline(NewShare),
    responses(
        (status = 201, body = Share, description = "Created."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = TooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn share(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    body: axum::body::Bytes,
) -> AppResult<(StatusCode, Json<Value>)> {
    user.require_dispatcher()?;
    let viewer = Viewer::User(user.clone());
    load_visible(&state.db, &viewer, id).await?;
    // The body is optional: an empty POST makes a link with the default lifetime.
    let body: NewShare = if body.is_empty() {
        NewShare::default()
    } else {
        let value =
            serde_json::from_slice(&body).map_err(|e| AppError::Malformed(e.to_string()))?;
        from_json(value)?
    };
    let expires_in = body.expires_in_s.unwrap_or(86_400);
    if !(60..=30 * 86_400).contains(&expires_in) {
        return Err(AppError::validation(
            "expires_in_s",
            "expires_in_s must be between 60 and 2592000",
        ));
    }
    let share_token = token::generate(SHARE_TOKEN_BYTES);
    let expires_at: DateTime<Utc> = Utc::now() + Duration::seconds(expires_in);
    let chat = body.chat.unwrap_or(false);
    sqlx::query(
        "INSERT INTO share_links (token_hash, organisation_id, shipment_id, created_by, expires_at, chat)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token::hash(&share_token))
    .bind(user.organisation_id)
    .bind(id)
    .bind(user.id)
    .bind(expires_at)
    .bind(chat)
    .execute(&state.db)
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"token": share_token, "url": format!("/t/{share_token}"), "expires_at": expires_at, "chat": chat}),
        ),
    ))
}

#[utoipa::path(
    delete,
    path = "/shares/{token}",
    operation_id = "revokeShare",
    summary = "Revoke a share link",
    description = "Dispatchers and admins.",
    tag = "shipments",
    params(("token" = String, Path)),
    responses(
        (status = 204, description = "Revoked: sockets opened with the link close with 1008 at once."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn revoke_share(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(share_token): ApiPath<String>,
) -> AppResult<StatusCode> {
    user.require_dispatcher()?;
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE share_links SET revoked_at = now()
         WHERE token_hash = $1 AND organisation_id = $2 AND revoked_at IS NULL RETURNING id",
    )
    .bind(token::hash(&share_token))
    .bind(user.organisation_id)
    .fetch_optional(&state.db)
    .await?;
    let id = id.ok_or(AppError::NotFound("share link"))?;
    // Whoever is watching through the link is cut off now, not at their next request.
    state.revoke(Revoked::Share(id)).await;
    Ok(StatusCode::NO_CONTENT)
}
