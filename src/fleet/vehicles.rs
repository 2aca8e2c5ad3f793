//! Vehicles: the things that move. Creating one (or rotating its token) shows its ingest token
//! once; listing shows each with its current position.
use axum::{
    extract::State,
    http::StatusCode,
    routing::{self, post},
    Json, Router,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::{of_driver, token, CurrentUser, Revoked, SpeedUnit, Viewer},
    error::openapi::{
        BadRequest, CommonErrors, Conflict, Forbidden, Id, NotFound, TooLarge, UnsupportedMediaType,
    },
    error::{ApiJson, ApiPath, ApiQuery, AppError, AppResult},
    fleet::roster::VehicleUpdate,
    fleet::{
        openapi::{CreatedVehicle, IngestToken, PositionsLog},
        shipments::ShipmentStatus,
    },
    tracking::position::{FilterReason, Position, PositionRow, POSITION_COLUMNS},
    tracking::{Event, EventTx},
    AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/vehicles", routing::get(list_handler).post(create))
        .route("/vehicles/{id}", routing::get(get_handler).patch(update))
        .route(
            "/vehicles/{id}/token",
            post(rotate_token).delete(revoke_token),
        )
        .route("/vehicles/{id}/positions", routing::get(positions_log))
}

/// Ingest tokens carry 192 random bits.
const TOKEN_BYTES: usize = 24;
const MAX_NAME: usize = 200;

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Vehicle {
    pub id: i64,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub speed_unit: SpeedUnit,
    pub status: VehicleStatus,
    /// When it was retired; null while active.
    #[schema(required = true)]
    pub retired_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    #[schema(value_type = Option<Position>, required = true)]
    pub last_position: Option<Value>,
}

/// Whether a vehicle is in service. A retired one keeps its history but leaves the live fleet
/// (the fleet map and topic, `/fleet`, `/vehicles/nearby`), cannot be given a shipment, and its
/// ingest token is answered `410`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum VehicleStatus {
    Active,
    Retired,
}

impl VehicleStatus {
    /// `active` or `retired`, as the API writes them.
    fn parse(s: &str) -> Option<VehicleStatus> {
        match s {
            "active" => Some(VehicleStatus::Active),
            "retired" => Some(VehicleStatus::Retired),
            _ => None,
        }
    }
}

/// The vehicles of an organisation in service (`Some(Active)`), retired, or all (`None`), by name.
pub async fn list(
    db: &PgPool,
    organisation_id: i64,
    status: Option<VehicleStatus>,
) -> sqlx::Result<Vec<Vehicle>> {
    sqlx::query_as!(
        Vehicle,
        r#"SELECT id, name, speed_unit AS "speed_unit: SpeedUnit", status AS "status: VehicleStatus",
                  retired_at, created_at, last_position
           FROM vehicles WHERE organisation_id = $1 AND ($2::text IS NULL OR status = $2)
           ORDER BY name, id"#,
        organisation_id,
        status as _
    )
    .fetch_all(db)
    .await
}

pub async fn get(db: &PgPool, organisation_id: i64, id: i64) -> AppResult<Vehicle> {
    sqlx::query_as!(
        Vehicle,
        r#"SELECT id, name, speed_unit AS "speed_unit: SpeedUnit", status AS "status: VehicleStatus",
                  retired_at, created_at, last_position
           FROM vehicles WHERE organisation_id = $1 AND id = $2"#,
        organisation_id,
        id
    )
    .fetch_optional(db)
    .await?
    .ok_or(AppError::NotFound("vehicle"))
}

/// Dispatchers see every vehicle of their organisation; a driver sees the vehicles of the
/// shipments assigned to them; a share link sees none.
pub async fn authorize(db: &PgPool, viewer: &Viewer, id: i64) -> AppResult<()> {
    let Viewer::User(user) = viewer else {
        return Err(AppError::Forbidden("share links see their shipment only"));
    };
    let visible = if user.role.dispatches() {
        sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM vehicles WHERE id = $1 AND organisation_id = $2)
               AS "visible!""#,
            id,
            user.organisation_id
        )
        .fetch_one(db)
        .await?
    } else {
        sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM shipments WHERE vehicle_id = $1 AND organisation_id = $2
                 AND driver_id = $3 AND status = ANY($4)) AS "visible!""#,
            id,
            user.organisation_id,
            user.id,
            &ShipmentStatus::ACTIVE as _
        )
        .fetch_one(db)
        .await?
    };
    if visible {
        Ok(())
    } else {
        Err(AppError::NotFound("vehicle"))
    }
}

/// Vehicle `id` as `viewer` may see it. A driver sees its current position only when it belongs
/// to a shipment assigned to them, else the newest one that does (or none): where the vehicle
/// went on other drivers' trips is not theirs to see.
pub async fn get_visible(db: &PgPool, viewer: &Viewer, id: i64) -> AppResult<Vehicle> {
    authorize(db, viewer, id).await?;
    let mut vehicle = get(db, viewer.organisation_id(), id).await?;
    let Some(driver) = viewer.driver_id() else {
        return Ok(vehicle);
    };
    let shipment = vehicle
        .last_position
        .as_ref()
        .and_then(|p| p["shipment_id"].as_i64());
    let theirs = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM shipments WHERE id = $1 AND driver_id = $2) AS "theirs!""#,
        shipment,
        driver
    )
    .fetch_one(db)
    .await?;
    if !theirs {
        let newest: Option<PositionRow> = sqlx::query_as(&format!(
            "SELECT seq, {POSITION_COLUMNS} FROM positions
             WHERE vehicle_id = $1 AND NOT late AND filter_reason IS NULL AND {}
             ORDER BY recorded_at DESC LIMIT 1",
            of_driver(2)
        ))
        .bind(id)
        .bind(driver)
        .fetch_optional(db)
        .await?;
        vehicle.last_position =
            newest.map(|r| serde_json::to_value(r.position).expect("positions serialise"));
    }
    Ok(vehicle)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `active` (in service), `retired`, or `all`.
    #[param(default = "active", pattern = "^(active|retired|all)$")]
    status: Option<String>,
}

#[utoipa::path(
    get,
    path = "/vehicles",
    operation_id = "listVehicles",
    summary = "List vehicles",
    description = "Dispatchers and admins. Only the vehicles in service, unless `status` asks for the retired ones or all.",
    tag = "vehicles",
    params(ListQuery),
    responses(
        (status = 200, body = Vec<Vehicle>, description = "The organisation's vehicles with their last position."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn list_handler(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> AppResult<Json<Vec<Vehicle>>> {
    user.require_dispatcher()?;
    let status = match q.status.as_deref().unwrap_or("active") {
        "all" => None,
        s => Some(VehicleStatus::parse(s).ok_or_else(|| {
            AppError::validation("status", "status must be active, retired or all")
        })?),
    };
    Ok(Json(list(&state.db, user.organisation_id, status).await?))
}

#[utoipa::path(
    get,
    path = "/vehicles/{id}",
    operation_id = "getVehicle",
    summary = "Get a vehicle",
    description = "Dispatchers, admins, and its driver. For a driver, `last_position` is the newest position of the shipments assigned to them (null if none), never one of another driver's trips.",
    tag = "vehicles",
    params(Id),
    responses(
        (status = 200, body = Vehicle, description = "The vehicle."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn get_handler(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<Vehicle>> {
    Ok(Json(get_visible(&state.db, &Viewer::User(user), id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewVehicle {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// The OsmAnd-protocol speed unit.
    #[schema(value_type = Option<SpeedUnit>, default = "knots")]
    speed_unit: Option<String>,
}

/// A vehicle's name, trimmed: 1 to 200 characters.
fn vehicle_name(name: &str) -> AppResult<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(AppError::validation(
            "name",
            "name must be 1 to 200 characters",
        ));
    }
    Ok(name)
}

fn speed_unit(unit: Option<&str>) -> AppResult<SpeedUnit> {
    unit.map_or(Ok(SpeedUnit::default()), |u| {
        SpeedUnit::parse(u).ok_or_else(|| {
            AppError::validation("speed_unit", "speed_unit must be knots, mps, kmh or mph")
        })
    })
}

#[utoipa::path(
    post,
    path = "/vehicles",
    operation_id = "createVehicle",
    summary = "Create a vehicle",
    description = "Dispatchers and admins.",
    tag = "vehicles",
    request_body = NewVehicle,
    responses(
        (status = 201, body = inline(CreatedVehicle), description = "Created. The ingest token is shown only now."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<NewVehicle>,
) -> AppResult<(StatusCode, Json<Value>)> {
    user.require_dispatcher()?;
    let name = vehicle_name(&body.name)?;
    let unit = speed_unit(body.speed_unit.as_deref())?;
    let ingest_token = token::generate(TOKEN_BYTES);
    let mut tx = EventTx::begin(&state.db).await?;
    let seq = tx.next_seq();
    let vehicle = sqlx::query_as!(
        Vehicle,
        r#"INSERT INTO vehicles (organisation_id, name, token_hash, speed_unit, updated_seq)
           VALUES ($1, $2, $3, $4, $5)
           RETURNING id, name, speed_unit AS "speed_unit: SpeedUnit", status AS "status: VehicleStatus",
                  retired_at, created_at, last_position"#,
        user.organisation_id,
        name,
        token::hash(&ingest_token),
        unit as _,
        seq
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.push(Event::new(
        seq,
        VehicleUpdate::of(user.organisation_id, seq, &vehicle),
    ));
    tx.commit().await?.publish(&state.tracking);
    tracing::info!(vehicle = vehicle.id, "vehicle created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"vehicle": vehicle, "ingest_token": ingest_token})),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct VehicleChange {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    /// The OsmAnd-protocol speed unit.
    #[schema(value_type = Option<SpeedUnit>)]
    speed_unit: Option<String>,
    /// `retired` takes the vehicle out of service; `active` puts it back, with the same token.
    #[schema(value_type = Option<VehicleStatus>)]
    status: Option<String>,
}

/// Renames a vehicle, changes its speed unit, retires it or puts it back in service.
#[utoipa::path(
    patch,
    path = "/vehicles/{id}",
    operation_id = "updateVehicle",
    summary = "Change a vehicle",
    description = "Dispatchers and admins. Any of `name`, `speed_unit` and `status`, at least one. A new speed unit applies to the next request on every instance. Retiring (`status: retired`) keeps the vehicle's history (positions log, tracks, alerts) and takes it off the live fleet (`/fleet`, the `fleet` topic, `/vehicles/nearby`, the default vehicle list); its ingest token is then answered `410 vehicle_retired` on every instance, and it cannot be given a shipment. A vehicle carrying a planned or in-transit shipment cannot be retired (`409`). `status: active` puts it back in service with the same token (rotate it if the device is no longer trusted).",
    tag = "vehicles",
    params(Id),
    request_body = VehicleChange,
    responses(
        (status = 200, body = Vehicle, description = "The vehicle as it is now."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn update(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<VehicleChange>,
) -> AppResult<Json<Vehicle>> {
    user.require_dispatcher()?;
    if body.name.is_none() && body.speed_unit.is_none() && body.status.is_none() {
        return Err(AppError::validation(
            "",
            "give at least one of name, speed_unit and status",
        ));
    }
    let name = body.name.as_deref().map(vehicle_name).transpose()?;
    let unit = body
        .speed_unit
        .as_deref()
        .map(|u| speed_unit(Some(u)))
        .transpose()?;
    let status = body
        .status
        .as_deref()
        .map(|s| {
            VehicleStatus::parse(s)
                .ok_or_else(|| AppError::validation("status", "status must be active or retired"))
        })
        .transpose()?;
    let mut tx = EventTx::begin(&state.db).await?;
    // The row lock orders concurrent changes of the vehicle.
    let before = sqlx::query_scalar!(
        r#"SELECT status AS "status: VehicleStatus" FROM vehicles
           WHERE id = $1 AND organisation_id = $2 FOR UPDATE"#,
        id,
        user.organisation_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(AppError::NotFound("vehicle"))?;
    if status == Some(VehicleStatus::Retired) && before == VehicleStatus::Active {
        let carrying = sqlx::query_scalar!(
            "SELECT reference FROM shipments WHERE vehicle_id = $1 AND status = ANY($2)
             ORDER BY id LIMIT 1",
            id,
            &ShipmentStatus::ACTIVE as _
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(reference) = carrying {
            return Err(AppError::Conflict(format!(
                "the vehicle carries shipment {reference}: deliver, cancel or reassign it first"
            )));
        }
    }
    let seq = tx.next_seq();
    let vehicle = sqlx::query_as!(
        Vehicle,
        r#"UPDATE vehicles SET
             updated_seq = $6,
             name = COALESCE($3, name),
             speed_unit = COALESCE($4, speed_unit),
             retired_at = CASE $5::text WHEN 'retired' THEN COALESCE(retired_at, now())
                                        WHEN 'active' THEN NULL
                                        ELSE retired_at END
           WHERE id = $1 AND organisation_id = $2
           RETURNING id, name, speed_unit AS "speed_unit: SpeedUnit",
                     status AS "status: VehicleStatus", retired_at, created_at, last_position"#,
        id,
        user.organisation_id,
        name,
        unit as _,
        status as _,
        seq
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.push(Event::new(
        seq,
        VehicleUpdate::of(user.organisation_id, seq, &vehicle),
    ));
    let committed = tx.commit().await?;
    if unit.is_some() || status.is_some_and(|s| s != before) {
        // Every instance's ingest token cache forgets the vehicle, so the new unit or status
        // holds from the next request on.
        state.revoke(Revoked::Vehicle(id)).await;
    }
    committed.publish(&state.tracking);
    if status.is_some_and(|s| s != before) {
        tracing::info!(vehicle = id, status = ?vehicle.status, "vehicle status changed");
    }
    Ok(Json(vehicle))
}

#[utoipa::path(
    post,
    path = "/vehicles/{id}/token",
    operation_id = "rotateToken",
    summary = "Rotate the ingest token",
    description = "Dispatchers and admins.",
    tag = "vehicles",
    params(Id),
    responses(
        (status = 200, body = IngestToken, description = "The new token; the old one stops working."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn rotate_token(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<Value>> {
    let ingest_token = replace_token(&state, &user, id).await?;
    Ok(Json(json!({"ingest_token": ingest_token})))
}

/// Revokes the vehicle's ingest token without showing a new one: the device is locked out until
/// a dispatcher rotates it.
#[utoipa::path(
    delete,
    path = "/vehicles/{id}/token",
    operation_id = "revokeToken",
    summary = "Revoke the ingest token",
    description = "Dispatchers and admins. The token stops working on every instance at once, and no new one is shown: the device is locked out until the token is rotated.",
    tag = "vehicles",
    params(Id),
    responses(
        (status = 204, description = "Revoked."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn revoke_token(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<StatusCode> {
    replace_token(&state, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives vehicle `id` a new ingest token and returns it; the old one stops working on every
/// instance at once.
async fn replace_token(state: &AppState, user: &CurrentUser, id: i64) -> AppResult<String> {
    user.require_dispatcher()?;
    let ingest_token = token::generate(TOKEN_BYTES);
    let updated = sqlx::query!(
        "UPDATE vehicles SET token_hash = $1 WHERE id = $2 AND organisation_id = $3",
        token::hash(&ingest_token),
        id,
        user.organisation_id
    )
    .execute(&state.db)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(AppError::NotFound("vehicle"));
    }
    state.revoke(Revoked::Vehicle(id)).await;
    Ok(ingest_token)
}

/// Most rows one page of the positions log holds.
const LOG_MAX: i64 = 5000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Rows recorded at or after this time.
    from: Option<DateTime<Utc>>,
    /// Rows recorded before this time.
    to: Option<DateTime<Utc>>,
    /// Rows recorded strictly after this time: the previous page's `next`.
    after: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 5000, default = 1000)]
    limit: Option<i64>,
    /// Only the rows the filter marked.
    #[param(default = false)]
    filtered: Option<bool>,
}

/// One stored row with what the writer decided about it.
#[derive(Serialize, sqlx::FromRow, ToSchema)]
pub(crate) struct LogRow {
    seq: i64,
    #[sqlx(flatten)]
    #[serde(flatten)]
    position: Position,
    /// Why the filter marked it (never current, never published), or null.
    #[schema(required = true)]
    filter_reason: Option<FilterReason>,
    /// The keys the device sent that its format does not define.
    #[schema(value_type = Option<Object>)]
    attributes: Option<Value>,
}

/// The vehicle's positions log for audit: every stored row in time order, filtered and late
/// ones included, each with the filter's decision. Pages by `next`.
#[utoipa::path(
    get,
    path = "/vehicles/{id}/positions",
    operation_id = "vehiclePositionsLog",
    summary = "A vehicle's positions log, for audit (dispatcher)",
    description = "Every stored row in `recorded_at` order, filtered and late ones included, each with the filter's decision (`filter_reason`: `null_island`, `future`, `clock_ahead`, `outdated`, `inaccurate`, `jump`, or null). Page with `after` = the previous page's `next`.",
    tag = "vehicles",
    params(Id, LogQuery),
    responses(
        (status = 200, body = PositionsLog, description = "One page of the log."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn positions_log(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> AppResult<Json<Value>> {
    user.require_dispatcher()?;
    get(&state.db, user.organisation_id, id).await?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=LOG_MAX).contains(&limit) {
        return Err(AppError::validation("limit", "limit must be 1 to 5000"));
    }
    let rows: Vec<LogRow> = sqlx::query_as(&format!(
        "SELECT seq, {POSITION_COLUMNS}, filter_reason, attributes FROM positions
         WHERE vehicle_id = $1
           AND ($2::timestamptz IS NULL OR recorded_at >= $2)
           AND ($3::timestamptz IS NULL OR recorded_at < $3)
           AND ($4::timestamptz IS NULL OR recorded_at > $4)
           AND (NOT $5 OR filter_reason IS NOT NULL)
         ORDER BY recorded_at LIMIT $6"
    ))
    .bind(id)
    .bind(q.from)
    .bind(q.to)
    .bind(q.after)
    .bind(q.filtered.unwrap_or(false))
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.position.recorded_at))
        .flatten();
    Ok(Json(json!({"positions": rows, "next": next})))
}
