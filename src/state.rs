//! The shared state every handler gets: cheap handles only.
use std::sync::{atomic::AtomicU64, Arc};

use axum::extract::FromRef;
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{token, DeviceCache, SessionKeys},
    config::ServeConfig,
    db,
    ingest::{spawn_writer, WriterHandle},
    security::Limits,
    tracking::{read_seq, Fanout, Hub, Sequencer, Tracking},
};

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub config: Arc<ServeConfig>,
    pub sessions: SessionKeys,
    pub tracking: Arc<Tracking>,
    pub writer: WriterHandle,
    pub devices: DeviceCache,
    /// Rate limits on sign-in and ingest.
    pub limits: Arc<Limits>,
    /// Content-Security-Policy violations browsers reported.
    pub csp_reports: Arc<AtomicU64>,
    /// Cancelled when the server shuts down; every long-lived task watches it.
    pub cancel: CancellationToken,
    /// Every long-lived task (writer, sockets, maintenance) runs on this, so shutdown can wait.
    pub tracker: TaskTracker,
}

impl AppState {
    /// Builds the state and starts the background tasks: the position writer, the sequencer's
    /// catch-up, the Redis fan-out (with `REDIS_URL`) and partition upkeep.
    pub async fn new(db: PgPool, config: ServeConfig) -> anyhow::Result<AppState> {
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
        let sequencer = Sequencer::new(hub.clone(), read_seq(&db).await?);
        tracker.spawn(sequencer.clone().fill_gaps(db.clone(), cancel.clone()));
        // An empty REDIS_URL means none, so an environment that sets one can still run alone.
        let fanout = match config.redis_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => Some(Fanout::start(
                url,
                &config.redis_prefix,
                sequencer.clone(),
                &tracker,
                cancel.clone(),
            )?),
            None => None,
        };
        let tracking = Arc::new(Tracking {
            hub,
            sequencer,
            fanout,
        });
        let writer = spawn_writer(
            db.clone(),
            tracking.clone(),
            config.writer_batch,
            config.writer_connections,
            &tracker,
            cancel.clone(),
        );
        tracker.spawn(db::partition_upkeep(db.clone(), cancel.clone()));
        let limits = Arc::new(Limits::new(&config));
        Ok(AppState {
            db,
            config: Arc::new(config),
            sessions,
            tracking,
            writer,
            devices: DeviceCache::default(),
            limits,
            csp_reports: Arc::default(),
            cancel,
            tracker,
        })
    }
}

impl FromRef<AppState> for SessionKeys {
    fn from_ref(state: &AppState) -> SessionKeys {
        state.sessions.clone()
    }
}
