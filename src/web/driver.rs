//! The driver's side: what a signed-in driver is assigned to, the positions their phone's
//! browser sends, and one-time device links (shown as QR codes) that sign a phone in as a driver.
use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{header, HeaderMap, StatusCode},
    response::Response,
    routing::{get, post},
    Json, Router,
};
use axum_extra::extract::CookieJar;
use chrono::{DateTime, Duration, Utc};
use qrcode::{render::svg, QrCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::openapi::{SignedIn, User},
    auth::{signed_in, token, CurrentUser, Device, Role, SpeedUnit, Viewer},
    error::openapi::{
        BadRequest, CommonErrors, Error, Forbidden, Internal, NotFound, RateLimited, TooLarge,
        Unavailable, UnsupportedMediaType,
    },
    error::{ApiJson, ApiPath, ApiQuery, AppError, AppResult},
    fleet::shipments::{self, Shipment, ShipmentStatus},
    ingest,
    ingest::openapi::{IngestReply, Positions},
    security::admit_ingest,
    AppState,
};

/// How long a device link can be opened after the dispatcher made it.
const LINK_LIFETIME: Duration = Duration::minutes(15);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/driver", get(assignment))
        .route("/driver/positions", post(post_positions))
        .route("/users/{id}/device-link", post(create_link))
        .route("/auth/device-link", post(redeem_link))
}

#[derive(Serialize, ToSchema)]
struct Assignment {
    #[schema(value_type = User)]
    user: CurrentUser,
    /// The active (planned or in transit) shipment assigned to this driver, if any.
    #[schema(required = true)]
    shipment: Option<Shipment>,
    #[schema(inline, required = true)]
    vehicle: Option<AssignedVehicle>,
}

#[derive(Serialize, ToSchema)]
struct AssignedVehicle {
    id: i64,
    name: String,
}

/// The signed-in driver's active shipment and its vehicle.
#[utoipa::path(
    get,
    path = "/driver",
    operation_id = "getAssignment",
    summary = "The signed-in driver's active shipment and its vehicle",
    tag = "driver",
    responses(
        (status = 200, body = inline(Assignment), description = "`shipment` and `vehicle` are null when nothing is assigned."),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn assignment(
    State(state): State<AppState>,
    user: CurrentUser,
) -> AppResult<Json<Assignment>> {
    let active = sqlx::query!(
        "SELECT id, vehicle_id FROM shipments
         WHERE driver_id = $1 AND organisation_id = $2 AND status = ANY($3)
         ORDER BY created_at DESC, id DESC LIMIT 1",
        user.id,
        user.organisation_id,
        &ShipmentStatus::ACTIVE as _
    )
    .fetch_optional(&state.db)
    .await?;
    let viewer = Viewer::User(user.clone());
    let (shipment, vehicle) = match active {
        Some(active) => {
            let shipment = shipments::load_visible(&state.db, &viewer, active.id).await?;
            let vehicle = match active.vehicle_id {
                Some(v) => {
                    sqlx::query_as!(
                        AssignedVehicle,
                        "SELECT id, name FROM vehicles WHERE id = $1",
                        v
                    )
                    .fetch_optional(&state.db)
                    .await?
                }
                None => None,
            };
            (Some(shipment), vehicle)
        }
        None => (None, None),
    };
    Ok(Json(Assignment {
        user,
        shipment,
        vehicle,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PositionsQuery {
    /// The shipment the phone was sharing for when it took these fixes (one assigned to this
    /// driver); the active one if absent.
    shipment: Option<i64>,
}

/// Positions from the driver's phone page, in the native format, for the vehicle of the driver's
/// shipment. A fix queued on the phone while a shipment was active still lands on its vehicle
/// after the shipment ended, so nothing the phone recorded is lost; with `?shipment=` it joins
/// that shipment if the shipment's time window holds it, and never another.
#[utoipa::path(
    post,
    path = "/driver/positions",
    operation_id = "postDriverPositions",
    summary = "Post positions from the driver's phone page",
    description = "The native format of `POST /positions`, authenticated as the signed-in driver instead of with an ingest token. The positions go to the vehicle of `shipment` (the shipment the phone shared for when it took them), or of the driver's active shipment without it; a shipment that has ended still takes the fixes queued during it. Re-sends are stored once, so the phone can repeat a batch whose answer it never saw.",
    tag = "driver",
    tags = ["ingest"],
    params(PositionsQuery),
    request_body = inline(Positions),
    responses(
        (status = 200, body = IngestReply, description = "Every position is committed to the database."),
        (status = 404, body = Error, description = "`not_found`: `shipment` is not assigned to this driver, or has no vehicle."),
        (status = 409, body = Error, description = "`conflict`: no `shipment` given and no active shipment with a vehicle is assigned to this driver."),
        (status = 400, response = BadRequest),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = RateLimited),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn post_positions(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<PositionsQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Json<Value>> {
    let device = driven_vehicle(&state.db, &user, q.shipment).await?;
    admit_ingest(&state, device.vehicle_id)?;
    let positions = ingest::read_native(&headers, body)?;
    let outcome = state
        .writer
        .write_for(device, q.shipment, positions)
        .await?;
    Ok(ingest::reply(&outcome))
}

/// The vehicle of `shipment` (or of the driver's active shipment) if it is this driver's.
async fn driven_vehicle(
    db: &PgPool,
    user: &CurrentUser,
    shipment: Option<i64>,
) -> AppResult<Device> {
    let device = sqlx::query_as!(
        Device,
        r#"SELECT v.id AS vehicle_id, v.organisation_id, v.speed_unit AS "speed_unit: SpeedUnit",
                  v.retired_at IS NOT NULL AS "retired!"
           FROM shipments s
           JOIN vehicles v ON v.id = s.vehicle_id
           JOIN users u ON u.id = s.driver_id
           WHERE s.driver_id = $1 AND s.organisation_id = $2 AND NOT u.disabled
             AND CASE WHEN $3::bigint IS NULL THEN s.status = ANY($4) ELSE s.id = $3 END
           ORDER BY s.created_at DESC, s.id DESC LIMIT 1"#,
        user.id,
        user.organisation_id,
        shipment,
        &ShipmentStatus::ACTIVE as _
    )
    .fetch_optional(db)
    .await?;
    match (device, shipment) {
        (Some(device), _) if device.retired => Err(AppError::VehicleRetired),
        (Some(device), _) => Ok(device),
        (None, Some(_)) => Err(AppError::NotFound("shipment")),
        (None, None) => Err(AppError::Conflict(
            "no active shipment with a vehicle is assigned to you".into(),
        )),
    }
}

#[derive(Serialize, ToSchema)]
struct DeviceLink {
    /// Opening this on the phone offers to sign in as the driver; it works once.
    url: String,
    expires_at: DateTime<Utc>,
    /// The URL as a QR code, an SVG document, for the phone's camera.
    qr_svg: String,
}

/// A one-time link that signs a phone in as driver `id`, for a dispatcher to show.
#[utoipa::path(
    post,
    path = "/users/{id}/device-link",
    operation_id = "createDeviceLink",
    summary = "A one-time link (and QR code) that signs a driver's phone in (dispatcher)",
    description = "Valid for 15 minutes and for one use. Its address is `WAYMARK_PUBLIC_URL` when set, else the scheme and host of this request.",
    tag = "driver",
    params(("id" = i64, Path, description = "A driver of the caller's organisation.", minimum = 1, maximum = 9_223_372_036_854_775_807_i64)),
    responses(
        (status = 201, body = DeviceLink, description = "The link."),
        (status = 409, body = Error, description = "`conflict`: the user is not a driver, or is disabled."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn create_link(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> AppResult<(StatusCode, Json<DeviceLink>)> {
    user.require_dispatcher()?;
    let driver = sqlx::query!(
        "SELECT role, disabled FROM users WHERE id = $1 AND organisation_id = $2",
        id,
        user.organisation_id
    )
    .fetch_optional(&state.db)
    .await?;
    match driver {
        None => return Err(AppError::NotFound("user")),
        Some(d) if d.role != Role::Driver.as_str() => {
            return Err(AppError::Conflict(
                "device links are for drivers; this user is not one".into(),
            ))
        }
        Some(d) if d.disabled => return Err(AppError::Conflict("this user is disabled".into())),
        Some(_) => {}
    }
    let code = token::generate(24);
    let expires_at = sqlx::query_scalar!(
        "INSERT INTO device_links (token_hash, organisation_id, user_id, created_by, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at",
        token::hash(&code),
        user.organisation_id,
        id,
        user.id,
        LINK_LIFETIME.num_seconds() as f64
    )
    .fetch_one(&state.db)
    .await?;
    let url = format!(
        "{}/driver/link/{code}",
        public_base(state.config.public_url.as_deref(), &headers)
    );
    let qr_svg = QrCode::new(url.as_bytes())
        .map_err(|e| anyhow::anyhow!("encoding a QR code: {e}"))?
        .render::<svg::Color>()
        .min_dimensions(240, 240)
        .build();
    tracing::info!(driver_id = id, by = user.id, "device link created");
    Ok((
        StatusCode::CREATED,
        Json(DeviceLink {
            url,
            expires_at,
            qr_svg,
        }),
    ))
}

/// Where people reach this server: the configured public URL, else the request's own host (and
/// the scheme a proxy says it was reached by).
fn public_base(configured: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(url) = configured.filter(|u| !u.is_empty()) {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:8080");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

#[derive(Deserialize, ToSchema)]
struct Redeem {
    /// The last segment of the link's URL.
    #[schema(max_length = 128)]
    code: String,
}

/// The driver a device link signs in, read as the link is used.
struct LinkedDriver {
    id: i64,
    organisation_id: i64,
    email: String,
    role: String,
    organisation: String,
    session_epoch: i32,
}

/// Opens a device link: marks it used (it works once) and signs the phone in as its driver for
/// the device session lifetime.
#[utoipa::path(
    post,
    path = "/auth/device-link",
    operation_id = "redeemDeviceLink",
    summary = "Open a device link: sign the phone in as its driver",
    tag = "auth",
    tags = ["driver"],
    request_body = inline(Redeem),
    responses(
        (status = 200, body = inline(SignedIn), description = "Signed in as the link's driver for `WAYMARK_DEVICE_SESSION_DAYS` (30 by default); the link is used up."),
        (status = 401, body = Error, description = "`unauthorized`: the link is unknown, used, expired, or its driver is disabled."),
        (status = 400, response = BadRequest),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(),
)]
async fn redeem_link(
    State(state): State<AppState>,
    jar: CookieJar,
    ApiJson(body): ApiJson<Redeem>,
) -> AppResult<Response> {
    if body.code.len() > 128 {
        return Err(AppError::Unauthorized(
            "this device link is invalid, used or expired",
        ));
    }
    let row = sqlx::query_as!(
        LinkedDriver,
        "UPDATE device_links l SET used_at = now()
         FROM users u JOIN organisations o ON o.id = u.organisation_id
         WHERE l.token_hash = $1 AND l.used_at IS NULL AND l.expires_at > now()
           AND u.id = l.user_id AND NOT u.disabled
         RETURNING u.id, u.organisation_id, u.email, u.role, o.name AS organisation,
             u.session_epoch",
        token::hash(&body.code)
    )
    .fetch_optional(&state.db)
    .await?;
    let row = row.ok_or(AppError::Unauthorized(
        "this device link is invalid, used or expired",
    ))?;
    let role = Role::parse(&row.role)
        .ok_or_else(|| anyhow::anyhow!("user {} has role {}", row.id, row.role))?;
    let lifetime = Duration::days(state.config.device_session_days.into());
    let user = CurrentUser {
        id: row.id,
        organisation_id: row.organisation_id,
        role,
        email: row.email,
        session_epoch: row.session_epoch,
        expires_at: Utc::now() + lifetime,
    };
    tracing::info!(driver_id = user.id, "device link opened");
    signed_in(&state, jar, &user, &row.organisation, lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_use_the_configured_address_or_the_requests_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "fleet.test:8080".parse().unwrap());
        assert_eq!(public_base(None, &headers), "http://fleet.test:8080");
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(public_base(None, &headers), "https://fleet.test:8080");
        assert_eq!(
            public_base(Some("https://track.example.com/"), &headers),
            "https://track.example.com"
        );
    }
}
