//! Sessions of signed-in people: a signed JWT, carried as a bearer token or the session cookie.
//! The signature and expiry are checked first; then the database, so that a session ends as soon
//! as its user is disabled or signed out everywhere, and the role is the current one.
use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts, HeaderMap},
};
use axum_extra::extract::CookieJar;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Role;
use sqlx::PgPool;

use crate::{error::AppError, AppState};

pub const SESSION_COOKIE: &str = "waymark_session";

/// The signing keys, made once from the configured secret.
#[derive(Clone)]
pub struct SessionKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub lifetime: chrono::Duration,
}

impl SessionKeys {
    pub fn new(secret: &[u8], lifetime: chrono::Duration) -> Self {
        SessionKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            lifetime,
        }
    }

    pub fn issue(&self, user: &CurrentUser) -> anyhow::Result<String> {
        self.issue_for(user, self.lifetime)
    }

    /// A session that lasts `lifetime` instead of the configured sign-in lifetime.
    pub fn issue_for(
        &self,
        user: &CurrentUser,
        lifetime: chrono::Duration,
    ) -> anyhow::Result<String> {
        let now = Utc::now();
        let claims = Claims {
            sub: user.id,
            org: user.organisation_id,
            role: user.role,
            email: user.email.clone(),
            ver: user.session_epoch,
            iat: now.timestamp(),
            exp: (now + lifetime).timestamp(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The session a token claims, if its signature and expiry hold; [`authenticate`] also asks
    /// the database whether it still does.
    fn verify(&self, token: &str) -> Result<CurrentUser, AppError> {
        let validation = Validation::new(Algorithm::HS256);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| AppError::Unauthorized("the session is invalid or has expired"))?;
        let c = data.claims;
        Ok(CurrentUser {
            id: c.sub,
            organisation_id: c.org,
            role: c.role,
            email: c.email,
            session_epoch: c.ver,
            expires_at: DateTime::from_timestamp(c.exp, 0).unwrap_or_default(),
        })
    }
}

/// The user behind a session token: valid signature, not expired, the user enabled and the
/// session not signed out (its epoch is the user's current one). The role is read fresh.
pub async fn authenticate(state: &AppState, token: &str) -> Result<CurrentUser, AppError> {
    let mut user = state.sessions.verify(token)?;
    user.role = role_now(&state.db, &user)
        .await?
        .ok_or(AppError::Unauthorized(
            "this session was signed out or its account disabled; sign in again",
        ))?;
    Ok(user)
}

/// The role `user` holds now, if their session still holds: the user exists, is enabled, and is
/// at the session's epoch.
pub async fn role_now(db: &PgPool, user: &CurrentUser) -> Result<Option<Role>, AppError> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT role FROM users
         WHERE id = $1 AND organisation_id = $2 AND NOT disabled AND session_epoch = $3",
    )
    .bind(user.id)
    .bind(user.organisation_id)
    .bind(user.session_epoch)
    .fetch_optional(db)
    .await?;
    role.map(|r| {
        Role::parse(&r).ok_or_else(|| anyhow::anyhow!("user {} has role {r}", user.id).into())
    })
    .transpose()
}

/// The session token a request carries, as a bearer token or the session cookie.
fn session_token(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(token) = bearer {
        return Some(token.trim().to_owned());
    }
    let jar = CookieJar::from_headers(headers);
    jar.get(SESSION_COOKIE).map(|c| c.value().to_owned())
}

/// The user behind a request's bearer token or session cookie, if it carries either.
pub async fn from_headers(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<Result<CurrentUser, AppError>> {
    let token = session_token(headers)?;
    Some(authenticate(state, &token).await)
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: i64,
    org: i64,
    role: Role,
    email: String,
    /// The user's session epoch when this was issued (sessions from before this claim: 0).
    #[serde(default)]
    ver: i32,
    iat: i64,
    exp: i64,
}

/// A signed-in person. Extracting it answers `401` when there is no valid session.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentUser {
    pub id: i64,
    pub organisation_id: i64,
    pub role: Role,
    pub email: String,
    /// Sessions issued at another epoch of this user are over.
    #[serde(skip)]
    pub session_epoch: i32,
    /// When this session ends (a live socket closes then).
    #[serde(skip)]
    pub expires_at: DateTime<Utc>,
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        from_headers(state, &parts.headers)
            .await
            .unwrap_or(Err(AppError::Unauthorized("sign in first")))
    }
}
