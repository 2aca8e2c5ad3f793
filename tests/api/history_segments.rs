//! Trips and stops kept up to date from fixes posted through the real ingest API: a delivery day
//! from a real trace, a backlog arriving an hour late giving what arriving in time gives, marked
//! glitches and duplicates changing nothing, new settings detecting again, and the background
//! task doing it without being asked.
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::days::Delivery;
use crate::support::{fleet, wait_until, TestApp};

/// The delivery day from `start`, as a phone posts it.
fn delivery_day(start: DateTime<Utc>) -> Vec<Value> {
    Delivery::at(start).json()
}

/// Posts `fixes` in batches; how many the filter marked.
async fn post_all(app: &TestApp, token: &str, fixes: &[Value]) -> i64 {
    let mut marked = 0;
    for batch in fixes.chunks(500) {
        let (status, body) = app.ingest(token, json!(batch)).await;
        assert_eq!(status, 200, "{body}");
        marked += body["filtered"].as_i64().unwrap();
    }
    marked
}

/// A segment as (kind, started, ended, closed, distance in whole metres).
type Row = (String, DateTime<Utc>, DateTime<Utc>, bool, i64);

/// The vehicle's segments in time order.
async fn segments(db: &PgPool, vehicle: i64) -> Vec<Row> {
    sqlx::query_as(
        "SELECT kind, started_at, ended_at, closed, round(distance_m)::bigint FROM segments
         WHERE vehicle_id = $1 ORDER BY started_at",
    )
    .bind(vehicle)
    .fetch_all(db)
    .await
    .unwrap()
}

fn kinds(s: &[Row]) -> Vec<(&str, bool)> {
    s.iter().map(|(k, _, _, c, _)| (k.as_str(), *c)).collect()
}

#[sqlx::test]
async fn a_delivery_day_posted_live_is_a_trip_a_stop_and_a_trip_under_way(db: PgPool) {
    let f = fleet(TestApp::spawn(db.clone()).await).await;
    let start = Utc::now() - Duration::hours(2);
    let day = delivery_day(start);
    post_all(&f.app, &f.token, &day).await;
    f.app.segment().await;
    let got = segments(&db, f.vehicle).await;
    assert_eq!(
        kinds(&got),
        [("trip", true), ("stop", true), ("trip", false)],
        "{got:?}"
    );
    let parked = got[1].2 - got[1].1;
    assert!((40..=42).contains(&parked.num_minutes()), "{parked}");
    assert!(got[0].4 > 12_000 && got[2].4 > 12_000, "{got:?}");
    // The closed trip keeps its track, simplified, from its first fix to its last.
    let (path, started): (Vec<u8>, DateTime<Utc>) = sqlx::query_as(
        "SELECT path, started_at FROM segments WHERE vehicle_id = $1 AND kind = 'trip' AND closed",
    )
    .bind(f.vehicle)
    .fetch_one(&db)
    .await
    .unwrap();
    let vertices = waymark::history::path::decode(started, &path);
    assert!(
        vertices.len() > 20 && vertices.len() < 600,
        "{}",
        vertices.len()
    );
    assert_eq!(vertices[0].at, got[0].1);
    assert_eq!(vertices.last().unwrap().at, got[0].2);
    // Nothing new: nothing changes.
    f.app.segment().await;
    assert_eq!(segments(&db, f.vehicle).await, got);
}

#[sqlx::test]
async fn a_backlog_arriving_late_gives_what_arriving_in_time_gives(db: PgPool) {
    let f = fleet(TestApp::spawn(db.clone()).await).await;
    let (late_vehicle, late_token) = f.app.vehicle(&f.dispatcher, "Van 2").await;
    let start = Utc::now() - Duration::hours(2);
    let day = delivery_day(start);
    post_all(&f.app, &f.token, &day).await;
    f.app.segment().await;

    // The other van's phone was offline from the end of the drive out until well into the drive
    // back: its fixes arrive after the rest, once the detector has seen the rest.
    let (held_from, held_to) = (1000, 1500);
    let (mut live, held) = (day[..held_from].to_vec(), day[held_from..held_to].to_vec());
    live.extend_from_slice(&day[held_to..]);
    post_all(&f.app, &late_token, &live).await;
    f.app.segment().await;
    assert_ne!(
        kinds(&segments(&db, late_vehicle).await),
        kinds(&segments(&db, f.vehicle).await),
        "without the backlog there is no stop"
    );
    post_all(&f.app, &late_token, &held).await;
    f.app.segment().await;
    assert_eq!(
        segments(&db, late_vehicle).await,
        segments(&db, f.vehicle).await
    );
}

#[sqlx::test]
async fn marked_glitches_and_duplicates_change_nothing(db: PgPool) {
    let f = fleet(TestApp::spawn(db.clone()).await).await;
    let (other, other_token) = f.app.vehicle(&f.dispatcher, "Van 2").await;
    let start = Utc::now() - Duration::hours(2);
    let day = delivery_day(start);
    let marked_anyway = post_all(&f.app, &f.token, &day).await;

    // The same day with a glitch in the middle of the stop (5 km away for one second: the filter
    // marks it) and every tenth fix sent twice.
    let mut faulty = day.clone();
    let mut glitch = day[1250].clone();
    glitch["lat"] = json!(glitch["lat"].as_f64().unwrap() + 0.045);
    glitch["recorded_at"] =
        json!((start + Duration::minutes(45) + Duration::milliseconds(500)).to_rfc3339());
    faulty.push(glitch);
    faulty.sort_by_key(|f| {
        f["recorded_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap()
    });
    let repeated: Vec<Value> = faulty.iter().step_by(10).cloned().collect();
    faulty.extend(repeated);
    let marked = post_all(&f.app, &other_token, &faulty).await;
    assert_eq!(marked, marked_anyway + 1, "the glitch is marked");
    f.app.segment().await;
    assert_eq!(segments(&db, other).await, segments(&db, f.vehicle).await);
}

#[sqlx::test]
async fn new_trip_settings_detect_the_history_again(db: PgPool) {
    let f = fleet(TestApp::spawn(db.clone()).await).await;
    let admin = f
        .app
        .user("Acme", "boss@acme.test", waymark::auth::Role::Admin)
        .await
        .1;
    post_all(
        &f.app,
        &f.token,
        &delivery_day(Utc::now() - Duration::hours(2)),
    )
    .await;
    f.app.segment().await;
    assert_eq!(segments(&db, f.vehicle).await.len(), 3);
    // Forty minutes parked is not a stop when a stop takes an hour: one trip there and back.
    let (status, body) = f
        .app
        .patch(
            &admin,
            "/api/v1/settings",
            json!({"trips": {"min_stop_s": 3600}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    f.app.segment().await;
    let got = segments(&db, f.vehicle).await;
    assert_eq!(kinds(&got), [("trip", false)], "{got:?}");
    assert!(got[0].4 > 24_000, "{got:?}");
}

#[sqlx::test]
async fn the_background_task_keeps_trips_and_stops_up_to_date(db: PgPool) {
    let app = TestApp::spawn_with(db.clone(), None, &["--segment-tick-s", "1"]).await;
    let f = fleet(app).await;
    post_all(
        &f.app,
        &f.token,
        &delivery_day(Utc::now() - Duration::hours(2)),
    )
    .await;
    wait_until("trips and stops detected", async || {
        segments(&db, f.vehicle).await.len() == 3
    })
    .await;
}
