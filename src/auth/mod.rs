//! Who is asking: signed-in people (JWT in a header or the session cookie), devices (ingest
//! tokens) and customers (share links), and what each may see.
mod device;
pub mod openapi;
mod password;
pub mod people;
mod revoke;
pub(crate) mod routes;
mod session;
mod share;
pub mod token;

pub use device::{Device, DeviceCache, SpeedUnit};
pub use password::{hash_password, verify_password};
pub use people::{create_user, insert_user};
pub use revoke::{still_valid, Revocations, Revoked};
pub use routes::router;
pub(crate) use routes::signed_in;
pub use session::{
    authenticate, authenticate_session, forget_expired_sign_outs, from_headers,
    session_from_headers, sign_out, CurrentUser, Session, SessionKeys, LEEWAY_S, SESSION_COOKIE,
};
pub use share::ShareAccess;

use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Dispatcher,
    Driver,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dispatcher => "dispatcher",
            Role::Driver => "driver",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "dispatcher" => Some(Role::Dispatcher),
            "driver" => Some(Role::Driver),
            _ => None,
        }
    }

    /// Admins and dispatchers run the fleet; drivers see only their own work.
    pub fn dispatches(self) -> bool {
        matches!(self, Role::Admin | Role::Dispatcher)
    }
}

/// SQL saying that a row's `shipment_id` is a shipment assigned now to the driver bound as
/// parameter `$n`; true when that parameter is null (a viewer who is not a driver).
pub fn of_driver(n: usize) -> String {
    format!("(${n}::bigint IS NULL OR shipment_id IN (SELECT id FROM shipments WHERE driver_id = ${n}))")
}

/// Whoever reads tracking data: a signed-in user, or a share link limited to one shipment.
#[derive(Debug, Clone)]
pub enum Viewer {
    User(CurrentUser),
    Share(ShareAccess),
}

impl Viewer {
    pub fn organisation_id(&self) -> i64 {
        match self {
            Viewer::User(u) => u.organisation_id,
            Viewer::Share(s) => s.organisation_id,
        }
    }

    /// When this viewer's access ends by itself: the session's or the share link's expiry.
    pub fn expires_at(&self) -> chrono::DateTime<chrono::Utc> {
        match self {
            Viewer::User(u) => u.expires_at,
            Viewer::Share(s) => s.expires_at,
        }
    }

    /// The driver behind this viewer, if it is one: what a driver sees of a vehicle is narrowed
    /// to the shipments assigned to them.
    pub fn driver_id(&self) -> Option<i64> {
        match self {
            Viewer::User(u) if !u.role.dispatches() => Some(u.id),
            _ => None,
        }
    }

    /// The dispatcher behind this viewer, or `forbidden`.
    pub fn dispatcher(&self) -> Result<&CurrentUser, AppError> {
        match self {
            Viewer::User(u) if u.role.dispatches() => Ok(u),
            _ => Err(AppError::Forbidden("this needs a dispatcher")),
        }
    }
}

impl CurrentUser {
    /// `forbidden` unless this user is an admin or dispatcher.
    pub fn require_dispatcher(&self) -> Result<(), AppError> {
        if self.role.dispatches() {
            Ok(())
        } else {
            Err(AppError::Forbidden("this needs a dispatcher"))
        }
    }
}
