//! Share links: a customer follows one shipment (and, if the link allows, chats) without an
//! account. Only the link's hash is stored; revoking one closes its live sockets at once.
use axum::{
    extract::State,
    http::StatusCode,
    routing::{delete, get, post},
    Json, Router,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::load_visible;
use crate::{
    auth::{token, CurrentUser, Revoked, Viewer},
    error::openapi::{BadRequest, CommonErrors, Forbidden, Id, NotFound, TooLarge},
    error::{from_json, ApiPath, AppError, AppResult},
    fleet::openapi::Share,
    AppState,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/shipments/{id}/share", post(share))
        .route("/shipments/{id}/shares", get(list))
        .route("/shipments/{id}/shares/{share_id}", delete(revoke_by_id))
        .route("/shares/{token}", delete(revoke_share))
}

/// A share link as its shipment's dispatchers see it later: never its token, which is shown
/// once, when it is made (only its hash is kept).
#[derive(Serialize, ToSchema)]
pub(crate) struct ShareLink {
    id: i64,
    created_at: DateTime<Utc>,
    /// The user who made it.
    #[schema(required = true)]
    created_by: Option<i64>,
    expires_at: DateTime<Utc>,
    #[schema(required = true)]
    revoked_at: Option<DateTime<Utc>>,
    /// Whether its holder may write in the shipment's chat.
    chat: bool,
    /// Neither expired nor revoked.
    active: bool,
}

#[utoipa::path(
    get,
    path = "/shipments/{id}/shares",
    operation_id = "listShares",
    summary = "List a shipment's share links",
    description = "Dispatchers and admins. Newest first, expired and revoked ones included; the tokens are not shown again.",
    tag = "shipments",
    params(Id),
    responses(
        (status = 200, body = Vec<ShareLink>, description = "The shipment's share links."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<Vec<ShareLink>>> {
    user.require_dispatcher()?;
    load_visible(&state.db, &Viewer::User(user.clone()), id).await?;
    let links = sqlx::query_as!(
        ShareLink,
        r#"SELECT id AS "id!", created_at, created_by, expires_at, revoked_at, chat,
                  (revoked_at IS NULL AND expires_at > now()) AS "active!"
           FROM share_links WHERE shipment_id = $1 AND organisation_id = $2
           ORDER BY created_at DESC, id DESC"#,
        id,
        user.organisation_id
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(links))
}

#[utoipa::path(
    delete,
    path = "/shipments/{id}/shares/{share_id}",
    operation_id = "revokeShareById",
    summary = "Revoke one of a shipment's share links",
    description = "Dispatchers and admins. For the links listed by `GET /shipments/{id}/shares`, whose tokens are not shown again.",
    tag = "shipments",
    params(Id, ("share_id" = i64, Path, description = "The link's `id`.")),
    responses(
        (status = 204, description = "Revoked: sockets opened with the link close with 1008 at once."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn revoke_by_id(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath((id, share_id)): ApiPath<(i64, i64)>,
) -> AppResult<StatusCode> {
    user.require_dispatcher()?;
    let revoked = sqlx::query_scalar!(
        r#"UPDATE share_links SET revoked_at = COALESCE(revoked_at, now())
           WHERE id = $1 AND shipment_id = $2 AND organisation_id = $3 RETURNING id AS "id!""#,
        share_id,
        id,
        user.organisation_id
    )
    .fetch_optional(&state.db)
    .await?;
    revoked.ok_or(AppError::NotFound("share link"))?;
    state.revoke(Revoked::Share(share_id)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Share links carry 144 random bits.
const SHARE_TOKEN_BYTES: usize = 18;

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
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = TooLarge),
        CommonErrors,
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
    sqlx::query!(
        "INSERT INTO share_links (token_hash, organisation_id, shipment_id, created_by, expires_at, chat)
         VALUES ($1, $2, $3, $4, $5, $6)",
        token::hash(&share_token),
        user.organisation_id,
        id,
        user.id,
        expires_at,
        chat
    )
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
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn revoke_share(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(share_token): ApiPath<String>,
) -> AppResult<StatusCode> {
    user.require_dispatcher()?;
    let id = sqlx::query_scalar!(
        "UPDATE share_links SET revoked_at = now()
         WHERE token_hash = $1 AND organisation_id = $2 AND revoked_at IS NULL RETURNING id",
        token::hash(&share_token),
        user.organisation_id
    )
    .fetch_optional(&state.db)
    .await?;
    let id = id.ok_or(AppError::NotFound("share link"))?;
    // Whoever is watching through the link is cut off now, not at their next request.
    state.revoke(Revoked::Share(id)).await;
    Ok(StatusCode::NO_CONTENT)
}
