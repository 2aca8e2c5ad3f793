//! Schemas of the people the API answers with, which no one Rust type writes: the session and
//! the user lists build them field by field.
//!
//! These types are never built: they exist only for their schemas.
#![expect(dead_code, reason = "schema-only types are never built")]

use chrono::{DateTime, Utc};
use utoipa::ToSchema;

use crate::auth::Role;

/// A person. `organisation_id` is present for the signed-in user (`/auth/me`, login); `organisation` in the login reply; `disabled` and `created_at` in `/users` lists and replies.
#[derive(ToSchema)]
pub struct User {
    id: i64,
    #[schema(format = Email)]
    email: String,
    role: Role,
    organisation_id: Option<i64>,
    organisation: Option<String>,
    /// In `/users` lists and replies.
    disabled: Option<bool>,
    /// In `/users` lists and replies.
    created_at: Option<DateTime<Utc>>,
}

/// A new session: the reply to signing in, or to opening a device link.
#[derive(ToSchema)]
pub struct SignedIn {
    /// JWT
    token: String,
    user: User,
}
