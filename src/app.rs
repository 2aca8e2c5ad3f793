//! The router, and serving it with a graceful shutdown that also closes WebSockets and drains
//! the position writer (axum does neither for upgraded connections or background tasks).
use std::{future::Future, time::Duration};

use axum::{
    extract::{DefaultBodyLimit, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::json;
use tokio::net::TcpListener;
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
    let listener = TcpListener::bind(config.bind).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
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
