//! Sign-in, sign-out and "who am I".
use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{session_from_headers, sign_out, verify_password, CurrentUser, Role, SESSION_COOKIE};
use crate::{
    auth::openapi::{SignedIn, User},
    error::openapi::{
        BadRequest, CommonErrors, Forbidden, Internal, RateLimited, TooLarge, Unauthorized,
        Unavailable, UnsupportedMediaType,
    },
    error::{ApiJson, AppError, AppResult},
    security::ClientIp,
    AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
}

/// A user as sign-in reads them.
struct Account {
    id: i64,
    organisation_id: i64,
    email: String,
    password_hash: String,
    role: String,
    organisation: String,
    disabled: bool,
    session_epoch: i32,
}

#[derive(Deserialize, ToSchema)]
struct Login {
    #[schema(max_length = 320)]
    email: String,
    #[schema(max_length = 1024)]
    password: String,
}

#[utoipa::path(
    post,
    path = "/auth/login",
    operation_id = "login",
    summary = "Sign in",
    tag = "auth",
    request_body = inline(Login),
    responses(
        (status = 200, body = inline(SignedIn), description = "Signed in. The JWT is also set as the `waymark_session` cookie (HttpOnly, SameSite=Lax)."),
        (status = 400, response = BadRequest),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = RateLimited),
        CommonErrors,
    ),
    security(),
)]
async fn login(
    State(state): State<AppState>,
    ClientIp(address): ClientIp,
    jar: CookieJar,
    ApiJson(body): ApiJson<Login>,
) -> AppResult<Response> {
    if body.email.len() > 320 || body.password.len() > 1024 {
        return Err(AppError::Unauthorized("wrong email or password"));
    }
    // Both limits count every attempt: guessing one account's password, and trying many
    // accounts from one address, are slowed alike.
    let limits = &state.limits;
    let fanout = state.tracking.fanout.as_deref();
    let account = body.email.trim().to_lowercase();
    limits
        .login_address
        .check_shared(fanout, "login-address", &address)
        .await
        .map_err(AppError::RateLimited)?;
    limits
        .login_account
        .check_shared(fanout, "login-account", &account)
        .await
        .map_err(AppError::RateLimited)?;
    let row = sqlx::query_as!(
        Account,
        "SELECT u.id, u.organisation_id, u.email, u.password_hash, u.role, o.name AS organisation,
                u.disabled, u.session_epoch
         FROM users u JOIN organisations o ON o.id = u.organisation_id
         WHERE lower(u.email) = lower($1)",
        body.email.trim()
    )
    .fetch_optional(&state.db)
    .await?;
    let Some(account) = row else {
        // Spend the same effort as a real check so timing does not reveal which emails exist.
        let _ = verify_password(body.password, DUMMY_HASH.into()).await;
        return Err(AppError::Unauthorized("wrong email or password"));
    };
    if !verify_password(body.password, account.password_hash).await? || account.disabled {
        return Err(AppError::Unauthorized("wrong email or password"));
    }
    let id = account.id;
    let role = Role::parse(&account.role)
        .ok_or_else(|| anyhow::anyhow!("user {id} has role {}", account.role))?;
    let user = CurrentUser {
        id,
        organisation_id: account.organisation_id,
        role,
        email: account.email,
        session_epoch: account.session_epoch,
        expires_at: chrono::Utc::now() + state.sessions.lifetime,
    };
    let organisation = account.organisation;
    signed_in(&state, jar, &user, &organisation, state.sessions.lifetime)
}

/// The answer to a successful sign-in: a session of `lifetime` as the HttpOnly cookie the pages
/// use and as a bearer token in the body, with who signed in.
pub(crate) fn signed_in(
    state: &AppState,
    jar: CookieJar,
    user: &CurrentUser,
    organisation: &str,
    lifetime: chrono::Duration,
) -> AppResult<Response> {
    let token = state.sessions.issue_for(user, lifetime)?;
    let cookie = Cookie::build((SESSION_COOKIE, token.clone()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.config.secure_cookies)
        .max_age(time_from(lifetime))
        .build();
    let body = json!({
        "token": token,
        "user": {
            "id": user.id, "email": user.email, "role": user.role,
            "organisation_id": user.organisation_id, "organisation": organisation,
        },
    });
    Ok((jar.add(cookie), Json(body)).into_response())
}

/// An argon2id hash of a random string, checked against when the email is unknown.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0ZdbR0hpGrdWkfRgy5ZOY0cYlHbmRxrR1E5s7yz+6Zk";

fn time_from(d: chrono::Duration) -> time::Duration {
    time::Duration::seconds(d.num_seconds())
}

#[utoipa::path(
    post,
    path = "/auth/logout",
    operation_id = "logout",
    summary = "Sign out this session",
    description = "Ends the session the request carries (bearer token or the session cookie) at once, on every instance: the token answers `401` from now on and WebSockets opened with it close with `1008`. The user's other sessions go on. The cookie is cleared. Answers `204` also without a valid session.",
    tag = "auth",
    responses(
        (status = 204, description = "Signed out; the cookie is cleared."),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security((), ("bearer" = []), ("cookie" = [])),
)]
/// Signs the request's session (bearer token or cookie) out, on every instance at once, and
/// clears the cookie. The user's other sessions go on. Answers `204` also when there was no
/// valid session to end.
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> AppResult<impl IntoResponse> {
    match session_from_headers(&state, &headers).await {
        Some(Ok(session)) => {
            sign_out(&state, &session).await?;
            tracing::info!(user = session.user.id, "signed out");
        }
        None | Some(Err(AppError::Unauthorized(_))) => {}
        Some(Err(e)) => return Err(e),
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    Ok((jar, StatusCode::NO_CONTENT))
}

#[utoipa::path(
    get,
    path = "/auth/me",
    operation_id = "me",
    summary = "The signed-in user",
    tag = "auth",
    responses(
        (status = 200, body = User, description = "The user."),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn me(user: CurrentUser) -> Json<CurrentUser> {
    Json(user)
}
