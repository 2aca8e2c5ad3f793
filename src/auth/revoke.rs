//! Taking access away at once. A revocation ends what the credential could do from now on (the
//! database says so for every later request) and closes the live sockets opened with it, on
//! this instance directly and on the others through Redis. Sockets also re-check their
//! credential now and then, so one whose revocation message was lost (Redis down) closes anyway.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{session::role_now, DeviceCache, Viewer};
use crate::error::AppError;

/// Whose access ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Every session of a user: signed out everywhere, disabled, or given a new role or password.
    User(i64),
    /// One share link (by its number, not its secret).
    Share(i64),
    /// A vehicle's ingest token (rotated or revoked).
    Vehicle(i64),
}

impl Revoked {
    /// The credential a connection authenticated with.
    pub fn of(viewer: &Viewer) -> Revoked {
        match viewer {
            Viewer::User(u) => Revoked::User(u.id),
            Viewer::Share(s) => Revoked::Share(s.id),
        }
    }

    /// As passed between instances: `user 42`, `share 7`, `vehicle 3`.
    pub fn encode(self) -> String {
        match self {
            Revoked::User(id) => format!("user {id}"),
            Revoked::Share(id) => format!("share {id}"),
            Revoked::Vehicle(id) => format!("vehicle {id}"),
        }
    }

    pub fn decode(s: &str) -> Option<Revoked> {
        let (kind, id) = s.split_once(' ')?;
        let id = id.parse().ok()?;
        match kind {
            "user" => Some(Revoked::User(id)),
            "share" => Some(Revoked::Share(id)),
            "vehicle" => Some(Revoked::Vehicle(id)),
            _ => None,
        }
    }
}

/// This instance's live sockets by the credential each one opened with, and the ingest token
/// cache, which are what a revocation must reach.
pub struct Revocations {
    sockets: Mutex<HashMap<u64, (Revoked, CancellationToken)>>,
    devices: DeviceCache,
}

impl Revocations {
    pub fn new(devices: DeviceCache) -> Arc<Revocations> {
        Arc::new(Revocations {
            sockets: Mutex::default(),
            devices,
        })
    }

    /// Registers connection `id`, opened with `credential`; the token is cancelled when that
    /// credential is revoked. Call [`Revocations::unwatch`] when the connection ends.
    pub fn watch(&self, id: u64, credential: Revoked) -> CancellationToken {
        let token = CancellationToken::new();
        self.sockets
            .lock()
            .expect("revocations poisoned")
            .insert(id, (credential, token.clone()));
        token
    }

    pub fn unwatch(&self, id: u64) {
        self.sockets
            .lock()
            .expect("revocations poisoned")
            .remove(&id);
    }

    /// Applies a revocation on this instance: closes the sockets opened with the credential and
    /// forgets a revoked ingest token. Returns how many sockets it closed.
    pub fn apply(&self, revoked: Revoked) -> usize {
        if let Revoked::Vehicle(id) = revoked {
            self.devices.forget_vehicle(id);
            return 0;
        }
        let sockets = self.sockets.lock().expect("revocations poisoned");
        let mut closed = 0;
        for (credential, token) in sockets.values() {
            if *credential == revoked {
                token.cancel();
                closed += 1;
            }
        }
        closed
    }
}

/// Whether the credential a connection opened with still holds: the user is enabled and the
/// session's epoch current, or the share link unrevoked and unexpired. A database error counts
/// as valid, so that a database outage does not close every socket.
pub async fn still_valid(db: &PgPool, viewer: &Viewer) -> bool {
    let valid = match viewer {
        Viewer::User(u) => role_now(db, u).await.map(|role| role.is_some()),
        Viewer::Share(s) => s.still_open(db).await.map_err(AppError::from),
    };
    valid.unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_cross_instances_as_short_text() {
        for r in [Revoked::User(42), Revoked::Share(7), Revoked::Vehicle(3)] {
            assert_eq!(Revoked::decode(&r.encode()), Some(r));
        }
        for bad in ["", "user", "user x", "group 1", "share 1 2"] {
            assert_eq!(Revoked::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_revocation_closes_only_the_sockets_of_its_credential() {
        let r = Revocations::new(DeviceCache::default());
        let alice = r.watch(1, Revoked::User(10));
        let alice_too = r.watch(2, Revoked::User(10));
        let bob = r.watch(3, Revoked::User(11));
        let link = r.watch(4, Revoked::Share(10));
        assert_eq!(r.apply(Revoked::User(10)), 2);
        assert!(alice.is_cancelled() && alice_too.is_cancelled());
        assert!(!bob.is_cancelled() && !link.is_cancelled());
        r.unwatch(3);
        assert_eq!(r.apply(Revoked::User(11)), 0, "unwatched");
        assert!(!bob.is_cancelled());
    }
}
