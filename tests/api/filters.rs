//! The plausibility filter as an organisation sets it, and as it treats a real trace.
use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{step, TestApp};

#[sqlx::test]
async fn admins_change_the_filter_and_it_applies_to_their_organisation_only(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, admin) = app.user("Acme", "admin@acme.test", Role::Admin).await;
    let (_, dispatcher) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (_, other) = app.user("Other", "admin@other.test", Role::Admin).await;
    let (acme_van, acme_token) = app.vehicle(&admin, "Van 1").await;
    let (_, other_token) = app.vehicle(&other, "Van 2").await;

    let (status, settings) = app.get(&dispatcher, "/api/v1/settings").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["filter"]["max_accuracy_m"], 500.0);
    let (status, _) = app
        .patch(
            &dispatcher,
            "/api/v1/settings",
            json!({"filter": {"max_accuracy_m": 20}}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "dispatchers read, admins change"
    );
    let (status, body) = app
        .patch(
            &admin,
            "/api/v1/settings",
            json!({"filter": {"max_accuracy_m": -1}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "filter.max_accuracy_m");
    let (status, body) = app
        .patch(
            &admin,
            "/api/v1/settings",
            json!({"filter": {"max_accuracy_m": 20}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["filter"]["max_accuracy_m"], 20.0);
    assert_eq!(
        body["filter"]["max_speed_mps"], 100.0,
        "other keys keep their values"
    );

    // 25 m is fine by default, too vague for Acme now.
    let fix = |i| {
        let mut p = step(i, Utc::now() - Duration::seconds(30));
        p["accuracy"] = json!(25.0);
        p
    };
    let (_, body) = app.ingest(&acme_token, fix(0)).await;
    assert_eq!(body["filtered"], 1, "{body}");
    let (_, body) = app.ingest(&other_token, fix(0)).await;
    assert_eq!(body["filtered"], 0, "{body}");
    let reason: Option<String> =
        sqlx::query_scalar("SELECT filter_reason FROM positions WHERE vehicle_id = $1")
            .bind(acme_van)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(reason.as_deref(), Some("inaccurate"));
    let (_, other_settings) = app.get(&other, "/api/v1/settings").await;
    assert_eq!(other_settings["filter"]["max_accuracy_m"], 500.0);
}
