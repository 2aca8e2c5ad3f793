//! The organisation's people: listing them (for assigning drivers), and for admins adding them,
//! changing their role or password, disabling them, and signing them out everywhere. Every
//! change that takes access away ends the user's sessions and closes their live sockets at once.
//! Creating people is here too, for `waymark user create`, `POST /users` and the tests.
use axum::{
    extract::State,
    http::StatusCode,
    routing::{delete, get, patch},
    Json, Router,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::{self, hash_password, CurrentUser, Revoked, Role},
    error::openapi::{
        BadRequest, CommonErrors, Conflict, Forbidden, Id, NotFound, TooLarge, UnsupportedMediaType,
    },
    error::{ApiJson, ApiPath, ApiQuery, AppError, AppResult},
    AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{id}", patch(update))
        .route("/users/{id}/sessions", delete(sign_out_everywhere))
}

const MAX_EMAIL: usize = 320;
const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 1024;

#[derive(Serialize)]
pub struct User {
    id: i64,
    email: String,
    role: String,
    disabled: bool,
    created_at: DateTime<Utc>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only users with this role.
    role: Option<Role>,
}

#[utoipa::path(
    get,
    path = "/users",
    operation_id = "listUsers",
    summary = "List the organisation's users",
    description = "Dispatchers and admins.",
    tag = "users",
    params(ListQuery),
    responses(
        (status = 200, body = Vec<crate::auth::openapi::User>, description = "Ordered by email."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> AppResult<Json<Vec<User>>> {
    user.require_dispatcher()?;
    let rows = sqlx::query_as!(
        User,
        "SELECT id, email, role, disabled, created_at FROM users
         WHERE organisation_id = $1 AND ($2::text IS NULL OR role = $2) ORDER BY email",
        user.organisation_id,
        q.role.map(Role::as_str)
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(rows))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "driver@example.com", "password": "a long passphrase", "role": "driver"}))]
struct NewUser {
    #[schema(format = Email, max_length = 320)]
    email: String,
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    role: Role,
}

fn check_email(email: &str) -> AppResult<()> {
    let ok = email.len() <= MAX_EMAIL
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(AppError::validation(
            "email",
            format!("email must be an address like name@example.com, at most {MAX_EMAIL} bytes"),
        ))
    }
}

fn check_password(password: &str) -> AppResult<()> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(AppError::validation(
            "password",
            format!(
                "password must be at least {MIN_PASSWORD} characters and at most {MAX_PASSWORD} bytes"
            ),
        ));
    }
    Ok(())
}

fn email_taken(e: sqlx::Error) -> AppError {
    match e.as_database_error().and_then(|d| d.constraint()) {
        Some("users_email_key") => AppError::Conflict("a user with this email exists".into()),
        _ => e.into(),
    }
}

#[utoipa::path(
    post,
    path = "/users",
    operation_id = "createUser",
    summary = "Add a person to the organisation",
    description = "Admins. The new user signs in with the given password.",
    tag = "users",
    request_body = inline(NewUser),
    responses(
        (status = 201, body = crate::auth::openapi::User, description = "Created."),
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
    admin: CurrentUser,
    ApiJson(body): ApiJson<NewUser>,
) -> AppResult<(StatusCode, Json<User>)> {
    require_admin(&admin)?;
    let email = body.email.trim();
    check_email(email)?;
    check_password(&body.password)?;
    let hash = auth::hash_password(body.password).await?;
    let mut conn = state.db.acquire().await?;
    let id = auth::insert_user(&mut conn, admin.organisation_id, email, &hash, body.role)
        .await
        .map_err(email_taken)?;
    tracing::info!(
        user = id,
        by = admin.id,
        role = body.role.as_str(),
        "user created"
    );
    Ok((
        StatusCode::CREATED,
        Json(load(&mut conn, &admin, id).await?),
    ))
}

/// At least one of the fields. (Not said as `min_properties`: utoipa 5 writes that as
/// `maxProperties`.)
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    description = "At least one of the fields.",
    example = json!({"disabled": true})
)]
struct Change {
    role: Option<Role>,
    disabled: Option<bool>,
    #[schema(min_length = 8, max_length = 1024)]
    password: Option<String>,
}

#[utoipa::path(
    patch,
    path = "/users/{id}",
    operation_id = "updateUser",
    summary = "Change a user's role, password or disabled state",
    description = "Admins, for users of their organisation. Any change ends every session of the user and closes their live sockets (close code 1008), on every instance; they sign in again. Admins cannot disable or demote themselves (409).",
    tag = "users",
    params(Id),
    request_body = inline(Change),
    responses(
        (status = 200, body = crate::auth::openapi::User, description = "The user as now stored."),
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
/// Changes a user; any change ends their sessions (a session names its role, and a new password
/// or a disabled account must lock out whoever held the old one).
async fn update(
    State(state): State<AppState>,
    admin: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(change): ApiJson<Change>,
) -> AppResult<Json<User>> {
    require_admin(&admin)?;
    if change.role.is_none() && change.disabled.is_none() && change.password.is_none() {
        return Err(AppError::validation(
            "role",
            "give at least one of role, disabled and password",
        ));
    }
    if id == admin.id
        && (change.disabled == Some(true) || change.role.is_some_and(|r| r != Role::Admin))
    {
        return Err(AppError::Conflict(
            "admins cannot disable or demote themselves; ask another admin".into(),
        ));
    }
    let hash = match change.password {
        Some(p) => {
            check_password(&p)?;
            Some(auth::hash_password(p).await?)
        }
        None => None,
    };
    let mut conn = state.db.acquire().await?;
    let done = sqlx::query!(
        "UPDATE users SET role = coalesce($3, role), disabled = coalesce($4, disabled),
                password_hash = coalesce($5, password_hash), session_epoch = session_epoch + 1
         WHERE id = $1 AND organisation_id = $2",
        id,
        admin.organisation_id,
        change.role.map(Role::as_str),
        change.disabled,
        hash
    )
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(AppError::NotFound("user"));
    }
    state.revoke(Revoked::User(id)).await;
    tracing::info!(user = id, by = admin.id, "user changed; sessions ended");
    Ok(Json(load(&mut conn, &admin, id).await?))
}

#[utoipa::path(
    delete,
    path = "/users/{id}/sessions",
    operation_id = "signOutEverywhere",
    summary = "End every session of a user",
    description = "The user themself, or an admin of their organisation: every session token and session cookie of the user stops working, and their live sockets close with 1008, on every instance.",
    tag = "users",
    params(Id),
    responses(
        (status = 204, description = "Signed out everywhere."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
/// Ends every session of a user (a lost phone, a shared computer): admins for anyone in their
/// organisation, everyone for themselves.
async fn sign_out_everywhere(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<StatusCode> {
    if id != user.id {
        require_admin(&user)?;
    }
    let done = sqlx::query!(
        "UPDATE users SET session_epoch = session_epoch + 1 WHERE id = $1 AND organisation_id = $2",
        id,
        user.organisation_id
    )
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(AppError::NotFound("user"));
    }
    state.revoke(Revoked::User(id)).await;
    tracing::info!(user = id, by = user.id, "signed out everywhere");
    Ok(StatusCode::NO_CONTENT)
}

fn require_admin(user: &CurrentUser) -> AppResult<()> {
    if user.role == Role::Admin {
        Ok(())
    } else {
        Err(AppError::Forbidden("this needs an admin"))
    }
}

async fn load(conn: &mut PgConnection, admin: &CurrentUser, id: i64) -> AppResult<User> {
    sqlx::query_as!(
        User,
        "SELECT id, email, role, disabled, created_at FROM users
         WHERE id = $1 AND organisation_id = $2",
        id,
        admin.organisation_id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(AppError::NotFound("user"))
}

/// Creates a user, and its organisation if there is none of that name. Returns the user's id.
pub async fn create_user(
    pool: &PgPool,
    organisation: &str,
    email: &str,
    password: &str,
    role: Role,
) -> anyhow::Result<i64> {
    let hash = hash_password(password.to_owned()).await?;
    let mut tx = pool.begin().await?;
    let org_id = sqlx::query_scalar!(
        "INSERT INTO organisations (name) VALUES ($1)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        organisation.trim()
    )
    .fetch_one(&mut *tx)
    .await?;
    let id = insert_user(&mut tx, org_id, email, &hash, role).await?;
    tx.commit().await?;
    Ok(id)
}

/// Stores a user of organisation `org_id` with an already hashed password. Returns the id; an
/// email in use (whatever its case) fails on the unique index `users_email_key`.
pub async fn insert_user(
    conn: &mut PgConnection,
    org_id: i64,
    email: &str,
    password_hash: &str,
    role: Role,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO users (organisation_id, email, password_hash, role) VALUES ($1, $2, $3, $4)
         RETURNING id",
        org_id,
        email.trim(),
        password_hash,
        role.as_str()
    )
    .fetch_one(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_passwords_are_checked() {
        for good in ["a@b", "driver.one@fleet.example.com"] {
            assert!(check_email(good).is_ok(), "{good}");
        }
        let long = format!("{}@x.example", "a".repeat(MAX_EMAIL));
        for bad in [
            "",
            "nobody",
            "@x",
            "x@",
            "a@b@c",
            "a b@c",
            "a\u{7}@b",
            long.as_str(),
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("12345678").is_ok());
        assert!(check_password("ééééééé").is_err(), "7 characters");
        assert!(check_password(&"x".repeat(MAX_PASSWORD + 1)).is_err());
    }
}
