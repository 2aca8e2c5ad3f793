//! The OpenAPI description of the one error shape: the [`Error`] body, the answers every
//! operation shares (one per status, each saying what its `code` means), and the id a route
//! names ([`ApiPath`](super::ApiPath)). Operations refer to them (`response = BadRequest`)
//! rather than repeating them, and list the three that every signed-in operation may give as
//! [`CommonErrors`].
//!
//! These types are never built: they exist only for their schemas and responses.
#![expect(dead_code, reason = "schema-only types are never built")]

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::{
    openapi::{
        schema::{ObjectBuilder, Type},
        Content, HeaderBuilder, Ref, RefOr, Response, ResponseBuilder,
    },
    IntoParams, IntoResponses, ToResponse, ToSchema,
};

/// What any operation behind sign-in may answer besides its own refusals: `401` without valid
/// credentials, `500`, and `503` while the database is away.
pub struct CommonErrors;

impl IntoResponses for CommonErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            ("401", "Unauthorized"),
            ("500", "Internal"),
            ("503", "Unavailable"),
        ]
        .into_iter()
        .map(|(status, name)| (status.to_owned(), Ref::from_response_name(name).into()))
        .collect()
    }
}

/// Every error reply. See docs/API.md for the codes.
#[derive(Serialize, ToSchema)]
#[schema(
    example = json!({"error": {"code": "validation", "message": "lat must be between -90 and 90", "field": "lat", "index": 3}}),
)]
// For the schema: an error reply has no other keys (`additionalProperties: false`).
#[serde(deny_unknown_fields)]
pub struct Error {
    #[schema(inline)]
    error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
struct ErrorBody {
    code: ErrorCode,
    message: String,
    /// The offending field, when one applies (for tracker apps, as the app names it).
    #[schema(nullable = false)]
    field: Option<String>,
    /// The item's position in a batch, when one applies.
    #[schema(nullable = false)]
    index: Option<u32>,
    /// Every invalid point of an imported file, by position (`index` names the first).
    #[schema(nullable = false)]
    points: Option<Vec<super::PointError>>,
}

/// The `code` of an error (`AppError::code`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ErrorCode {
    Malformed,
    Validation,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    UnsupportedMediaType,
    RateLimited,
    Timeout,
    Internal,
    Unavailable,
}

/// The id of the object a route names (`ApiPath<i64>`).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct Id {
    #[param(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    id: i64,
}

/// `malformed`: the body is not valid JSON (or form) of the expected shape; `validation`: a value is out of range (`field`, and `index` in a batch, name it).
#[derive(ToResponse)]
pub struct BadRequest(Error);

/// `unauthorized`: no credentials, or credentials that are wrong or expired.
#[derive(ToResponse)]
pub struct Unauthorized(Error);

/// `forbidden`: signed in, but this role or organisation may not do this.
#[derive(ToResponse)]
pub struct Forbidden(Error);

/// `not_found`: no such object in the caller's organisation.
#[derive(ToResponse)]
pub struct NotFound(Error);

/// `conflict`: the change clashes with the current state; `field` names the input at fault where one is (`reference`, `vehicle_id`).
#[derive(ToResponse)]
pub struct Conflict(Error);

/// `too_large`: the body is over 1 MiB, or a batch is over 1000 positions.
#[derive(ToResponse)]
pub struct TooLarge(Error);

/// `vehicle_retired`: the ingest token is a retired vehicle's; the device should stop sending.
#[derive(ToResponse)]
pub struct Gone(Error);

/// `unsupported_media_type`: called without `Content-Type: application/json`.
#[derive(ToResponse)]
pub struct UnsupportedMediaType(Error);

/// `internal`: a fault on the server's side; the cause is logged, never shown.
#[derive(ToResponse)]
pub struct Internal(Error);

/// `unavailable`: the database cannot be reached; nothing was stored, retry. `timeout`: the request took longer than the server's limit.
#[derive(ToResponse)]
pub struct Unavailable(Error);

/// `rate_limited`: too many requests; wait as many seconds as `Retry-After` says.
///
/// Written out rather than derived: the derive cannot bound the header (at least one second).
pub struct RateLimited;

impl<'r> ToResponse<'r> for RateLimited {
    fn response() -> (&'r str, RefOr<Response>) {
        let seconds = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1));
        let response = ResponseBuilder::new()
            .description(
                "`rate_limited`: too many requests; wait as many seconds as `Retry-After` says.",
            )
            .header("Retry-After", HeaderBuilder::new().schema(seconds).build())
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name(Error::name()))),
            )
            .build();
        ("RateLimited", RefOr::T(response))
    }
}
