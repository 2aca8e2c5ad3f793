//! What operators watch: `/metrics` in Prometheus text and `/readyz` with its dependencies.
use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{step, wait_until, TestApp};

/// The value of one sample line (`name` or `name{labels}`) of the metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics(app: &TestApp) -> String {
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    res.text().await.unwrap()
}

#[sqlx::test]
async fn metrics_count_ingest_connections_and_refusals(db: PgPool) {
    let app =
        TestApp::spawn_with(db, None, &["--ingest-rate", "0.01", "--ingest-burst", "3"]).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (_, token) = app.vehicle(&jwt, "Van 1").await;
    let base = Utc::now() - Duration::minutes(1);
    let (status, _) = app
        .ingest(
            &token,
            json!([step(0, base), step(1, base), {"lat": 0.0, "lon": 0.0}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.ingest(&token, step(1, base)).await; // a re-send
    app.ingest(&token, step(2, base)).await; // the burst is three requests
    let (status, _) = app.ingest(&token, step(3, base)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let page = metrics(&app).await;
    assert_eq!(
        sample(&page, "waymark_positions_total{outcome=\"accepted\"}"),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "waymark_positions_total{outcome=\"duplicate\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, "waymark_positions_total{outcome=\"filtered\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, "waymark_commit_rows_count"),
        Some(3.0),
        "three commits"
    );
    assert_eq!(sample(&page, "waymark_commit_rows_sum"), Some(5.0));
    for phase in ["lock", "read", "plan", "write", "commit", "flush"] {
        assert_eq!(
            sample(
                &page,
                &format!("waymark_commit_phase_seconds_count{{phase=\"{phase}\"}}")
            ),
            Some(3.0),
            "each commit timed through its {phase} phase"
        );
    }
    assert_eq!(sample(&page, "waymark_rate_limited_total"), Some(1.0));
    assert_eq!(sample(&page, "waymark_database_up"), Some(1.0));
    assert_eq!(sample(&page, "waymark_websocket_connections"), Some(0.0));
    assert_eq!(sample(&page, "waymark_fanout_lag_events"), Some(0.0));

    // A connection and its subscription show while they last.
    let mut ws = app.ws(&format!("token={jwt}")).await;
    ws.subscribe("fleet", None).await;
    let page = metrics(&app).await;
    assert_eq!(sample(&page, "waymark_websocket_connections"), Some(1.0));
    assert_eq!(sample(&page, "waymark_subscriptions"), Some(1.0));
    drop(ws);
    wait_until("the closed connection is no longer counted", || async {
        sample(&metrics(&app).await, "waymark_websocket_connections") == Some(0.0)
    })
    .await;
    assert_eq!(
        sample(&metrics(&app).await, "waymark_subscriptions"),
        Some(0.0)
    );
}

#[sqlx::test]
async fn readiness_reports_the_database_and_redis(db: PgPool) {
    let alone = TestApp::spawn_alone(db.clone()).await;
    let res = alone.http.get(alone.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"database": "ok", "redis": "not configured"}));
    assert_eq!(sample(&metrics(&alone).await, "waymark_redis_up"), None);
    alone.shutdown().await;

    if std::env::var("REDIS_URL").is_err() {
        return; // scripts/test always sets it; the Redis half needs a server
    }
    let app = TestApp::spawn(db).await;
    wait_until("/readyz reports Redis", || async {
        let res = app.http.get(app.url("/readyz")).send().await.unwrap();
        res.json::<Value>().await.unwrap()["redis"] == "ok"
    })
    .await;
    assert_eq!(sample(&metrics(&app).await, "waymark_redis_up"), Some(1.0));
}
