//! The alerts API: list and filter, read one, acknowledge; and a vehicle's own alert settings. Acknowledging is an event like any
//! other (a seq under the lock, published on `alerts` and the shipment's topic), so every
//! dispatcher's screen hears of it at once, on every instance.
use axum::{
    extract::State,
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use utoipa::IntoParams;

use super::{Alert, AlertSettings, Rule, ALERT_COLUMNS};
use crate::{
    auth::{CurrentUser, Role},
    error::{ApiJson, ApiPath, ApiQuery, AppError, AppResult},
    openapi::{
        responses::{
            BadRequest, Forbidden, Internal, NotFound, Unauthorized, Unavailable,
            UnsupportedMediaType,
        },
        schemas::{AlertList, Id, VehicleAlertSettings},
    },
    settings::{stored_or_default, Settings},
    tracking::{lock_seq, set_seq, Batch, Tracking},
    AppState,
};

const MAX_LIMIT: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/alerts", get(list))
        .route("/alerts/{id}", get(get_one))
        .route("/alerts/{id}/acknowledge", post(acknowledge_handler))
        .route(
            "/vehicles/{id}/alert-settings",
            get(show_vehicle_settings).put(set_vehicle_settings),
        )
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    #[param(value_type = Option<Rule>, inline)]
    rule: Option<String>,
    vehicle_id: Option<i64>,
    shipment_id: Option<i64>,
    acknowledged: Option<bool>,
    /// Only alerts with a smaller id: the next page.
    before: Option<i64>,
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<i64>,
}

/// Drivers see the alerts of shipments assigned to them; dispatchers all of their organisation's.
const VISIBLE: &str = "organisation_id = $1
    AND ($2::bigint IS NULL OR shipment_id IN (SELECT id FROM shipments WHERE driver_id = $2))";

#[utoipa::path(
    get,
    path = "/alerts",
    operation_id = "listAlerts",
    summary = "List alerts, newest first",
    description = "Dispatchers see their organisation's; a driver those of shipments assigned to them.",
    tag = "alerts",
    params(ListQuery),
    responses(
        (status = 200, body = AlertList, description = "The alerts and the unacknowledged count."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> AppResult<Json<Value>> {
    if let Some(r) = &q.rule {
        if !Rule::ALL.iter().any(|k| k.as_str() == r) {
            return Err(AppError::validation(
                "rule",
                "rule must be geofence_enter, geofence_exit, geofence_dwell, overspeed, \
                 stopped, silent, off_route, arrived or late",
            ));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::validation("limit", "limit must be 1 to 500"));
    }
    let driver = (user.role == Role::Driver).then_some(user.id);
    let alerts: Vec<Alert> = sqlx::query_as(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE {VISIBLE}
           AND ($3::text IS NULL OR rule = $3) AND ($4::bigint IS NULL OR vehicle_id = $4)
           AND ($5::bigint IS NULL OR shipment_id = $5)
           AND ($6::bool IS NULL OR (acknowledged_at IS NOT NULL) = $6)
           AND ($7::bigint IS NULL OR id < $7)
         ORDER BY id DESC LIMIT $8"
    ))
    .bind(user.organisation_id)
    .bind(driver)
    .bind(&q.rule)
    .bind(q.vehicle_id)
    .bind(q.shipment_id)
    .bind(q.acknowledged)
    .bind(q.before)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let unacknowledged = unacknowledged(&state.db, user.organisation_id, driver).await?;
    Ok(Json(
        json!({"alerts": alerts, "unacknowledged": unacknowledged}),
    ))
}

/// How many of the alerts `driver` (or, with none, a dispatcher) sees are unacknowledged.
pub async fn unacknowledged(
    db: &PgPool,
    organisation_id: i64,
    driver: Option<i64>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM alerts WHERE {VISIBLE} AND acknowledged_at IS NULL"
    ))
    .bind(organisation_id)
    .bind(driver)
    .fetch_one(db)
    .await
}

/// The newest alerts of an organisation, for the `alerts` topic's snapshot.
pub async fn recent(db: &PgPool, organisation_id: i64, limit: i64) -> sqlx::Result<Vec<Alert>> {
    sqlx::query_as(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE organisation_id = $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(organisation_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

async fn find(conn: impl sqlx::PgExecutor<'_>, user: &CurrentUser, id: i64) -> AppResult<Alert> {
    let driver = (user.role == Role::Driver).then_some(user.id);
    sqlx::query_as(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE {VISIBLE} AND id = $3"
    ))
    .bind(user.organisation_id)
    .bind(driver)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(AppError::NotFound("alert"))
}

#[utoipa::path(
    get,
    path = "/alerts/{id}",
    operation_id = "getAlert",
    summary = "Get an alert",
    tag = "alerts",
    params(Id),
    responses(
        (status = 200, body = Alert, description = "The alert."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn get_one(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<Alert>> {
    Ok(Json(find(&state.db, &user, id).await?))
}

#[utoipa::path(
    post,
    path = "/alerts/{id}/acknowledge",
    operation_id = "acknowledgeAlert",
    summary = "Acknowledge an alert",
    description = "Dispatchers and admins. Records who and when, and publishes the change on `alerts` and the shipment's topic. Acknowledging again returns the alert unchanged.",
    tag = "alerts",
    params(Id),
    responses(
        (status = 200, body = Alert, description = "The acknowledged alert."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn acknowledge_handler(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<Alert>> {
    Ok(Json(
        acknowledge(&state.db, &state.tracking, &user, id).await?,
    ))
}

/// Acknowledges alert `id` for `user` (a dispatcher) and publishes the change. Acknowledging one
/// that is acknowledged already changes nothing and returns it as it is.
pub async fn acknowledge(
    db: &PgPool,
    tracking: &Tracking,
    user: &CurrentUser,
    id: i64,
) -> AppResult<Alert> {
    user.require_dispatcher()?;
    // Looked up before the seq lock, so a refused or repeated acknowledgement never takes it.
    let current = find(db, user, id).await?;
    if current.acknowledged_at.is_some() {
        return Ok(current);
    }
    let mut tx = db.begin().await?;
    let seq = lock_seq(&mut tx).await? + 1;
    let updated: Option<Alert> = sqlx::query_as(&format!(
        "UPDATE alerts SET acknowledged_at = now(), acknowledged_by = $3, updated_seq = $4,
             last_event = 'acknowledged'
         WHERE id = $1 AND organisation_id = $2 AND acknowledged_at IS NULL
         RETURNING {ALERT_COLUMNS}"
    ))
    .bind(id)
    .bind(user.organisation_id)
    .bind(user.id)
    .bind(seq)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(alert) = updated else {
        // Another dispatcher was quicker.
        drop(tx);
        return find(db, user, id).await;
    };
    set_seq(&mut tx, seq).await?;
    tx.commit().await?;
    tracing::info!(alert_id = id, user_id = user.id, "alert acknowledged");
    tracking.committed(Batch {
        first: seq,
        last: seq,
        events: alert.frames(seq, "acknowledged", |k| tracking.wants(k)),
    });
    Ok(alert)
}

/// A vehicle's own alert settings: the keys it sets otherwise, and what is in force for it.
async fn vehicle_settings(db: &PgPool, organisation_id: i64, id: i64) -> AppResult<Value> {
    let row: Option<(Value, Option<Value>)> = sqlx::query_as(
        "SELECT v.alert_overrides, COALESCE(o.settings->'alerts', '{}') || v.alert_overrides
         FROM vehicles v JOIN organisations o ON o.id = v.organisation_id
         WHERE v.id = $1 AND v.organisation_id = $2",
    )
    .bind(id)
    .bind(organisation_id)
    .fetch_optional(db)
    .await?;
    let (overrides, merged) = row.ok_or(AppError::NotFound("vehicle"))?;
    let effective: AlertSettings = stored_or_default(id, "alert settings", merged);
    Ok(json!({"overrides": overrides, "effective": effective}))
}

#[utoipa::path(
    get,
    path = "/vehicles/{id}/alert-settings",
    operation_id = "getVehicleAlertSettings",
    summary = "A vehicle's own alert settings",
    description = "Dispatchers and admins.",
    tag = "alerts",
    params(Id),
    responses(
        (status = 200, body = VehicleAlertSettings, description = "Its overrides and the settings in force for it."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn show_vehicle_settings(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<Value>> {
    user.require_dispatcher()?;
    Ok(Json(
        vehicle_settings(&state.db, user.organisation_id, id).await?,
    ))
}

/// Replaces the vehicle's overrides: an object of `alerts` settings keys (`{}` for none). Each
/// key and value is checked as the organisation's settings are.
#[utoipa::path(
    put,
    path = "/vehicles/{id}/alert-settings",
    operation_id = "setVehicleAlertSettings",
    summary = "Replace a vehicle's alert settings overrides",
    description = "Admins. An object of `alerts` settings keys (`{}` for none), each checked as the organisation's are (`400` naming the key, e.g. `alerts.off_route_s`, and saying what it accepts).",
    tag = "alerts",
    params(Id),
    request_body = AlertSettings,
    responses(
        (status = 200, body = VehicleAlertSettings, description = "Its overrides and the settings in force for it."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn set_vehicle_settings(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(overrides): ApiJson<Value>,
) -> AppResult<Json<Value>> {
    if user.role != Role::Admin {
        return Err(AppError::Forbidden("only an admin changes the settings"));
    }
    if !overrides.is_object() {
        return Err(AppError::validation(
            "",
            "the overrides must be a JSON object",
        ));
    }
    Settings::default().patched(json!({ "alerts": overrides }))?;
    let done = sqlx::query(
        "UPDATE vehicles SET alert_overrides = $3 WHERE id = $1 AND organisation_id = $2",
    )
    .bind(id)
    .bind(user.organisation_id)
    .bind(&overrides)
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(AppError::NotFound("vehicle"));
    }
    Ok(Json(
        vehicle_settings(&state.db, user.organisation_id, id).await?,
    ))
}
