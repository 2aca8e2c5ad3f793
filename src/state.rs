//! The shared state every handler gets, behind one `Arc`: the router and the extractors clone it
//! for every request, which then costs one reference count, not a copy of the signing keys.
use std::{
    ops::Deref,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    alerts::{run_clock, AlertEvents, Alerts},
    auth::{forget_expired_sign_outs, token, DeviceCache, Revocations, Revoked, SessionKeys},
    chat::ChatEvents,
    config::ServeConfig,
    db,
    fleet::roster::VehicleEvents,
    history::segmenter,
    ingest::{spawn_writer, WriterHandle},
    metrics::Metrics,
    security::Limits,
    tracking::{position::PositionEvents, read_seq, Fanout, Hub, Replay, Sequencer, Tracking},
};

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub db: PgPool,
    pub config: Arc<ServeConfig>,
    pub sessions: SessionKeys,
    pub tracking: Arc<Tracking>,
    pub writer: WriterHandle,
    /// The alert engine's in-memory side (geofence index, planned routes).
    pub alerts: Arc<Alerts>,
    pub devices: DeviceCache,
    /// What a revocation must reach on this instance: live sockets and the token cache.
    pub revocations: Arc<Revocations>,
    /// Rate limits on sign-in and ingest.
    pub limits: Arc<Limits>,
    /// Content-Security-Policy violations browsers reported.
    pub csp_reports: Arc<AtomicU64>,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down; every long-lived task watches it.
    pub cancel: CancellationToken,
    /// Every long-lived task (writer, sockets, maintenance) runs on this, so shutdown can wait.
    pub tracker: TaskTracker,
    /// Wakes the trip and stop detector (after an import, new trip settings).
    pub segmenter: segmenter::Wake,
}

impl AppState {
    /// Builds the state and starts the background tasks: the position writer, the sequencer's
    /// catch-up, the Redis fan-out (with `REDIS_URL`), the alert clock, partition upkeep and the
    /// trip and stop detector.
    pub async fn new(db: PgPool, config: ServeConfig) -> anyhow::Result<AppState> {
        let secret = session_secret(&config)?;
        let sessions = SessionKeys::new(
            &secret,
            chrono::Duration::hours(config.session_hours.into()),
        );
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let hub = Arc::new(Hub::default());
        let devices = DeviceCache::default();
        let revocations = Revocations::new(devices.clone());
        let sequencer = Sequencer::new(hub.clone(), read_seq(&db).await?);
        // Every kind of event, read back for `since` and the sequencer's gap fill.
        let replay = Arc::new(Replay::new(vec![
            Box::new(PositionEvents),
            Box::new(AlertEvents),
            Box::new(ChatEvents),
            Box::new(VehicleEvents),
        ]));
        tracker.spawn(
            sequencer
                .clone()
                .fill_gaps(db.clone(), replay.clone(), cancel.clone()),
        );
        // An empty REDIS_URL means none, so an environment that sets one can still run alone.
        let fanout = match config.redis_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => Some(Fanout::start(
                url,
                &config.redis_prefix,
                sequencer.clone(),
                hub.clone(),
                revocations.clone(),
                &tracker,
                cancel.clone(),
            )?),
            None => None,
        };
        let tracking = Arc::new(Tracking {
            hub,
            sequencer,
            fanout,
            presence: Default::default(),
            revocations: revocations.clone(),
            replay,
        });
        tracker.spawn(tracking.clone().refresh_presence(cancel.clone()));
        let alerts = Alerts::new(tracking.clone());
        let metrics = Arc::new(Metrics::default());
        let writer = spawn_writer(
            db.clone(),
            metrics.clone(),
            alerts.clone(),
            config.writer_batch,
            config.writer_connections,
            &tracker,
            cancel.clone(),
        );
        tracker.spawn(run_clock(
            db.clone(),
            tracking.clone(),
            std::time::Duration::from_secs(config.alert_tick_s.max(1)),
            cancel.clone(),
        ));
        tracker.spawn(upkeep(db.clone(), config.retention_months, cancel.clone()));
        let wake = segmenter::Wake::default();
        if config.segment_tick_s > 0 {
            tracker.spawn(segmenter::run(
                db.clone(),
                Duration::from_secs(config.segment_tick_s),
                wake.clone(),
                metrics.clone(),
                cancel.clone(),
            ));
        }
        let limits = Arc::new(Limits::new(&config));
        Ok(AppState(Arc::new(Shared {
            db,
            config: Arc::new(config),
            sessions,
            tracking,
            writer,
            alerts,
            devices,
            revocations,
            limits,
            csp_reports: Arc::default(),
            metrics,
            cancel,
            tracker,
            segmenter: wake,
        })))
    }
}

impl AppState {
    /// Ends `revoked` access everywhere, now ([`Tracking::revoke`]).
    pub async fn revoke(&self, revoked: Revoked) {
        self.tracking.revoke(revoked).await;
    }
}

/// The key sessions are signed with: `WAYMARK_JWT_SECRET`, or for development one generated once
/// and kept in the secret file, so sign-ins survive restarts. Production sets the variable, the
/// same on every instance.
fn session_secret(config: &ServeConfig) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = config.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "WAYMARK_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"
        );
        return Ok(secret.as_bytes().to_vec());
    }
    let path = &config.secret_file;
    match std::fs::read_to_string(path) {
        Ok(saved) if saved.trim().len() >= MIN_SECRET_BYTES => {
            tracing::warn!(path = %path.display(), "WAYMARK_JWT_SECRET is not set: using the development secret kept in this file; set it in production");
            return Ok(saved.trim().as_bytes().to_vec());
        }
        Ok(_) => anyhow::bail!(
            "{} holds no usable secret; delete it or set WAYMARK_JWT_SECRET",
            path.display()
        ),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            anyhow::bail!("reading {}: {e}", path.display())
        }
        Err(_) => {}
    }
    let secret = token::generate(32);
    match write_private(path, &secret) {
        Ok(()) => {
            tracing::warn!(path = %path.display(), "WAYMARK_JWT_SECRET is not set: generated a development secret and kept it in this file; set it in production")
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "WAYMARK_JWT_SECRET is not set and the secret file cannot be written: using a random secret, so sessions end with this process")
        }
    }
    Ok(secret.into_bytes())
}

/// A JWT secret shorter than this is too easy to guess offline from one token.
const MIN_SECRET_BYTES: usize = 32;

/// Writes `contents` to a new file readable by its owner only.
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// Keeps future partitions ready and, with a retention period, drops the expired ones; forgets
/// signed-out sessions once they have expired anyway. Checks every few hours until cancelled.
/// With many instances each does it; every step is idempotent.
async fn upkeep(pool: PgPool, retention_months: Option<u32>, cancel: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(6 * 3600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = every.tick() => {
                match db::ensure_partitions(&pool).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(created = n, "position partitions created"),
                    Err(e) => tracing::error!(error = %e, "creating position partitions"),
                }
                match forget_expired_sign_outs(&pool).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(forgotten = n, "expired sign-outs forgotten"),
                    Err(e) => tracing::warn!(error = %e, "forgetting expired sign-outs; will try again"),
                }
                let Some(months) = retention_months else { continue };
                match db::drop_old_partitions(&pool, months).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(dropped = n, keep_months = months, "old position partitions dropped"),
                    Err(e) => tracing::warn!(error = %e, "dropping old position partitions; will try again"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn config(args: &[&str]) -> ServeConfig {
        let mut all = vec!["waymark", "serve"];
        all.extend(args);
        match Cli::parse_from(all).command {
            Command::Serve(c) => *c,
            _ => unreachable!(),
        }
    }

    #[test]
    fn without_a_secret_one_is_generated_once_and_kept_private() {
        let dir = std::env::temp_dir().join(format!("waymark-secret-{}", token::generate(16)));
        let file = dir.join("jwt-secret");
        let c = config(&["--jwt-secret", "", "--secret-file", file.to_str().unwrap()]);
        let first = session_secret(&c).unwrap();
        assert!(first.len() >= MIN_SECRET_BYTES);
        assert_eq!(
            session_secret(&c).unwrap(),
            first,
            "the same after a restart"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_configured_secret_wins_and_must_be_long_enough() {
        let c = config(&["--jwt-secret", "0123456789abcdef0123456789abcdef"]);
        assert_eq!(
            session_secret(&c).unwrap(),
            b"0123456789abcdef0123456789abcdef"
        );
        let short = config(&["--jwt-secret", "hunter2"]);
        assert!(session_secret(&short).is_err());
    }
}
