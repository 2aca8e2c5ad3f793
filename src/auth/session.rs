//! Sessions of signed-in people: a signed JWT, carried as a bearer token or the session cookie.
use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header, request::Parts, HeaderMap},
};
use axum_extra::extract::CookieJar;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Role;
use crate::error::AppError;

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
            iat: now.timestamp(),
            exp: (now + lifetime).timestamp(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    pub fn verify(&self, token: &str) -> Result<CurrentUser, AppError> {
        let validation = Validation::new(Algorithm::HS256);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| AppError::Unauthorized("the session is invalid or has expired"))?;
        let c = data.claims;
        Ok(CurrentUser {
            id: c.sub,
            organisation_id: c.org,
            role: c.role,
            email: c.email,
        })
    }

    /// The user behind a request's bearer token or session cookie, if any credential is present.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<Result<CurrentUser, AppError>> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            return Some(self.verify(token.trim()));
        }
        let jar = CookieJar::from_headers(headers);
        jar.get(SESSION_COOKIE).map(|c| self.verify(c.value()))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: i64,
    org: i64,
    role: Role,
    email: String,
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
}

impl<S> FromRequestParts<S> for CurrentUser
where
    SessionKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        SessionKeys::from_ref(state)
            .from_headers(&parts.headers)
            .unwrap_or(Err(AppError::Unauthorized("sign in first")))
    }
}
