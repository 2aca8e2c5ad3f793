//! The router, the listening socket, and serving with a graceful shutdown that also closes
//! WebSockets and drains the position writer (axum does neither for upgraded connections or
//! background tasks).
use std::{future::Future, io, net::SocketAddr, time::Duration};

use axum::{
    extract::{DefaultBodyLimit, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket};
use tower_http::{
    services::{ServeDir, ServeFile},
    set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};

use crate::{
    alerts, auth, chat, config::ServeConfig, db, error::AppError, fleet, history, ingest, metrics,
    openapi, security, settings, socket, web, AppState,
};

pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .merge(auth::router())
        .merge(ingest::router())
        .merge(auth::people::router())
        .merge(web::driver::router())
        .merge(fleet::router())
        .merge(chat::router())
        .merge(settings::router())
        .merge(alerts::router())
        .merge(history::router())
        .merge(socket::router())
        .route("/openapi.json", get(openapi::openapi))
        .route("/csp-report", post(security::csp_report))
        .fallback(|| async { AppError::NotFound("route") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::refuse_cross_site,
        ));
    let headers = security::headers(&state.config);
    let router = Router::new()
        .nest("/api/v1", api)
        .merge(web::pages::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .nest_service("/static", ServeDir::new(&state.config.static_dir))
        // The driver page's service worker lives at the root so that its scope can be /driver.
        .route_service(
            "/driver-sw.js",
            ServeFile::new(format!("{}/js/driver-sw.js", state.config.static_dir)),
        )
        .layer(DefaultBodyLimit::max(ingest::MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), time_limit));
    let router = headers.into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(name, value))
    });
    router.layer(TraceLayer::new_for_http()).with_state(state)
}

/// Answers `503` (in the API's error shape) for a request that takes longer than the configured
/// limit. WebSocket upgrades answer at once, so live connections are not cut.
async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = Duration::from_secs(state.config.request_timeout_s.max(1));
    let response = match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => AppError::Timeout.into_response(),
    };
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        state.metrics.rate_limited.inc();
    }
    response
}

/// Ready while the database answers. Redis is reported but does not make the instance unready:
/// without it an instance still serves everything, filling other instances' events in from the
/// database, and taking every instance out of the balancer at once would be an outage.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.db),
    )
    .await;
    let database_ok = matches!(db, Ok(Ok(_)));
    let redis = match &state.tracking.fanout {
        None => "not configured",
        Some(f) if f.connected().await => "ok",
        Some(_) => "unavailable",
    };
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let database = if database_ok { "ok" } else { "unavailable" };
    (status, Json(json!({"database": database, "redis": redis})))
}

/// Serves until `shutdown` resolves, then closes sockets (code 1012, "resume elsewhere"), writes
/// every queued position, and waits for every task up to the configured grace period.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cancel = state.cancel.clone();
    let tracker = state.tracker.clone();
    let grace = state.config.shutdown_grace();

    let router = app(state);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        cancel.cancel();
    })
    .await?;
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("shutdown grace period over; some tasks did not finish");
    }
    Ok(())
}

/// Connections the kernel queues until they are accepted: the default `net.core.somaxconn` of
/// current Linux (which caps it), so that thousands of clients reconnecting at once after a
/// restart wait in the queue rather than being refused.
const LISTEN_BACKLOG: u32 = 4096;

/// The listening socket for `config.bind`. With `config.reuse_port`, several processes that all
/// set it listen on one address, and the kernel spreads new connections over them.
pub fn listen(config: &ServeConfig) -> anyhow::Result<TcpListener> {
    let address = config.bind;
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }?;
    // As `TcpListener::bind` does: a restart need not wait for the old connections to time out.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    if config.reuse_port {
        share_port(&socket)?;
    }
    socket
        .bind(address)
        .map_err(|e| bind_error(address, config.reuse_port, e))?;
    Ok(socket.listen(LISTEN_BACKLOG)?)
}

/// Only Linux spreads connections over the sockets sharing a port (elsewhere `SO_REUSEPORT`
/// lets them bind, but does not balance the connections between them).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn share_port(socket: &TcpSocket) -> anyhow::Result<()> {
    Ok(socket.set_reuseport(true)?)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn share_port(_: &TcpSocket) -> anyhow::Result<()> {
    anyhow::bail!(
        "WAYMARK_REUSE_PORT needs Linux, whose kernel spreads connections over the processes \
         sharing a port; run one process per port behind a load balancer instead"
    )
}

/// Says what to do about the usual cause: another process on the port.
fn bind_error(address: SocketAddr, reuse_port: bool, error: io::Error) -> anyhow::Error {
    let mut context = format!("cannot listen on {address}");
    if error.kind() == io::ErrorKind::AddrInUse {
        context += if reuse_port {
            ": another process holds the port without sharing it (every process on a shared \
             port needs WAYMARK_REUSE_PORT=true, and all must run as the same user)"
        } else {
            ": another process holds the port (several `waymark serve` processes can share one \
             when every one of them has WAYMARK_REUSE_PORT=true)"
        };
    }
    anyhow::Error::new(error).context(context)
}

/// `waymark serve`: connect, migrate, listen, and serve until SIGINT or SIGTERM.
pub async fn run_server(config: ServeConfig) -> anyhow::Result<()> {
    tracing::info!(?config, "starting");
    // Every WebSocket is a file descriptor: take as many as the system allows this process.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
    let pool = db::connect(&config.db).await?;
    db::migrate(&pool).await?;
    let listener = listen(&config)?;
    tracing::info!(address = %listener.local_addr()?, reuse_port = config.reuse_port, "listening");
    let state = AppState::new(pool, config).await?;
    serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
