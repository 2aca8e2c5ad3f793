//! Which shipment a fix joins: the one whose time window holds the time it was taken. A phone
//! catching up on a delivered shipment must not draw its backlog into the vehicle's next one.
use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{step, TestApp};

/// Each stored position's shipment, in time order.
async fn shipments_of_positions(app: &TestApp) -> Vec<Option<i64>> {
    sqlx::query_scalar("SELECT shipment_id FROM positions ORDER BY recorded_at")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

async fn status(app: &TestApp, jwt: &str, shipment: i64) -> Value {
    let (code, body) = app.get(jwt, &format!("/api/v1/shipments/{shipment}")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    body["status"].clone()
}

async fn track_len(app: &TestApp, jwt: &str, shipment: i64) -> usize {
    let (code, body) = app
        .get(jwt, &format!("/api/v1/shipments/{shipment}/track"))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    body["features"][0]["geometry"]["coordinates"]
        .as_array()
        .map_or(0, Vec::len)
}

fn batch(from: i64, to: i64, base: DateTime<Utc>) -> Value {
    Value::Array((from..to).map(|i| step(i, base)).collect())
}

#[sqlx::test]
async fn a_backlog_of_a_delivered_shipment_joins_it_and_never_the_next_one(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (driver, driver_jwt) = app.user("Acme", "anna@acme.test", Role::Driver).await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    let first = app.shipment(&jwt, "SHP-78", vehicle, Some(driver)).await;
    let for_first = format!("/api/v1/driver/positions?shipment={first}");

    // Shipment 78 starts with a fix taken a minute ago, then the phone loses its signal and the
    // dispatcher marks 78 delivered; the vehicle's next shipment, 79, is for another customer.
    let base = Utc::now() - Duration::seconds(60);
    let (code, body) = app.post(&driver_jwt, &for_first, step(0, base)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(status(&app, &jwt, first).await, "in_transit");
    let path = format!("/api/v1/shipments/{first}");
    let (code, body) = app.patch(&jwt, &path, json!({"status": "delivered"})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let next = app.shipment(&jwt, "SHP-79", vehicle, Some(driver)).await;

    // The phone's queue, taken during 78, arrives now: from the driver's page naming 78, and
    // from a tracker app on the same vehicle that names nothing.
    let (code, body) = app.post(&driver_jwt, &for_first, batch(1, 4, base)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3);
    let (code, body) = app.ingest(&token, batch(4, 7, base)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3);
    assert_eq!(shipments_of_positions(&app).await, vec![Some(first); 7]);
    assert_eq!(track_len(&app, &jwt, first).await, 7);
    assert_eq!(track_len(&app, &jwt, next).await, 0);
    assert_eq!(
        status(&app, &jwt, next).await,
        "planned",
        "78's backlog does not start 79"
    );

    // Sharing for 78 after it ended joins no shipment: not 78, which is over, nor 79.
    let now = Utc::now();
    let (code, body) = app.post(&driver_jwt, &for_first, step(0, now)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(shipments_of_positions(&app).await.last(), Some(&None));
    assert_eq!(status(&app, &jwt, next).await, "planned");

    // A fix taken during 79 joins it and starts it.
    let (code, body) = app.ingest(&token, step(1, now)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(shipments_of_positions(&app).await.last(), Some(&Some(next)));
    assert_eq!(status(&app, &jwt, next).await, "in_transit");
    assert_eq!(track_len(&app, &jwt, next).await, 1);
    assert_eq!(track_len(&app, &jwt, first).await, 7);
}

#[sqlx::test]
async fn a_fix_from_before_a_shipment_was_assigned_never_starts_it(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    let shipment = app.shipment(&jwt, "SHP-1", vehicle, None).await;

    // The tracker's backlog from an hour ago is the vehicle's, and no shipment's.
    let hour_ago = Utc::now() - Duration::hours(1);
    let (code, body) = app.ingest(&token, batch(0, 3, hour_ago)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(shipments_of_positions(&app).await, vec![None; 3]);
    assert_eq!(status(&app, &jwt, shipment).await, "planned");
    let (_, v) = app.get(&jwt, &format!("/api/v1/vehicles/{vehicle}")).await;
    assert!(
        v["last_position"]["lat"].is_number(),
        "the vehicle still moves on the map: {v}"
    );

    // The first fix taken since it was assigned starts it, and only that fix is its track.
    let (code, body) = app.ingest(&token, step(0, Utc::now())).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(status(&app, &jwt, shipment).await, "in_transit");
    assert_eq!(track_len(&app, &jwt, shipment).await, 1);
}

#[sqlx::test]
async fn a_fix_after_arrival_in_the_same_batch_is_not_the_shipments(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    let shipment = app.shipment(&jwt, "SHP-1", vehicle, None).await;
    // The harness's shipment ends at 48.1642, 11.4330: the second fix is there, the third after.
    app.backdate(shipment).await;
    let base = Utc::now() - Duration::minutes(20);
    let at = |s: i64, lat: f64, lon: f64| json!({"lat": lat, "lon": lon, "recorded_at": (base + Duration::seconds(s)).to_rfc3339(), "speed": 5.0});
    let (code, body) = app
        .ingest(
            &token,
            json!([
                at(0, 48.1374, 11.5755),
                at(600, 48.1642, 11.4330),
                at(660, 48.1650, 11.4300)
            ]),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(status(&app, &jwt, shipment).await, "arrived");
    assert_eq!(
        shipments_of_positions(&app).await,
        vec![Some(shipment), Some(shipment), None]
    );
    // A late fix from during the trip still joins it after it arrived.
    let (code, body) = app.ingest(&token, at(300, 48.15, 11.5)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        shipments_of_positions(&app).await,
        vec![Some(shipment), Some(shipment), Some(shipment), None]
    );
}
