//! Sessions of signed-in people: a signed JWT, carried as a bearer token or the session cookie.
//! The signature and expiry are checked first; then the database, so that a session ends as soon
//! as it is signed out, or its user is disabled or signed out everywhere, and the role is the
//! current one.
use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts, HeaderMap},
};
use axum_extra::extract::CookieJar;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::{Revoked, Role};
use crate::{error::AppError, AppState};

pub use crate::security::SESSION_COOKIE;
/// Seconds a session is still accepted after its expiry, for clocks that disagree a little.
pub const LEEWAY_S: u64 = 5;

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
            sid: Some((rand::rngs::OsRng.next_u64() >> 1) as i64),
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
    fn verify(&self, token: &str) -> Result<Session, AppError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| AppError::Unauthorized("the session is invalid or has expired"))?;
        let c = data.claims;
        Ok(Session {
            // Sessions from before the claim are named by their token, which is as unique.
            id: c.sid.unwrap_or_else(|| {
                let digest = Sha256::digest(token.as_bytes());
                (u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) >> 1) as i64
            }),
            user: CurrentUser {
                id: c.sub,
                organisation_id: c.org,
                role: c.role,
                email: c.email,
                session_epoch: c.ver,
                expires_at: DateTime::from_timestamp(c.exp, 0).unwrap_or_default(),
            },
        })
    }
}

/// One sign-in: who, and which of their sessions it is (signing out ends this one alone).
#[derive(Debug, Clone)]
pub struct Session {
    pub id: i64,
    pub user: CurrentUser,
}

/// The session of a token: valid signature, not expired, not signed out, the user enabled and
/// not signed out everywhere since (its epoch is the user's current one). The role is read
/// fresh.
pub async fn authenticate_session(state: &AppState, token: &str) -> Result<Session, AppError> {
    let mut session = state.sessions.verify(token)?;
    session.user.role = role_now(&state.db, &session.user, Some(session.id))
        .await?
        .ok_or(AppError::Unauthorized(
            "this session was signed out or its account disabled; sign in again",
        ))?;
    Ok(session)
}

/// The user behind a session token, as [`authenticate_session`] checks it.
pub async fn authenticate(state: &AppState, token: &str) -> Result<CurrentUser, AppError> {
    Ok(authenticate_session(state, token).await?.user)
}

/// The role `user` holds now, if their session (`session`, when named) still holds: the user
/// exists, is enabled, and is at the session's epoch, and the session was not signed out.
pub async fn role_now(
    db: &PgPool,
    user: &CurrentUser,
    session: Option<i64>,
) -> Result<Option<Role>, AppError> {
    let role = sqlx::query_scalar!(
        "SELECT role FROM users
         WHERE id = $1 AND organisation_id = $2 AND NOT disabled AND session_epoch = $3
           AND NOT EXISTS (SELECT 1 FROM signed_out_sessions WHERE session_id = $4)",
        user.id,
        user.organisation_id,
        user.session_epoch,
        session
    )
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

/// The session of a request's bearer token or session cookie, if it carries either.
pub async fn session_from_headers(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<Result<Session, AppError>> {
    let token = session_token(headers)?;
    Some(authenticate_session(state, &token).await)
}

/// The user behind a request's bearer token or session cookie, if it carries either.
pub async fn from_headers(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<Result<CurrentUser, AppError>> {
    let session = session_from_headers(state, headers).await?;
    Some(session.map(|s| s.user))
}

/// Signs `session` out: from now on it is refused on every instance, and its live sockets close
/// (with the user's other sessions untouched). Kept until it would have expired anyway.
pub async fn sign_out(state: &AppState, session: &Session) -> Result<(), AppError> {
    sqlx::query!(
        "INSERT INTO signed_out_sessions (session_id, user_id, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        session.id,
        session.user.id,
        session.user.expires_at
    )
    .execute(&state.db)
    .await?;
    state.revoke(Revoked::Session(session.id)).await;
    Ok(())
}

/// Forgets signed-out sessions that have expired anyway; returns how many.
pub async fn forget_expired_sign_outs(db: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "DELETE FROM signed_out_sessions WHERE expires_at < now() - make_interval(secs => $1)",
        LEEWAY_S as f64
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
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
    /// This session's id, random: signing out ends it alone.
    #[serde(default)]
    sid: Option<i64>,
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
