//! The alerts API: list and filter, read one, acknowledge. Acknowledging is an event like any
//! other (committed through `tracking::EventTx`, published on `alerts` and the shipment's topic),
//! so every dispatcher's screen hears of it at once, on every instance.
use axum::{
    extract::State,
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use utoipa::IntoParams;

use super::{store, Alert, AlertChange, AlertEvent, Rule, ALERT_COLUMNS};
use crate::{
    alerts::openapi::AlertList,
    auth::{CurrentUser, Role},
    error::openapi::{BadRequest, CommonErrors, Forbidden, Id, NotFound},
    error::{ApiPath, ApiQuery, AppError, AppResult},
    tracking::{EventTx, Tracking},
    AppState,
};

const MAX_LIMIT: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/alerts", get(list))
        .route("/alerts/{id}", get(get_one))
        .route("/alerts/{id}/acknowledge", post(acknowledge_handler))
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
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
)]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> AppResult<Json<Value>> {
    let rule = q
        .rule
        .as_deref()
        .map(|r| {
            Rule::parse(r).ok_or_else(|| {
                AppError::validation(
                    "rule",
                    "rule must be geofence_enter, geofence_exit, geofence_dwell, overspeed, \
                     stopped, silent, off_route, arrived or late",
                )
            })
        })
        .transpose()?;
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
    .bind(rule)
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
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
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
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
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
    let mut tx = EventTx::begin(db).await?;
    let seq = tx.next_seq();
    let Some(alert) = store::acknowledge(&mut tx, id, user, seq).await? else {
        // Another dispatcher was quicker.
        drop(tx);
        return find(db, user, id).await;
    };
    tx.push(AlertChange::at(
        seq,
        AlertEvent::Acknowledged,
        alert.clone(),
    ));
    let committed = tx.commit().await?;
    tracing::info!(alert_id = id, user_id = user.id, "alert acknowledged");
    committed.publish(tracking);
    Ok(alert)
}
