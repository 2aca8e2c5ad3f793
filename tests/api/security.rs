//! Defences at the edge: security headers and the content security policy, refusing cross-site
//! requests that ride on the session cookie, and rate limits on sign-in and ingest.
use chrono::{Duration, Utc};
use reqwest::{header, StatusCode};
use serde_json::json;
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{step, unique_prefix, TestApp, PATIENCE};

#[sqlx::test]
async fn pages_and_api_answers_carry_the_security_headers(db: PgPool) {
    let app = TestApp::spawn_with(
        db,
        None,
        &[
            "--tile-url",
            "https://{s}.tiles.example.com/{z}/{x}/{y}.png",
        ],
    )
    .await;
    for path in [
        "/",
        "/api/v1/openapi.json",
        "/api/v1/nope",
        "/static/css/app.css",
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        let h = res.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        assert!(
            csp.contains("img-src 'self' data: https://*.tiles.example.com;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert_eq!(
            h[header::REFERRER_POLICY],
            "strict-origin-when-cross-origin"
        );
        assert!(
            !h.contains_key(header::STRICT_TRANSPORT_SECURITY),
            "only over HTTPS"
        );
    }
    let res = app
        .http
        .post(app.url("/api/v1/csp-report"))
        .header(header::CONTENT_TYPE, "application/csp-report")
        .body(r#"{"csp-report":{"blocked-uri":"inline"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let reports = app
        .state
        .csp_reports
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(reports, 1);
}

#[sqlx::test]
async fn cross_site_requests_cannot_use_the_session_cookie(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let cookie = format!("waymark_session={jwt}");
    let create = |origin: Option<&str>, site: Option<&str>| {
        let mut req = app
            .http
            .post(app.url("/api/v1/vehicles"))
            .header(header::COOKIE, &cookie)
            .json(&json!({"name": "Van"}));
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        if let Some(s) = site {
            req = req.header("sec-fetch-site", s);
        }
        req.send()
    };
    let res = create(Some("https://evil.example"), Some("cross-site"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = create(None, Some("same-site")).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "a sibling subdomain");
    let res = create(Some(&format!("http://{}", app.addr)), Some("same-origin"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "our own pages");
    let res = create(None, None).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "not a browser");
    // A bearer token is chosen by the caller, never added by a browser.
    let res = app
        .http
        .post(app.url("/api/v1/vehicles"))
        .bearer_auth(&jwt)
        .header(header::ORIGIN, "https://evil.example")
        .json(&json!({"name": "Van"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let vehicles: i64 = sqlx::query_scalar("SELECT count(*) FROM vehicles")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(vehicles, 3);
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.http
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

#[sqlx::test]
async fn guessing_a_password_is_slowed_with_429_and_retry_after(db: PgPool) {
    // One attempt a minute after the burst, so a slow machine does not earn a new one mid-test.
    let app = TestApp::spawn_with(
        db,
        None,
        &[
            "--login-rate-per-account",
            "1",
            "--login-rate-per-address",
            "1",
        ],
    )
    .await;
    app.user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    // One attempt went into the sign-in above; the account's burst is ten.
    for _ in 0..9 {
        let res = login(&app, "Dispatch@acme.test", "wrong").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login(&app, "dispatch@acme.test", "correct horse").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another account from the same address is still let in, up to the address's own limit.
    app.user("Acme", "second@acme.test", Role::Dispatcher).await;
    let mut limited = false;
    for _ in 0..40 {
        if login(&app, "nobody@acme.test", "x").await.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "one address cannot try accounts without end");
}

#[sqlx::test]
async fn sign_in_limits_hold_across_instances_sharing_redis(db: PgPool) {
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL (scripts/test sets it)");
    sign_in_limits_hold_across_instances(db, &redis).await;
}

/// Two instances sharing the Redis at `url` (one server or a cluster) count sign-in attempts
/// together.
pub(crate) async fn sign_in_limits_hold_across_instances(db: PgPool, url: &str) {
    let shared = Some((url.to_owned(), unique_prefix()));
    let slow = [
        "--login-rate-per-account",
        "1",
        "--login-rate-per-address",
        "1",
    ];
    let a = TestApp::spawn_with(db.clone(), shared.clone(), &slow).await;
    let b = TestApp::spawn_with(db, shared, &slow).await;
    a.user("Acme", "dispatch@acme.test", Role::Dispatcher).await;
    // The account's burst is ten, one of them spent signing in above. Spread over two
    // instances, nine more wrong guesses use up the rest: each instance alone saw at most six.
    for i in 0..9 {
        let app = if i % 2 == 0 { &b } else { &a };
        let res = login(app, "dispatch@acme.test", "wrong").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    for app in [&a, &b] {
        let res = login(app, "dispatch@acme.test", "correct horse").await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().contains_key(header::RETRY_AFTER));
    }
}

#[sqlx::test]
async fn a_vehicle_over_its_ingest_rate_gets_429_and_nothing_is_stored(db: PgPool) {
    // One request every 100 s after the burst, so a slow machine does not earn a new one
    // mid-test.
    let app =
        TestApp::spawn_with(db, None, &["--ingest-rate", "0.01", "--ingest-burst", "3"]).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (_, token) = app.vehicle(&jwt, "Van 1").await;
    let (_, other) = app.vehicle(&jwt, "Van 2").await;
    let base = Utc::now() - Duration::minutes(1);
    for i in 0..3 {
        assert_eq!(app.ingest(&token, step(i, base)).await.0, StatusCode::OK);
    }
    let (status, body) = app.ingest(&token, step(3, base)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    // Tracker formats share the vehicle's budget; other vehicles have their own.
    let res = app
        .http
        .get(app.url(&format!("/api/v1/osmand?id={token}&lat=48.1&lon=11.5")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(app.ingest(&other, step(0, base)).await.0, StatusCode::OK);
    assert_eq!(app.count_positions().await, 4);
}

#[sqlx::test]
async fn bodies_that_are_not_objects_or_hold_nul_get_400_and_store_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, admin) = app.user("Acme", "admin@acme.test", Role::Admin).await;
    let (vehicle, token) = app.vehicle(&admin, "Van 1").await;
    let now = Utc::now();

    // serde would build a struct from an array; the API takes objects only.
    let (status, body) = app
        .post(&admin, "/api/v1/vehicles", json!(["Van 2", "mps"]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "malformed");
    let (_, listed) = app.get(&admin, "/api/v1/vehicles").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // PostgreSQL cannot store NUL: refused up front, not failed in the database with a 500.
    let shipment = json!({
        "reference": "SHP\u{0}1",
        "origin": {"lat": 48.1, "lon": 11.5},
        "destination": {"lat": 48.2, "lon": 11.6},
    });
    let (status, body) = app.post(&admin, "/api/v1/shipments", shipment).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let mut position = step(0, now);
    position["note"] = json!("a\u{0}b");
    let (status, body) = app.ingest(&token, position).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "attributes", "{body}");
    let url = app.url(&format!(
        "/api/v1/osmand?id={token}&lat=48.1&lon=11.5&timestamp={}&note=a%00b",
        now.timestamp()
    ));
    let res = app.http.get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.count_positions().await, 0);

    // A whole number written as a float is the integer.
    let (status, body) = app
        .post(
            &admin,
            "/api/v1/shipments",
            json!({
                "reference": "SHP-2",
                "origin": {"lat": 48.1, "lon": 11.5},
                "destination": {"lat": 48.2, "lon": 11.6},
                "vehicle_id": vehicle as f64,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["vehicle_id"], vehicle);
}

#[sqlx::test]
async fn a_request_over_the_time_limit_answers_503_and_the_server_goes_on(db: PgPool) {
    // Long enough for any ordinary request on a busy machine, which the server must go on
    // answering; the sign-in (a password hash) goes through an instance without the limit.
    let app = TestApp::spawn_with(db.clone(), None, &["--request-timeout-s", "5"]).await;
    let unlimited = TestApp::spawn_alone(db.clone()).await;
    let (_, admin) = unlimited.user("Acme", "admin@acme.test", Role::Admin).await;
    // A transaction holding the vehicles table makes the listing wait on the database.
    let mut blocker = db.begin().await.unwrap();
    sqlx::query("LOCK TABLE vehicles IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    // Without the limit this would wait for as long as the lock is held: until the test fails.
    let (status, body) = tokio::time::timeout(2 * PATIENCE, app.get(&admin, "/api/v1/vehicles"))
        .await
        .expect("answered at the limit, while the database still holds the request");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    blocker.rollback().await.unwrap();
    let (status, body) = app.get(&admin, "/api/v1/vehicles").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
