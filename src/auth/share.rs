//! Share links: read-only access to one shipment for someone without an account.
use axum::{
    extract::{FromRequestParts, Query},
    http::request::Parts,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use super::{from_headers, token, Viewer};
use crate::{error::AppError, AppState};

/// What a valid, unexpired, unrevoked share link grants.
#[derive(Debug, Clone)]
pub struct ShareAccess {
    /// The link's number, which names it to other instances when it is revoked.
    pub id: i64,
    pub organisation_id: i64,
    pub shipment_id: i64,
    /// The dispatcher let this link's holder chat with the driver and dispatch.
    pub chat: bool,
    /// Names the link without revealing it (the first bytes of its hash, in hex).
    pub label: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct ShareQuery {
    share: Option<String>,
}

/// A share link that still opens: not revoked, not expired.
const OPEN: &str = "revoked_at IS NULL AND expires_at > now()";

/// The stored link, before its label is made from the token's hash.
#[derive(sqlx::FromRow)]
struct ShareRow {
    id: i64,
    organisation_id: i64,
    shipment_id: i64,
    chat: bool,
    expires_at: DateTime<Utc>,
}

impl ShareAccess {
    /// Whether this link still opens (a live socket re-checks it).
    pub async fn still_open(&self, pool: &PgPool) -> Result<bool, sqlx::Error> {
        let open: Option<bool> = sqlx::query_scalar(&format!(
            "SELECT true FROM share_links WHERE id = $1 AND {OPEN}"
        ))
        .bind(self.id)
        .fetch_optional(pool)
        .await?;
        Ok(open.is_some())
    }

    pub async fn lookup(pool: &PgPool, share_token: &str) -> Result<ShareAccess, AppError> {
        let hash = token::hash(share_token);
        let row: Option<ShareRow> = sqlx::query_as(&format!(
            "SELECT id, organisation_id, shipment_id, chat, expires_at FROM share_links
             WHERE token_hash = $1 AND {OPEN}"
        ))
        .bind(&hash)
        .fetch_optional(pool)
        .await?;
        let row = row.ok_or(AppError::Unauthorized(
            "this share link is invalid or has expired",
        ))?;
        Ok(ShareAccess {
            id: row.id,
            organisation_id: row.organisation_id,
            shipment_id: row.shipment_id,
            chat: row.chat,
            label: hash[..8].iter().map(|b| format!("{b:02x}")).collect(),
            expires_at: row.expires_at,
        })
    }
}

/// `?share=<token>` if present, else the signed-in user.
impl FromRequestParts<AppState> for Viewer {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Query(q) = Query::<ShareQuery>::try_from_uri(&parts.uri)
            .map_err(|_| AppError::Malformed("the query string is malformed".into()))?;
        if let Some(share) = q.share {
            return Ok(Viewer::Share(ShareAccess::lookup(&state.db, &share).await?));
        }
        from_headers(state, &parts.headers)
            .await
            .unwrap_or(Err(AppError::Unauthorized("sign in first")))
            .map(Viewer::User)
    }
}
