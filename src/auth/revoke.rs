//! Taking access away at once. A revocation ends what the credential could do from now on (the
//! database says so for every later request) and closes the live sockets opened with it, on
//! this instance directly and on the others through Redis. A driver taken off a shipment keeps
//! the session but loses what the assignment showed: their sockets re-check their subscriptions
//! and drop those no longer allowed. Sockets also re-check now and then, so one whose message
//! was lost (Redis down) catches up anyway.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{session::role_now, DeviceCache, Viewer};
use crate::error::AppError;

/// Whose access ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Every session of a user: signed out everywhere, disabled, or given a new role or password.
    User(i64),
    /// One session, signed out (by its id, not its token).
    Session(i64),
    /// One share link (by its number, not its secret).
    Share(i64),
    /// A vehicle's ingest token (rotated or revoked).
    Vehicle(i64),
    /// Some of a user's assignments ended (a shipment given to another driver, its vehicle
    /// changed, the shipment finished): their sockets stay open but re-check what they
    /// subscribed to.
    Assignment(i64),
}

impl Revoked {
    /// What revoking ends a connection authenticated as `viewer` (in session `session`, for a
    /// signed-in user).
    pub fn of(viewer: &Viewer, session: Option<i64>) -> Vec<Revoked> {
        match viewer {
            Viewer::User(u) => [Some(Revoked::User(u.id)), session.map(Revoked::Session)]
                .into_iter()
                .flatten()
                .collect(),
            Viewer::Share(s) => vec![Revoked::Share(s.id)],
        }
    }

    /// As passed between instances: `user 42`, `session 9`, `share 7`, `vehicle 3`,
    /// `assignment 42`.
    pub fn encode(self) -> String {
        match self {
            Revoked::User(id) => format!("user {id}"),
            Revoked::Session(id) => format!("session {id}"),
            Revoked::Share(id) => format!("share {id}"),
            Revoked::Vehicle(id) => format!("vehicle {id}"),
            Revoked::Assignment(id) => format!("assignment {id}"),
        }
    }

    pub fn decode(s: &str) -> Option<Revoked> {
        let (kind, id) = s.split_once(' ')?;
        let id = id.parse().ok()?;
        match kind {
            "user" => Some(Revoked::User(id)),
            "session" => Some(Revoked::Session(id)),
            "share" => Some(Revoked::Share(id)),
            "vehicle" => Some(Revoked::Vehicle(id)),
            "assignment" => Some(Revoked::Assignment(id)),
            _ => None,
        }
    }
}

/// This instance's live sockets by the credentials each one opened with, and the ingest token
/// cache, which are what a revocation must reach.
pub struct Revocations {
    sockets: Mutex<HashMap<u64, (Vec<Revoked>, Watch)>>,
    devices: DeviceCache,
}

/// What a watched connection hears of revocations.
#[derive(Clone, Default)]
pub struct Watch {
    /// Cancelled when the connection's credential is revoked: it must close.
    pub revoked: CancellationToken,
    /// Notified when its user's assignments changed: it must re-check its subscriptions.
    pub access_changed: Arc<Notify>,
}

impl Revocations {
    pub fn new(devices: DeviceCache) -> Arc<Revocations> {
        Arc::new(Revocations {
            sockets: Mutex::default(),
            devices,
        })
    }

    /// Registers connection `id`, opened with `credentials` (see [`Revoked::of`]), for what
    /// revocations tell it. Call [`Revocations::unwatch`] when the connection ends.
    pub fn watch(&self, id: u64, credentials: Vec<Revoked>) -> Watch {
        let watch = Watch::default();
        self.sockets
            .lock()
            .expect("revocations poisoned")
            .insert(id, (credentials, watch.clone()));
        watch
    }

    pub fn unwatch(&self, id: u64) {
        self.sockets
            .lock()
            .expect("revocations poisoned")
            .remove(&id);
    }

    /// Applies a revocation on this instance: closes the sockets opened with the credential (or,
    /// for changed assignments, has its user's sockets re-check their subscriptions) and forgets
    /// a revoked ingest token. Returns how many sockets it reached.
    pub fn apply(&self, revoked: Revoked) -> usize {
        let recheck = match revoked {
            Revoked::Vehicle(id) => {
                self.devices.forget_vehicle(id);
                return 0;
            }
            Revoked::Assignment(user) => Some(Revoked::User(user)),
            _ => None,
        };
        let sockets = self.sockets.lock().expect("revocations poisoned");
        let mut reached = 0;
        for (credentials, watch) in sockets.values() {
            if recheck.is_some_and(|user| credentials.contains(&user)) {
                // A permit is kept if the connection is busy, so the news is not lost.
                watch.access_changed.notify_one();
                reached += 1;
            } else if credentials.contains(&revoked) {
                watch.revoked.cancel();
                reached += 1;
            }
        }
        reached
    }
}

/// Whether the credential a connection opened with still holds: the session (`session`) not
/// signed out, its user enabled and its epoch current; or the share link unrevoked and
/// unexpired. A database error counts as valid, so that a database outage does not close every
/// socket.
pub async fn still_valid(db: &PgPool, viewer: &Viewer, session: Option<i64>) -> bool {
    let valid = match viewer {
        Viewer::User(u) => role_now(db, u, session).await.map(|role| role.is_some()),
        Viewer::Share(s) => s.still_open(db).await.map_err(AppError::from),
    };
    valid.unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_cross_instances_as_short_text() {
        for r in [
            Revoked::User(42),
            Revoked::Session(9),
            Revoked::Share(7),
            Revoked::Vehicle(3),
            Revoked::Assignment(42),
        ] {
            assert_eq!(Revoked::decode(&r.encode()), Some(r));
        }
        for bad in ["", "user", "user x", "group 1", "share 1 2"] {
            assert_eq!(Revoked::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_revocation_closes_only_the_sockets_of_its_credential() {
        let r = Revocations::new(DeviceCache::default());
        let user = |id, session| vec![Revoked::User(id), Revoked::Session(session)];
        let alice = r.watch(1, user(10, 1));
        let alice_too = r.watch(2, user(10, 2));
        let bob = r.watch(3, user(11, 3));
        let link = r.watch(4, vec![Revoked::Share(10)]);
        assert_eq!(r.apply(Revoked::Session(2)), 1, "one session signed out");
        assert!(alice_too.revoked.is_cancelled() && !alice.revoked.is_cancelled());
        assert_eq!(r.apply(Revoked::User(10)), 2);
        assert!(alice.revoked.is_cancelled());
        assert!(!bob.revoked.is_cancelled() && !link.revoked.is_cancelled());
        r.unwatch(3);
        assert_eq!(r.apply(Revoked::User(11)), 0, "unwatched");
        assert!(!bob.revoked.is_cancelled());
    }

    #[tokio::test]
    async fn changed_assignments_reach_their_users_sockets_without_closing_them() {
        let r = Revocations::new(DeviceCache::default());
        let driver = r.watch(1, vec![Revoked::User(10), Revoked::Session(1)]);
        let other = r.watch(2, vec![Revoked::User(11), Revoked::Session(2)]);
        let link = r.watch(3, vec![Revoked::Share(10)]);
        assert_eq!(r.apply(Revoked::Assignment(10)), 1);
        assert!(!driver.revoked.is_cancelled());
        // The permit waits for the connection to look.
        driver.access_changed.notified().await;
        for untouched in [other, link] {
            let notified = untouched.access_changed.notified();
            tokio::pin!(notified);
            assert!(futures_util::poll!(&mut notified).is_pending());
            assert!(!untouched.revoked.is_cancelled());
        }
    }
}
