//! The driver's side over HTTP: positions from the phone page under the driver's own session,
//! and the one-time device links that sign a phone in.
use chrono::{Duration, Utc};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{step, TestApp};

/// A dispatcher, a driver with a shipment on a vehicle, and the ids: (dispatcher jwt, driver id,
/// driver jwt, vehicle, shipment).
async fn assigned(app: &TestApp) -> (String, i64, String, i64, i64) {
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (driver, driver_jwt) = app.user("Acme", "anna@acme.test", Role::Driver).await;
    let (vehicle, _) = app.vehicle(&jwt, "Van 1").await;
    let shipment = app.shipment(&jwt, "SHP-1", vehicle, Some(driver)).await;
    (jwt, driver, driver_jwt, vehicle, shipment)
}

#[sqlx::test]
async fn a_driver_sees_the_assignment_and_posts_for_its_vehicle_idempotently(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, _, driver_jwt, vehicle, shipment) = assigned(&app).await;

    let (status, me) = app.get(&driver_jwt, "/api/v1/driver").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["shipment"]["id"], shipment);
    assert_eq!(me["vehicle"]["id"], vehicle);
    assert_eq!(me["vehicle"]["name"], "Van 1");

    // Taken since the shipment was assigned, so they join it.
    let base = Utc::now() - Duration::seconds(30);
    let batch = json!([step(0, base), step(1, base), step(2, base)]);
    let path = format!("/api/v1/driver/positions?shipment={shipment}");
    let (status, body) = app.post(&driver_jwt, &path, batch.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3);
    // The phone re-sends a batch whose answer it never saw: nothing is stored twice.
    let (status, again) = app.post(&driver_jwt, &path, batch).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["accepted"], 0);
    assert_eq!(again["duplicates"], 3);
    assert_eq!(again["seqs"], body["seqs"]);
    let stored: Vec<(i64, Option<i64>)> =
        sqlx::query_as("SELECT vehicle_id, shipment_id FROM positions ORDER BY recorded_at")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(stored, vec![(vehicle, Some(shipment)); 3]);

    // Without ?shipment= the active one is meant.
    let (status, body) = app
        .post(&driver_jwt, "/api/v1/driver/positions", step(3, base))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.count_positions().await, 4);
}

#[sqlx::test]
async fn driver_posts_are_refused_for_others_shipments_and_without_an_assignment(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (jwt, _, _, _, shipment) = assigned(&app).await;
    let (_, idle_jwt) = app.user("Acme", "bob@acme.test", Role::Driver).await;
    let (_, other_jwt) = app.user("Other", "eve@other.test", Role::Driver).await;
    let now = Utc::now();

    let path = format!("/api/v1/driver/positions?shipment={shipment}");
    let (status, body) = app.post(&idle_jwt, &path, step(0, now)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app.post(&other_jwt, &path, step(0, now)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .post(&idle_jwt, "/api/v1/driver/positions", step(0, now))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    // A dispatcher is not this shipment's driver either.
    let (status, _) = app.post(&jwt, &path, step(0, now)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let res = app
        .http
        .post(app.url(&path))
        .json(&step(0, now))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = app
        .post(
            &idle_jwt,
            "/api/v1/driver/positions?shipment=abc",
            step(0, now),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(app.count_positions().await, 0);
}

#[sqlx::test]
async fn a_bad_fix_from_the_phone_names_its_index_and_stores_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, _, driver_jwt, _, shipment) = assigned(&app).await;
    let base = Utc::now() - Duration::minutes(1);
    let mut bad = step(1, base);
    bad["heading"] = json!(400);
    let (status, body) = app
        .post(
            &driver_jwt,
            &format!("/api/v1/driver/positions?shipment={shipment}"),
            json!([step(0, base), bad, step(2, base)]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "heading");
    assert_eq!(body["error"]["index"], 1);
    assert_eq!(app.count_positions().await, 0);
}

#[sqlx::test]
async fn a_fix_queued_during_a_shipment_still_lands_after_it_ended(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (jwt, _, driver_jwt, vehicle, shipment) = assigned(&app).await;
    let (status, _) = app
        .patch(
            &jwt,
            &format!("/api/v1/shipments/{shipment}"),
            json!({"status": "delivered"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .post(
            &driver_jwt,
            &format!("/api/v1/driver/positions?shipment={shipment}"),
            step(0, Utc::now() - Duration::minutes(30)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let on: i64 = sqlx::query_scalar("SELECT vehicle_id FROM positions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(on, vehicle);
}

async fn redeem(app: &TestApp, code: &str) -> reqwest::Response {
    app.http
        .post(app.url("/api/v1/auth/device-link"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_device_link_signs_a_phone_in_as_its_driver_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (jwt, driver, _, _, shipment) = assigned(&app).await;
    let (status, link) = app
        .post(
            &jwt,
            &format!("/api/v1/users/{driver}/device-link"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let url = link["url"].as_str().unwrap();
    let prefix = format!("http://{}/driver/link/", app.addr);
    assert!(url.starts_with(&prefix), "{url}");
    assert!(link["qr_svg"].as_str().unwrap().contains("<svg"));
    let code = &url[prefix.len()..];

    // The page the link opens offers the sign-in without using the link up.
    let page = app.http.get(url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains(code));

    let res = redeem(&app, code).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with("waymark_session=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["id"], driver);
    assert_eq!(body["user"]["role"], "driver");
    let phone_jwt = body["token"].as_str().unwrap();
    let (status, me) = app.get(phone_jwt, "/api/v1/driver").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["shipment"]["id"], shipment);

    let res = redeem(&app, code).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "a link works once");
    let res = redeem(&app, "not-a-code").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test]
async fn device_links_expire_and_are_only_for_drivers_of_the_organisation(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (jwt, driver, driver_jwt, _, _) = assigned(&app).await;
    let (dispatcher, _) = app.user("Acme", "second@acme.test", Role::Dispatcher).await;
    let (stranger, _) = app.user("Other", "eve@other.test", Role::Driver).await;

    let link = |who: i64| format!("/api/v1/users/{who}/device-link");
    let (status, _) = app.post(&jwt, &link(stranger), json!({})).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another organisation's driver"
    );
    let (status, _) = app.post(&jwt, &link(dispatcher), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "not a driver");
    let (status, _) = app.post(&driver_jwt, &link(driver), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "drivers do not make links");

    let (status, body) = app.post(&jwt, &link(driver), json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let url = body["url"].as_str().unwrap();
    let code = url.rsplit('/').next().unwrap();
    sqlx::query("UPDATE device_links SET expires_at = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(redeem(&app, code).await.status(), StatusCode::UNAUTHORIZED);
}
