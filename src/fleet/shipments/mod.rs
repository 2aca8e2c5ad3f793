//! Shipments: a vehicle's trip from origin to destination. Planning, listing and changing them
//! is here; its driven [`track`], the [`share`] links that let a customer follow it, and who may
//! see one ([`access`]) each have their own file.
mod access;
pub(crate) mod share;
pub(crate) mod track;

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use utoipa::{IntoParams, ToSchema};

pub use access::load_visible;

use crate::{
    auth::{CurrentUser, Revoked, Role, Viewer},
    db::DbPoint,
    error::openapi::{
        BadRequest, CommonErrors, Conflict, Forbidden, Id, NotFound, TooLarge, UnsupportedMediaType,
    },
    error::{ApiJson, ApiPath, ApiQuery, AppError, AppResult},
    fleet::vehicles::VehicleStatus,
    tracking::lock_seq,
    tracking::position::{Position, PositionRow, POSITION_COLUMNS},
    AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/shipments", get(list).post(create))
        .route("/shipments/{id}", get(get_one).patch(update))
        .merge(track::router())
        .merge(share::router())
}

const MAX_ROUTE_POINTS: usize = 10_000;

/// Where a shipment is in its life: its `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ShipmentStatus {
    Planned,
    InTransit,
    Arrived,
    Delivered,
    Cancelled,
}

impl ShipmentStatus {
    pub const ALL: [ShipmentStatus; 5] = [
        ShipmentStatus::Planned,
        ShipmentStatus::InTransit,
        ShipmentStatus::Arrived,
        ShipmentStatus::Delivered,
        ShipmentStatus::Cancelled,
    ];

    /// A vehicle's fixes join its one active shipment. Queries bind this as `status = ANY($n)`,
    /// so the set is written here only.
    pub const ACTIVE: [ShipmentStatus; 2] = [ShipmentStatus::Planned, ShipmentStatus::InTransit];

    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::Planned => "planned",
            ShipmentStatus::InTransit => "in_transit",
            ShipmentStatus::Arrived => "arrived",
            ShipmentStatus::Delivered => "delivered",
            ShipmentStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ShipmentStatus> {
        ShipmentStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// [`Self::ACTIVE`] as an SQL list, `('planned', 'in_transit')`, for the writer's queries:
    /// to use the partial index of active shipments the planner must see the set, not a
    /// parameter.
    pub fn active_sql() -> String {
        let quoted: Vec<String> = ShipmentStatus::ACTIVE
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("({})", quoted.join(", "))
    }

    /// Planned or in transit.
    pub fn is_active(self) -> bool {
        ShipmentStatus::ACTIVE.contains(&self)
    }

    /// Delivered and cancelled shipments never change status again.
    fn is_final(self) -> bool {
        matches!(self, ShipmentStatus::Delivered | ShipmentStatus::Cancelled)
    }
}

#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq)]
pub struct Place {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Shipment {
    pub id: i64,
    pub reference: String,
    pub status: ShipmentStatus,
    #[schema(value_type = PlaceInput)]
    pub origin: Value,
    #[schema(value_type = PlaceInput)]
    pub destination: Value,
    #[schema(value_type = Option<crate::fleet::openapi::LineString>, required = true)]
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
    #[schema(schema_with = crate::fleet::openapi::eta_basis, required = true)]
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
    status: ShipmentStatus,
    origin: DbPoint,
    origin_name: Option<String>,
    destination: DbPoint,
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

/// Every shipment column; binds [`ShipmentStatus::ACTIVE`] as `$1`.
const SHIPMENT_SELECT: &str = "SELECT id, organisation_id, reference, status,
    origin::geometry AS origin, origin_name, destination::geometry AS destination,
    destination_name, ST_AsGeoJSON(planned_route)::jsonb AS planned_route, vehicle_id, driver_id,
    due_at, eta, created_at, updated_at, started_at, ended_at,
    (SELECT v.alert_state->'progress'->'basis' FROM vehicles v
     WHERE v.id = shipments.vehicle_id AND shipments.status = ANY($1)
       AND v.alert_state->>'shipment' = shipments.id::text) AS eta_basis
    FROM shipments";

/// A stored place as the API shows it.
fn place(point: DbPoint, name: Option<String>) -> Value {
    json!({"lat": point.0.y(), "lon": point.0.x(), "name": name})
}

impl ShipmentRow {
    fn into_shipment(self, last_position: Option<Position>) -> Shipment {
        Shipment {
            id: self.id,
            reference: self.reference,
            status: self.status,
            origin: place(self.origin, self.origin_name),
            destination: place(self.destination, self.destination_name),
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
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> AppResult<Json<Vec<Shipment>>> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            ShipmentStatus::parse(s).ok_or_else(|| AppError::validation("status", "unknown status"))
        })
        .transpose()?;
    let driver = (user.role == Role::Driver).then_some(user.id);
    let rows: Vec<ShipmentRow> = sqlx::query_as(&format!(
        "{SHIPMENT_SELECT} WHERE organisation_id = $2 AND ($3::bigint IS NULL OR driver_id = $3)
         AND ($4::text IS NULL OR status = $4) ORDER BY created_at DESC, id DESC LIMIT 1000"
    ))
    .bind(ShipmentStatus::ACTIVE)
    .bind(user.organisation_id)
    .bind(driver)
    .bind(status)
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
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
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
    #[schema(value_type = Option<crate::fleet::openapi::LineString>)]
    planned_route: Option<Value>,
    vehicle_id: Option<i64>,
    driver_id: Option<i64>,
    due_at: Option<DateTime<Utc>>,
}

impl PlaceInput {
    fn point(&self) -> DbPoint {
        DbPoint(geo::Point::new(self.lon, self.lat))
    }
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

/// Checks the vehicle and driver a shipment is given, inside the transaction that gives them:
/// with a vehicle it holds the seq lock, which retiring a vehicle takes too, so a vehicle
/// cannot be retired between this check and the shipment's commit.
async fn check_assignees(
    conn: &mut PgConnection,
    organisation_id: i64,
    vehicle_id: Option<i64>,
    driver_id: Option<i64>,
) -> AppResult<()> {
    if let Some(v) = vehicle_id {
        let status = sqlx::query_scalar!(
            r#"SELECT status AS "status: VehicleStatus" FROM vehicles
               WHERE id = $1 AND organisation_id = $2"#,
            v,
            organisation_id
        )
        .fetch_optional(&mut *conn)
        .await?;
        match status {
            None => return Err(AppError::validation("vehicle_id", "no such vehicle")),
            Some(VehicleStatus::Retired) => {
                return Err(AppError::ConflictAt {
                    field: "vehicle_id",
                    message: "the vehicle is retired: put it back in service first".into(),
                })
            }
            Some(VehicleStatus::Active) => {}
        }
    }
    if let Some(d) = driver_id {
        let ok = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND organisation_id = $2
                 AND role = 'driver') AS "ok!""#,
            d,
            organisation_id
        )
        .fetch_one(&mut *conn)
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
        Some("shipments_reference_key") => AppError::ConflictAt {
            field: "reference",
            message: "a shipment with this reference exists".into(),
        },
        Some("shipments_one_active_per_vehicle") => AppError::ConflictAt {
            field: "vehicle_id",
            message: "this vehicle already has an active shipment".into(),
        },
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
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        CommonErrors,
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
    let mut tx = window_change(&state.db, body.vehicle_id.is_some()).await?;
    check_assignees(
        &mut tx,
        user.organisation_id,
        body.vehicle_id,
        body.driver_id,
    )
    .await?;
    let id: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO shipments (organisation_id, reference, origin, origin_name, destination,
             destination_name, planned_route, vehicle_id, driver_id, due_at, fixes_from)
         VALUES ($1, $2, ST_SetSRID($3::geometry, 4326)::geography, $4,
             ST_SetSRID($5::geometry, 4326)::geography, $6,
             ST_SetSRID(ST_GeomFromGeoJSON($7), 4326)::geography, $8, $9, $10,
             CASE WHEN $8::bigint IS NOT NULL THEN {} END)
         RETURNING id",
        fixes_from("$8")
    ))
    .bind(user.organisation_id)
    .bind(reference)
    .bind(body.origin.point())
    .bind(&body.origin.name)
    .bind(body.destination.point())
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
    ApiJson(change): ApiJson<ShipmentChange>,
) -> AppResult<Json<Shipment>> {
    user.require_dispatcher()?;
    let viewer = Viewer::User(user.clone());
    let current = load_visible(&state.db, &viewer, id).await?;
    let status = change
        .status
        .as_deref()
        .map(|s| {
            ShipmentStatus::parse(s).ok_or_else(|| {
                AppError::validation(
                    "status",
                    "status must be planned, in_transit, arrived, delivered or cancelled",
                )
            })
        })
        .transpose()?;
    if let Some(s) = status {
        if current.status.is_final() && s != current.status {
            return Err(AppError::Conflict(format!(
                "the shipment is already {}",
                current.status.as_str()
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
    let mut tx = window_change(&state.db, change.vehicle_id.is_some() || status.is_some()).await?;
    check_assignees(
        &mut tx,
        user.organisation_id,
        change.vehicle_id,
        change.driver_id,
    )
    .await?;
    sqlx::query(&format!(
        "UPDATE shipments SET status = COALESCE($2, status), reference = COALESCE($3, reference),
             vehicle_id = COALESCE($4, vehicle_id), driver_id = COALESCE($5, driver_id),
             due_at = COALESCE($6, due_at),
             started_at = CASE WHEN $2 = $7 THEN COALESCE(started_at, now()) ELSE started_at END,
             -- The time window of its fixes: from when it got this vehicle, to when it ended.
             fixes_from = CASE WHEN $4 IS DISTINCT FROM vehicle_id AND $4 IS NOT NULL
                 THEN {} ELSE fixes_from END,
             ended_at = CASE WHEN COALESCE($2, status) = ANY($8) THEN NULL
                 ELSE COALESCE(ended_at, now()) END,
             updated_at = now()
         WHERE id = $1",
        fixes_from("$4")
    ))
    .bind(id)
    .bind(status)
    .bind(change.reference.as_deref().map(str::trim))
    .bind(change.vehicle_id)
    .bind(change.driver_id)
    .bind(change.due_at)
    .bind(ShipmentStatus::InTransit)
    .bind(ShipmentStatus::ACTIVE)
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
        || status.is_some_and(|s| s != current.status);
    if let (true, Some(driver)) = (changed, current.driver_id) {
        state.revoke(Revoked::Assignment(driver)).await;
    }
    Ok(Json(load_visible(&state.db, &viewer, id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_the_api_and_the_database_spell_them() {
        for status in ShipmentStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(ShipmentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ShipmentStatus::parse("lost"), None);
    }

    #[test]
    fn planned_and_in_transit_shipments_are_the_active_ones() {
        let active: Vec<ShipmentStatus> = ShipmentStatus::ALL
            .into_iter()
            .filter(|s| s.is_active())
            .collect();
        assert_eq!(active, ShipmentStatus::ACTIVE);
        assert_eq!(ShipmentStatus::active_sql(), "('planned', 'in_transit')");
    }
}
