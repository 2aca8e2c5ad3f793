//! The one error type of the HTTP API, and the JSON extractor whose rejections speak it.
//!
//! Every error answers `{"error":{"code","message","field"?,"index"?}}`. Internal causes are
//! logged once, here, and never shown to the client.
pub mod openapi;

use axum::{
    extract::{rejection::JsonRejection, FromRequest, FromRequestParts, Path, Query, Request},
    http::request::Parts,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    Validation {
        field: String,
        message: String,
        index: Option<usize>,
    },
    #[error("{0}")]
    Malformed(String),
    /// Items of a file that are not valid (`total`, the first of them `listed`), each named by
    /// its position: nothing of it was stored. The first one's index is the error's `index`.
    #[error("{total} of the points are not valid; nothing was stored")]
    Points {
        total: usize,
        listed: Vec<PointError>,
    },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// A conflict that one input field is at fault for (a reference taken, a vehicle busy).
    #[error("{message}")]
    ConflictAt {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    TooLarge(String),
    /// A device of a retired vehicle posted: `410`, which says it is for good.
    #[error("this vehicle is retired: its tracker should stop sending (a dispatcher can put it back in service)")]
    VehicleRetired,
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    #[error("too many requests; retry after {} s", retry_after_s(.0))]
    RateLimited(std::time::Duration),
    #[error("the request took too long")]
    Timeout,
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Database(sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// One invalid item of a file: its position (from 0, in the file's order) and what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PointError {
    pub index: usize,
    pub message: String,
}

impl AppError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Validation {
            field: field.into(),
            message: message.into(),
            index: None,
        }
    }

    /// Names the batch item an error belongs to.
    pub fn at_index(self, i: usize) -> Self {
        match self {
            AppError::Validation { field, message, .. } => AppError::Validation {
                field,
                message,
                index: Some(i),
            },
            other => other,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Validation { .. } | AppError::Malformed(_) | AppError::Points { .. } => {
                StatusCode::BAD_REQUEST
            }
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) | AppError::ConflictAt { .. } => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::VehicleRetired => StatusCode::GONE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Timeout | AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Database(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The input field a validation error names.
    pub fn field(&self) -> Option<&str> {
        match self {
            AppError::Validation { field, .. } => Some(field),
            AppError::ConflictAt { field, .. } => Some(field),
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::Validation { .. } | AppError::Points { .. } => "validation",
            AppError::Malformed(_) => "malformed",
            AppError::Unauthorized(_) => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) | AppError::ConflictAt { .. } => "conflict",
            AppError::TooLarge(_) => "too_large",
            AppError::VehicleRetired => "vehicle_retired",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::RateLimited(_) => "rate_limited",
            AppError::Timeout => "timeout",
            AppError::Unavailable(_) => "unavailable",
            AppError::Database(_) | AppError::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            AppError::Unavailable(e)
        } else {
            AppError::Database(e)
        }
    }
}

/// Connection-level failures: the database is down or unreachable, not the query wrong.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
    )
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    points: Option<&'a [PointError]>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            AppError::Database(e) => {
                tracing::error!(error = %e, "database error");
                "internal error".to_owned()
            }
            AppError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "internal error".to_owned()
            }
            AppError::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                self.to_string()
            }
            other => other.to_string(),
        };
        let (index, points) = match &self {
            AppError::Validation { index, .. } => (*index, None),
            AppError::Points { listed, .. } => (listed.first().map(|p| p.index), Some(&listed[..])),
            _ => (None, None),
        };
        let field = self.field();
        let body = Body {
            code: self.code(),
            message,
            field,
            index,
            points,
        };
        let mut response = (status, Json(json!({ "error": body }))).into_response();
        if let AppError::RateLimited(wait) = self {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry_after_s(&wait).into());
        }
        response
    }
}

/// Whole seconds to wait, at least one.
fn retry_after_s(wait: &std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// A JSON request body, checked by [`from_json`]; malformed bodies get the API's error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    Json<Value>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<Value>::from_request(req, state)
            .await
            .map_err(json_rejection)?;
        from_json(value).map(ApiJson)
    }
}

/// Numbers beyond this are not exact as floats, so a float is taken for an integer only below it.
const EXACT_FLOAT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A request body as `T`. The body must be an object (serde would also build a struct from an
/// array); a whole number written as a float (`3.0`, as some JSON encoders write it) counts as
/// the integer; and no string may hold the NUL character, which PostgreSQL cannot store. A
/// type error names the field's path.
pub fn from_json<T: DeserializeOwned>(mut value: Value) -> AppResult<T> {
    if !value.is_object() {
        return Err(AppError::Malformed("the body must be a JSON object".into()));
    }
    if contains_nul(&value) {
        return Err(AppError::Malformed(
            "text may not contain the NUL character (\\u0000)".into(),
        ));
    }
    integral_floats(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            AppError::Malformed(inner.to_string())
        } else {
            AppError::Malformed(format!("{path}: {inner}"))
        }
    })
}

/// Whether any string or key in `value` holds the NUL character, which PostgreSQL's text and
/// jsonb cannot store.
pub fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(fields) => fields
            .iter()
            .any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Turns whole numbers written as floats into integers.
fn integral_floats(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() < EXACT_FLOAT_INTEGER {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats),
        _ => {}
    }
}

pub fn json_rejection(rejection: JsonRejection) -> AppError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            AppError::UnsupportedMediaType("expected Content-Type: application/json")
        }
        JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            AppError::TooLarge("the body is larger than 1 MiB".into())
        }
        other => AppError::Malformed(other.body_text()),
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `Path` whose rejections are [`AppError`]s: a malformed id answers 400 in the API's shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(AppError::validation("id", rejection.body_text())),
        }
    }
}

/// `Query` whose rejections are [`AppError`]s: a malformed query string answers 400 in the
/// API's shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(AppError::Malformed(rejection.body_text())),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;
