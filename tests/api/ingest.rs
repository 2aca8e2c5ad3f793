//! Ingest: what a device's POST stores, what it rejects, and that a 2xx means durable.
use chrono::{Datelike, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{step, TestApp};

async fn fleet_app(db: PgPool) -> (TestApp, String, i64, String) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    (app, jwt, vehicle, token)
}

#[sqlx::test]
async fn a_single_position_is_stored_and_becomes_current(db: PgPool) {
    let (app, jwt, vehicle, token) = fleet_app(db).await;
    let (status, body) = app
        .ingest(
            &token,
            json!({"lat": 48.1374, "lng": 11.5755, "speed": 12.5, "heading": 270}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["duplicates"], 0);
    assert_eq!(body["seqs"].as_array().unwrap().len(), 1);

    let (_, v) = app.get(&jwt, &format!("/api/v1/vehicles/{vehicle}")).await;
    assert_eq!(v["last_position"]["lat"], 48.1374);
    assert_eq!(v["last_position"]["lon"], 11.5755);
    assert_eq!(v["last_position"]["speed"], 12.5);
    assert_eq!(v["last_position"]["heading"], 270.0);
    let stored: (f64, f64) =
        sqlx::query_as("SELECT ST_Y(point::geometry), ST_X(point::geometry) FROM positions")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(stored, (48.1374, 11.5755));
}

#[sqlx::test]
async fn a_batch_is_stored_in_one_go_with_increasing_seqs(db: PgPool) {
    let (app, _, _, token) = fleet_app(db).await;
    let base = Utc::now() - Duration::minutes(10);
    let batch: Vec<Value> = (0..50).map(|i| step(i, base)).collect();
    let (status, body) = app.ingest(&token, Value::Array(batch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 50);
    let seqs: Vec<i64> = body["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(app.count_positions().await, 50);
}

#[sqlx::test]
async fn every_validation_error_names_its_field_and_index_and_stores_nothing(db: PgPool) {
    let (app, _, _, token) = fleet_app(db).await;
    let ok = json!({"lat": 1.0, "lon": 1.0});
    let cases = [
        (json!({"lat": 90.5, "lon": 0}), "lat"),
        (json!({"lat": 0, "lon": 181}), "lon"),
        (json!({"lat": 1, "lon": 1, "accuracy": -3}), "accuracy"),
        (json!({"lat": 1, "lon": 1, "speed": -1}), "speed"),
        (json!({"lat": 1, "lon": 1, "heading": 400}), "heading"),
        (json!({"lat": 1, "lon": 1, "battery": 120}), "battery"),
        (json!({"lat": "north", "lon": 1}), "lat"),
        (
            json!({"lat": 1, "lon": 1, "recorded_at": "not a time"}),
            "recorded_at",
        ),
        (
            json!({"lat": 1, "lon": 1, "recorded_at": (Utc::now() + Duration::hours(30)).to_rfc3339()}),
            "recorded_at",
        ),
        (
            json!({"lat": 1, "lon": 1, "recorded_at": "1999-01-01T00:00:00Z"}),
            "recorded_at",
        ),
    ];
    for (bad, field) in cases {
        let (status, body) = app.ingest(&token, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["code"], "validation", "{bad}");
        assert_eq!(body["error"]["field"], field, "{bad}");
        assert!(
            body["error"].get("index").is_none(),
            "a single object has no index"
        );

        let (status, body) = app.ingest(&token, json!([ok, ok, bad])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["field"], field);
        assert_eq!(body["error"]["index"], 2, "{bad}");
    }
    let (status, body) = app.ingest(&token, json!([])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "validation");
    assert_eq!(
        app.count_positions().await,
        0,
        "a rejected batch stores nothing"
    );
}

#[sqlx::test]
async fn malformed_oversized_and_mistyped_bodies_are_refused(db: PgPool) {
    let (app, _, _, token) = fleet_app(db).await;
    let url = app.url("/api/v1/positions");
    let send = |body: Vec<u8>, content_type: &'static str| {
        app.http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let res = send(b"{\"lat\": 1, ".to_vec(), "application/json")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "malformed"
    );

    let res = send(b"lat=1&lon=2".to_vec(), "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = format!("[{}]", vec![r#"{"lat":1.0,"lon":1.0,"note":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#; 16_000].join(","));
    assert!(huge.len() > 1024 * 1024);
    let res = send(huge.into_bytes(), "application/json").await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "too_large"
    );

    let too_many: Vec<Value> = (0..1001)
        .map(|i| step(i, Utc::now() - Duration::hours(1)))
        .collect();
    let (status, body) = app.ingest(&token, Value::Array(too_many)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(app.count_positions().await, 0);
}

#[sqlx::test]
async fn a_resent_position_is_stored_once_and_gets_the_same_seq(db: PgPool) {
    let (app, _, _, token) = fleet_app(db).await;
    let p = step(0, Utc::now() - Duration::minutes(1));
    let (_, first) = app.ingest(&token, p.clone()).await;
    let (status, again) = app
        .ingest(
            &token,
            json!([p, step(1, Utc::now() - Duration::minutes(1))]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["duplicates"], 1);
    assert_eq!(again["accepted"], 1);
    assert_eq!(again["seqs"][0], first["seqs"][0]);
    assert_eq!(app.count_positions().await, 2);
}

#[sqlx::test]
async fn a_late_point_is_stored_in_the_track_but_never_moves_the_vehicle(db: PgPool) {
    let (app, jwt, vehicle, token) = fleet_app(db).await;
    let base = Utc::now() - Duration::minutes(5);
    app.ingest(&token, step(10, base)).await;
    let (status, _) = app.ingest(&token, step(5, base)).await;
    assert_eq!(status, StatusCode::OK);
    let late: bool = sqlx::query_scalar("SELECT late FROM positions WHERE recorded_at = $1")
        .bind(base + Duration::seconds(5))
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(late);
    let (_, v) = app.get(&jwt, &format!("/api/v1/vehicles/{vehicle}")).await;
    assert_eq!(
        v["last_position"]["lon"],
        step(10, base)["lon"],
        "the marker stays at the newest point"
    );
}

#[sqlx::test]
async fn implausible_points_are_kept_for_audit_but_never_become_current(db: PgPool) {
    let (app, jwt, vehicle, token) = fleet_app(db).await;
    let base = Utc::now() - Duration::minutes(5);
    app.ingest(&token, step(0, base)).await;
    // 0,0; a jump of ~7 km in one second; a vague fix.
    let mut jump = step(1, base);
    jump["lon"] = json!(11.67);
    let mut vague = step(2, base);
    vague["accuracy"] = json!(2000);
    let (_, body) = app
        .ingest(&token, json!([{"lat": 0.0, "lon": 0.0}, jump, vague]))
        .await;
    assert_eq!(body["filtered"], 3, "{body}");
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT filter_reason FROM positions WHERE filter_reason IS NOT NULL ORDER BY seq",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(reasons, ["null_island", "jump", "inaccurate"]);
    let (_, v) = app.get(&jwt, &format!("/api/v1/vehicles/{vehicle}")).await;
    assert_eq!(v["last_position"]["lon"], step(0, base)["lon"]);
}

#[sqlx::test]
async fn missing_wrong_and_rotated_tokens_are_refused(db: PgPool) {
    let (app, jwt, vehicle, token) = fleet_app(db).await;
    let p = json!({"lat": 1.0, "lon": 1.0});
    let res = app
        .http
        .post(app.url("/api/v1/positions"))
        .json(&p)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "unauthorized"
    );
    let (status, _) = app
        .ingest("not-a-real-token-not-a-real-token", p.clone())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A dispatcher's session is not an ingest token.
    let (status, _) = app.ingest(&jwt, p.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = app
        .post(
            &jwt,
            &format!("/api/v1/vehicles/{vehicle}/token"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.ingest(&token, p.clone()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old token stops working"
    );
    let (status, _) = app.ingest(body["ingest_token"].as_str().unwrap(), p).await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test]
async fn positions_stay_inside_their_organisation(db: PgPool) {
    let (app, jwt_a, _, _) = fleet_app(db).await;
    let (_, jwt_b) = app.user("Other Co", "boss@other.test", Role::Admin).await;
    let (vehicle_b, token_b) = app.vehicle(&jwt_b, "Their truck").await;
    let (status, _) = app
        .ingest(&token_b, json!({"lat": 53.4, "lon": -2.99}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (_, fleet_a) = app.get(&jwt_a, "/api/v1/fleet").await;
    assert_eq!(fleet_a["features"].as_array().unwrap().len(), 0);
    let (status, _) = app
        .get(&jwt_a, &format!("/api/v1/vehicles/{vehicle_b}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, fleet_b) = app.get(&jwt_b, "/api/v1/fleet").await;
    assert_eq!(fleet_b["features"].as_array().unwrap().len(), 1);
}

#[sqlx::test]
async fn the_first_position_starts_a_planned_shipment_and_attaches_to_it(db: PgPool) {
    let (app, jwt, vehicle, token) = fleet_app(db).await;
    let shipment = app.shipment(&jwt, "SHP-1", vehicle, None).await;
    let (_, s) = app
        .get(&jwt, &format!("/api/v1/shipments/{shipment}"))
        .await;
    assert_eq!(s["status"], "planned");
    app.ingest(&token, step(0, Utc::now() - Duration::seconds(30)))
        .await;
    let (_, s) = app
        .get(&jwt, &format!("/api/v1/shipments/{shipment}"))
        .await;
    assert_eq!(s["status"], "in_transit");
    assert_eq!(s["last_position"]["shipment_id"], shipment);
    assert!(s["started_at"].is_string());
}

#[sqlx::test]
async fn acknowledged_positions_survive_a_shutdown_under_load(db: PgPool) {
    let (app, _, _, token) = fleet_app(db).await;
    let base = Utc::now() - Duration::hours(1);
    // Many concurrent requests share commits; each 200 must mean stored.
    let posts = (0..200).map(|i| {
        let (http, url, token) = (
            app.http.clone(),
            app.url("/api/v1/positions"),
            token.clone(),
        );
        async move {
            let res = http
                .post(url)
                .bearer_auth(token)
                .json(&step(i, base))
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    });
    let replies = futures_util::future::join_all(posts).await;
    let acknowledged = replies.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(acknowledged, 200);
    let db = app.db.clone();
    app.shutdown().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, 200);
}

#[sqlx::test]
async fn positions_land_in_monthly_partitions_kept_ready_ahead_of_the_clock(db: PgPool) {
    let (app, _, _, token) = fleet_app(db).await;
    let now = Utc::now();
    // The upkeep every instance runs at start and every few hours, run again here: a month
    // that began since the server started must not leave `now`'s month out.
    waymark::db::ensure_partitions(&app.db).await.unwrap();
    let (status, _) = app
        .ingest(&token, json!([{"lat": 48.1, "lon": 11.5, "recorded_at": "2005-06-01T12:00:00Z"}, step(0, now)]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let homes: Vec<String> =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM positions ORDER BY recorded_at")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let this_month = format!("positions_{}", now.format("%Y_%m"));
    assert_eq!(homes, ["positions_default".to_owned(), this_month]);
    // This month and the two after it exist before anything is written to them.
    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'positions'::regclass ORDER BY 1",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let month = |ahead: u32| {
        let first = now.date_naive().with_day(1).unwrap();
        format!(
            "positions_{}",
            first
                .checked_add_months(chrono::Months::new(ahead))
                .unwrap()
                .format("%Y_%m")
        )
    };
    for ahead in 0..=2 {
        assert!(
            partitions.contains(&month(ahead)),
            "{partitions:?} lacks {}",
            month(ahead)
        );
    }
}

#[sqlx::test]
async fn retention_drops_expired_partitions_and_keeps_the_rest(db: PgPool) {
    let (app, _, _, token) = fleet_app(db).await;
    // Partitions of 14 and 11 months ago, as a server running that long would have made.
    let pool = app.db.clone();
    let month_ago = |months: i32| {
        let pool = pool.clone();
        async move {
            let (name, from, to): (String, String, String) = sqlx::query_as(
                "SELECT to_char(m, 'YYYY_MM'), m::text, (m + interval '1 month')::text
             FROM (SELECT date_trunc('month', now() AT TIME ZONE 'UTC')
                          - make_interval(months => $1) AS m) AS t",
            )
            .bind(months)
            .fetch_one(&pool)
            .await
            .unwrap();
            sqlx::query(&format!(
                "CREATE TABLE positions_{name} PARTITION OF positions
             FOR VALUES FROM ('{from}+00') TO ('{to}+00')"
            ))
            .execute(&pool)
            .await
            .unwrap();
            (format!("positions_{name}"), from)
        }
    };
    let (old, old_start) = month_ago(14).await;
    let (kept, kept_start) = month_ago(11).await;
    let at = |start: &str| format!("{}T12:00:00Z", &start[..10]);
    // Its month's partition exists even if a month began since the server started (the
    // partitions are made ahead); its month is the one to expect, whenever the test looks.
    let recent = Utc::now();
    let (status, body) = app
        .ingest(
            &token,
            json!([
                {"lat": 48.1, "lon": 11.5, "recorded_at": "2005-06-01T12:00:00Z"},
                {"lat": 48.1, "lon": 11.5, "recorded_at": at(&old_start)},
                {"lat": 48.1, "lon": 11.5, "recorded_at": at(&kept_start)},
                step(0, recent),
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_eq!(
        waymark::db::drop_old_partitions(&app.db, 12).await.unwrap(),
        1
    );
    let homes: Vec<String> =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM positions ORDER BY recorded_at")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let its_month = format!("positions_{}", recent.format("%Y_%m"));
    assert_eq!(
        homes,
        [kept, its_month],
        "the expired month and the far past are gone"
    );
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&old)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(exists, None, "{old} is dropped, not emptied");
    assert_eq!(
        waymark::db::drop_old_partitions(&app.db, 12).await.unwrap(),
        0
    );
}
