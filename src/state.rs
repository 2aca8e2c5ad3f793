//! The shared state every handler gets: cheap handles only.
use std::sync::Arc;

use axum::extract::FromRef;
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{token, DeviceCache, SessionKeys},
    config::ServeConfig,
    ingest::{spawn_writer, WriterHandle},
    tracking::Hub,
};

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub config: Arc<ServeConfig>,
    pub sessions: SessionKeys,
    pub hub: Arc<Hub>,
    pub writer: WriterHandle,
    pub devices: DeviceCache,
    /// Cancelled when the server shuts down; every long-lived task watches it.
    pub cancel: CancellationToken,
    /// Every long-lived task (writer, sockets, maintenance) runs on this, so shutdown can wait.
    pub tracker: TaskTracker,
}

impl AppState {
    /// Builds the state and starts the position writer.
    pub fn new(db: PgPool, config: ServeConfig) -> AppState {
        let secret = match &config.jwt_secret {
            Some(s) => s.clone().into_bytes(),
            None => {
                tracing::warn!(
                    "WAYMARK_JWT_SECRET is not set: using a random one, so sessions end with this \
                     process and other instances will not accept them"
                );
                token::generate(32).into_bytes()
            }
        };
        let sessions = SessionKeys::new(
            &secret,
            chrono::Duration::hours(config.session_hours.into()),
        );
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let hub = Arc::new(Hub::default());
        let writer = spawn_writer(
            db.clone(),
            hub.clone(),
            config.writer_batch,
            &tracker,
            cancel.clone(),
        );
        AppState {
            db,
            config: Arc::new(config),
            sessions,
            hub,
            writer,
            devices: DeviceCache::default(),
            cancel,
            tracker,
        }
    }
}

impl FromRef<AppState> for SessionKeys {
    fn from_ref(state: &AppState) -> SessionKeys {
        state.sessions.clone()
    }
}
