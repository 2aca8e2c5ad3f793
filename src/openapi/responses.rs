//! The error answers every operation shares, one per status: each is the [`Error`] body with what
//! its `code` means. Operations refer to them (`response = BadRequest`) rather than repeating them.
//!
//! These types are never built: they exist only for their responses.
#![allow(dead_code)]
use utoipa::{
    openapi::{
        schema::{ObjectBuilder, Type},
        Content, HeaderBuilder, Ref, RefOr, Response, ResponseBuilder,
    },
    ToResponse, ToSchema,
};

use super::schemas::Error;

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

/// `conflict`: the change clashes with the current state.
#[derive(ToResponse)]
pub struct Conflict(Error);

/// `too_large`: the body is over 1 MiB, or a batch is over 1000 positions.
#[derive(ToResponse)]
pub struct TooLarge(Error);

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
