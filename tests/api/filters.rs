//! The plausibility filter as an organisation sets it, and as it treats a real trace.
use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
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

/// The real Munich trace (1 Hz): coordinates `[lon, lat]` and their times.
fn munich_trace() -> Vec<(f64, f64)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/simulator/tracks/barefoot_munich_car_1hz.geojson"
    );
    let trace: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    trace["features"][0]["geometry"]["coordinates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_f64().unwrap(), c[1].as_f64().unwrap()))
        .collect()
}

#[sqlx::test]
async fn a_munich_replay_stores_every_point_and_the_jump_never_becomes_current(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (vehicle, token) = app.vehicle(&jwt, "Car Munich").await;
    let mut watcher = app.ws(&format!("token={jwt}")).await;
    watcher.subscribe(&format!("vehicle:{vehicle}"), None).await;

    // Replayed at its recorded 1 Hz, ending a minute ago, in batches as a phone catching up.
    let trace = munich_trace();
    let start = Utc::now() - Duration::seconds(trace.len() as i64 + 60);
    let points: Vec<Value> = trace
        .iter()
        .enumerate()
        .map(|(i, (lon, lat))| {
            json!({"lat": lat, "lon": lon,
                   "recorded_at": (start + Duration::seconds(i as i64)).to_rfc3339()})
        })
        .collect();
    // The watcher reads each batch's events as they come, as an open map does: one that reads
    // nothing for seconds while more than a queue's worth piles up is cut off as too slow.
    let mut seen = Vec::new();
    for chunk in points.chunks(100) {
        let (status, body) = app.ingest(&token, json!(chunk)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let published = chunk.len() as u64 - body["filtered"].as_u64().unwrap();
        for _ in 0..published {
            let event = watcher.next().await;
            assert_eq!(event["type"], "position", "{event}");
            seen.push((
                event["data"]["lon"].as_f64().unwrap(),
                event["data"]["lat"].as_f64().unwrap(),
            ));
        }
    }

    let rows: Vec<(f64, f64, Option<String>)> = sqlx::query_as(
        "SELECT ST_X(point::geometry), ST_Y(point::geometry), filter_reason FROM positions
         WHERE vehicle_id = $1 ORDER BY recorded_at",
    )
    .bind(vehicle)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), trace.len(), "every point is stored");
    // Fix 619 is 470 m from fix 618, one second later.
    let jump = 619;
    assert_eq!(rows[jump].2.as_deref(), Some("jump"));
    assert!(
        rows[..jump].iter().all(|r| r.2.is_none()),
        "nothing before it is marked"
    );
    // The vehicle really is there: within seconds the filter accepts the new place again.
    let healed = rows[jump..].iter().position(|r| r.2.is_none()).unwrap() + jump;
    assert!(healed <= jump + 6, "accepted again at fix {healed}");
    assert!(rows[healed..].iter().all(|r| r.2.is_none()));

    // The audit log shows every row with its decision, page by page.
    let mut logged = Vec::new();
    let mut path = format!("/api/v1/vehicles/{vehicle}/positions?limit=500");
    loop {
        let (status, page) = app.get(&jwt, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        logged.extend(page["positions"].as_array().unwrap().iter().cloned());
        let Some(next) = page["next"].as_str() else {
            break;
        };
        path = format!(
            "/api/v1/vehicles/{vehicle}/positions?limit=500&after={}",
            next.replace('+', "%2B")
        );
    }
    assert_eq!(logged.len(), trace.len());
    assert_eq!(logged[jump]["filter_reason"], "jump");
    assert_eq!(logged[jump]["lon"], trace[jump].0);
    let (_, marked) = app
        .get(
            &jwt,
            &format!("/api/v1/vehicles/{vehicle}/positions?filtered=true"),
        )
        .await;
    let marked = marked["positions"].as_array().unwrap();
    assert_eq!(marked.len(), healed - jump);
    assert!(marked.iter().all(|r| r["filter_reason"] == "jump"));

    // The watcher sees every accepted fix, in order, and never a marked one.
    let accepted: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.2.is_none())
        .map(|r| (r.0, r.1))
        .collect();
    assert_eq!(seen, accepted);
    watcher.expect_quiet().await;
    let (_, v) = app.get(&jwt, &format!("/api/v1/vehicles/{vehicle}")).await;
    let last = trace.last().unwrap();
    assert_eq!(v["last_position"]["lon"], last.0);
    assert_eq!(v["last_position"]["lat"], last.1);
}

#[sqlx::test]
async fn the_positions_log_is_for_the_organisations_dispatchers_only(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (_, driver) = app.user("Acme", "anna@acme.test", Role::Driver).await;
    let (_, other) = app.user("Other", "eve@other.test", Role::Dispatcher).await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    let (status, _) = app
        .ingest(
            &token,
            json!([{"lat": 0.0, "lon": 0.0}, step(0, Utc::now())]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let log = format!("/api/v1/vehicles/{vehicle}/positions");
    let (status, body) = app.get(&jwt, &log).await;
    assert_eq!(status, StatusCode::OK);
    let reasons: Vec<&Value> = body["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["filter_reason"])
        .collect();
    assert!(reasons.contains(&&json!("null_island")), "{body}");
    assert_eq!(body["next"], Value::Null);
    assert_eq!(app.get(&other, &log).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&driver, &log).await.0, StatusCode::FORBIDDEN);
    let (status, body) = app.get(&jwt, &format!("{log}?limit=0")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "limit");
    let (status, _) = app.get(&jwt, &format!("{log}?from=yesterday")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Each stored row's filter reason and late flag, in time order.
async fn decisions(app: &TestApp) -> Vec<(Option<String>, bool)> {
    sqlx::query_as("SELECT filter_reason, late FROM positions ORDER BY recorded_at")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_fix_stamped_ahead_of_its_clock_never_holds_the_marker(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    let mut ws = app.ws(&format!("token={jwt}")).await;
    ws.subscribe(&format!("vehicle:{vehicle}"), None).await;
    let now = Utc::now();
    let (status, body) = app.ingest(&token, step(0, now)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ws.next().await["type"], "position");

    // Four minutes ahead (inside the 5-minute `future` limit) and 4 km north.
    let mut ahead = step(1, now + Duration::minutes(4));
    ahead["lat"] = json!(48.1374 + 0.036);
    let (status, body) = app.ingest(&token, ahead).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["filtered"], 1, "{body}");

    // The next genuine fix is current at once, not late; the ahead one was never published.
    let (status, _) = app.ingest(&token, step(2, now)).await;
    assert_eq!(status, StatusCode::OK);
    let frame = ws.next().await;
    assert_eq!(frame["data"]["late"], false, "{frame}");
    assert_eq!(
        frame["data"]["lon"],
        json!(11.5755 + 2.0 * 0.0001),
        "{frame}"
    );
    let (_, v) = app.get(&jwt, &format!("/api/v1/vehicles/{vehicle}")).await;
    assert_eq!(v["last_position"]["lat"], 48.1374, "{v}");
    assert_eq!(
        decisions(&app).await,
        vec![
            (None, false),
            (None, false),
            (Some("clock_ahead".into()), false)
        ]
    );
}

#[sqlx::test]
async fn a_glitch_inside_a_backlog_is_marked_and_left_out_of_the_track(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    let shipment = app.shipment(&jwt, "SHP-1", vehicle, None).await;
    app.backdate(shipment).await;
    let base = Utc::now() - Duration::minutes(10);
    // Live: the first fix, then (after a tunnel) one twenty seconds on.
    app.ingest(&token, step(0, base)).await;
    app.ingest(&token, step(20, base)).await;
    // The phone's queue from the tunnel, with a 3 km glitch in the middle.
    let mut backlog: Vec<Value> = (1..20).map(|i| step(i, base)).collect();
    backlog[9]["lat"] = json!(48.1374 + 0.027);
    let (status, body) = app.ingest(&token, Value::Array(backlog)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 19);
    assert_eq!(body["filtered"], 1);
    let marked: Vec<(Option<String>, bool)> = decisions(&app).await;
    assert_eq!(marked[10], (Some("jump".into()), false));
    assert_eq!(marked.iter().filter(|(r, _)| r.is_some()).count(), 1);
    assert_eq!(marked.iter().filter(|(_, late)| *late).count(), 18);
    let (status, track) = app
        .get(&jwt, &format!("/api/v1/shipments/{shipment}/track"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let coordinates = track["features"][0]["geometry"]["coordinates"]
        .as_array()
        .unwrap();
    assert_eq!(coordinates.len(), 20);
    assert!(
        coordinates.iter().all(|c| c[1].as_f64().unwrap() < 48.14),
        "no spike is drawn: {coordinates:?}"
    );
}
