//! The read and management API: shipments, tracks, share links, fleet and nearby searches.
use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{step, TestApp};

#[sqlx::test]
async fn sign_in_sets_a_session_cookie_and_refuses_wrong_passwords(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.user("Acme", "ann@acme.test", Role::Admin).await;
    let res = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "ANN@acme.test", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("waymark_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(body["user"]["organisation"], "Acme");

    let session = cookie.split(';').next().unwrap();
    let me = app
        .http
        .get(app.url("/api/v1/auth/me"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);

    for (email, password) in [
        ("ann@acme.test", "wrong"),
        ("nobody@acme.test", "correct horse"),
    ] {
        let res = app
            .http
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["message"],
            "wrong email or password"
        );
    }
    let res = app
        .http
        .get(app.url("/api/v1/vehicles"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test]
async fn drivers_see_only_their_shipments_and_cannot_manage(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, dispatcher) = app.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (driver_id, driver) = app.user("Acme", "drv@acme.test", Role::Driver).await;
    let (v1, _) = app.vehicle(&dispatcher, "Van 1").await;
    let (v2, _) = app.vehicle(&dispatcher, "Van 2").await;
    let mine = app.shipment(&dispatcher, "MINE", v1, Some(driver_id)).await;
    let theirs = app.shipment(&dispatcher, "THEIRS", v2, None).await;

    let (_, list) = app.get(&driver, "/api/v1/shipments").await;
    let ids: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [mine]);
    assert_eq!(
        app.get(&driver, &format!("/api/v1/shipments/{theirs}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&driver, &format!("/api/v1/shipments/{mine}"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&driver, "/api/v1/vehicles").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&driver, "/api/v1/fleet").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(&driver, "/api/v1/vehicles", json!({"name": "Mine now"}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}

#[sqlx::test]
async fn shipments_are_validated_and_conflicts_named(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (vehicle, _) = app.vehicle(&jwt, "Van 1").await;
    let place = json!({"lat": 48.1, "lon": 11.5});
    let cases = [
        (
            json!({"reference": "", "origin": place, "destination": place}),
            "reference",
        ),
        (
            json!({"reference": "A", "origin": {"lat": 91, "lon": 0}, "destination": place}),
            "origin",
        ),
        (
            json!({"reference": "A", "origin": place, "destination": place, "planned_route": {"type": "Point", "coordinates": [1, 2]}}),
            "planned_route",
        ),
        (
            json!({"reference": "A", "origin": place, "destination": place, "planned_route": {"type": "LineString", "coordinates": [[1, 2]]}}),
            "planned_route",
        ),
        (
            json!({"reference": "A", "origin": place, "destination": place, "vehicle_id": 999_999}),
            "vehicle_id",
        ),
    ];
    for (body, field) in cases {
        let (status, reply) = app.post(&jwt, "/api/v1/shipments", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert_eq!(reply["error"]["field"], field);
    }
    app.shipment(&jwt, "SHP-1", vehicle, None).await;
    let (status, reply) = app
        .post(
            &jwt,
            "/api/v1/shipments",
            json!({"reference": "SHP-1", "origin": place, "destination": place}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
    let (status, reply) = app.post(&jwt, "/api/v1/shipments", json!({"reference": "SHP-2", "origin": place, "destination": place, "vehicle_id": vehicle})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "one active shipment per vehicle: {reply}"
    );
}

#[sqlx::test]
async fn status_changes_and_finished_shipments_stay_finished(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (vehicle, _) = app.vehicle(&jwt, "Van 1").await;
    let id = app.shipment(&jwt, "SHP-1", vehicle, None).await;
    let patch = |status: &str| {
        app.http
            .patch(app.url(&format!("/api/v1/shipments/{id}")))
            .bearer_auth(&jwt)
            .json(&json!({"status": status}))
            .send()
    };
    let res = patch("in_transit").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.json::<Value>().await.unwrap()["started_at"].is_string());
    assert_eq!(
        patch("teleported").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(patch("delivered").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        patch("in_transit").await.unwrap().status(),
        StatusCode::CONFLICT
    );
    // Delivered, the vehicle is free for its next shipment.
    app.shipment(&jwt, "SHP-2", vehicle, None).await;
}

#[sqlx::test]
async fn the_track_is_ordered_by_time_simplifiable_and_exportable(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    let id = app.shipment(&jwt, "SHP-1", vehicle, None).await;
    app.backdate(id).await;
    let base = Utc::now() - Duration::minutes(30);
    // Sent out of order, along a straight line: simplification keeps just the ends.
    app.ingest(&token, json!([step(0, base), step(1, base), step(4, base)]))
        .await;
    app.ingest(&token, json!([step(2, base), step(3, base)]))
        .await;
    let (status, track) = app
        .get(&jwt, &format!("/api/v1/shipments/{id}/track"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let line = &track["features"][0];
    assert_eq!(line["geometry"]["type"], "LineString");
    let times: Vec<String> = line["properties"]["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(times.len(), 5);
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    let lons: Vec<f64> = line["geometry"]["coordinates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_f64().unwrap())
        .collect();
    assert!(lons.windows(2).all(|w| w[0] < w[1]));

    let (_, simple) = app
        .get(&jwt, &format!("/api/v1/shipments/{id}/track?simplify_m=5"))
        .await;
    assert_eq!(
        simple["features"][0]["geometry"]["coordinates"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let since = (base + Duration::seconds(3))
        .to_rfc3339()
        .replace('+', "%2B");
    let (_, recent) = app
        .get(&jwt, &format!("/api/v1/shipments/{id}/track?since={since}"))
        .await;
    assert_eq!(
        recent["features"][0]["properties"]["times"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let gpx = app
        .http
        .get(app.url(&format!("/api/v1/shipments/{id}/track?format=gpx")))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(gpx.headers()["content-type"], "application/gpx+xml");
    assert_eq!(gpx.text().await.unwrap().matches("<trkpt").count(), 5);
    assert_eq!(
        app.get(&jwt, &format!("/api/v1/shipments/{id}/track?format=kml"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[sqlx::test]
async fn share_links_read_their_shipment_only_until_revoked(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (v1, _) = app.vehicle(&jwt, "Van 1").await;
    let (v2, _) = app.vehicle(&jwt, "Van 2").await;
    let shared = app.shipment(&jwt, "SHARED", v1, None).await;
    let other = app.shipment(&jwt, "OTHER", v2, None).await;
    let (status, link) = app
        .post(
            &jwt,
            &format!("/api/v1/shipments/{shared}/share"),
            json!({"expires_in_s": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = link["token"].as_str().unwrap();
    assert_eq!(link["url"], format!("/t/{token}"));

    let get = |path: String| app.http.get(app.url(&path)).send();
    assert_eq!(
        get(format!("/api/v1/shipments/{shared}?share={token}"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get(format!("/api/v1/shipments/{shared}/track?share={token}"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get(format!("/api/v1/shipments/{other}?share={token}"))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(format!("/t/{token}")).await.unwrap().status(),
        StatusCode::OK
    );

    let res = app
        .http
        .delete(app.url(&format!("/api/v1/shares/{token}")))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(format!("/api/v1/shipments/{shared}?share={token}"))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(format!("/t/{token}")).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    let (status, reply) = app
        .post(
            &jwt,
            &format!("/api/v1/shipments/{shared}/share"),
            json!({"expires_in_s": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    sqlx::query("INSERT INTO share_links (token_hash, organisation_id, shipment_id, expires_at)
                 SELECT $1, organisation_id, id, now() - interval '1 second' FROM shipments WHERE id = $2")
        .bind(waymark::auth::token::hash("expired-link-expired-link"))
        .bind(shared)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        get(format!(
            "/api/v1/shipments/{shared}?share=expired-link-expired-link"
        ))
        .await
        .unwrap()
        .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test]
async fn fleet_bbox_and_nearby_search_use_current_positions(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let places = [
        ("Munich", 48.1374, 11.5755),
        ("Augsburg", 48.3705, 10.8978),
        ("Liverpool", 53.4084, -2.9916),
    ];
    for (name, lat, lon) in places {
        let (_, token) = app.vehicle(&jwt, name).await;
        app.ingest(&token, json!({"lat": lat, "lon": lon})).await;
    }
    let (_, fleet) = app.get(&jwt, "/api/v1/fleet").await;
    assert_eq!(fleet["features"].as_array().unwrap().len(), 3);
    let (_, bavaria) = app.get(&jwt, "/api/v1/fleet?bbox=10,47,13,49").await;
    let names: Vec<&str> = bavaria["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Augsburg", "Munich"]);
    assert_eq!(
        app.get(&jwt, "/api/v1/fleet?bbox=1,2,3").await.0,
        StatusCode::BAD_REQUEST
    );

    // From Dachau: Munich (~17 km) before Augsburg (~50 km); Liverpool is out of range.
    let (status, near) = app
        .get(
            &jwt,
            "/api/v1/vehicles/nearby?lat=48.2603&lon=11.4342&radius_m=100000",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let order: Vec<&str> = near
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["vehicle"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["Munich", "Augsburg"]);
    let d = near[0]["distance_m"].as_f64().unwrap();
    assert!((15_000.0..20_000.0).contains(&d), "{d}");
    // At the pole too, where PostGIS's geography index returns its order wrong.
    for (name, lon) in [("Pole east", -180.0), ("Pole west", 0.0)] {
        let (_, token) = app.vehicle(&jwt, name).await;
        app.ingest(&token, json!({"lat": -90.0, "lon": lon})).await;
    }
    let (status, pole) = app
        .get(
            &jwt,
            "/api/v1/vehicles/nearby?lat=-90&lon=180&radius_m=10000",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{pole}");
    assert_eq!(pole.as_array().map(Vec::len), Some(2), "{pole}");
    // Across the antimeridian: 4.5 km from 179.99°E to 179.97°W.
    let (_, token) = app.vehicle(&jwt, "Date line").await;
    app.ingest(&token, json!({"lat": 0.0, "lon": 179.99})).await;
    let (status, over) = app
        .get(
            &jwt,
            "/api/v1/vehicles/nearby?lat=0&lon=-179.97&radius_m=5000",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{over}");
    let names: Vec<&str> = over
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["vehicle"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Date line"], "{over}");
    assert_eq!(
        app.get(&jwt, "/api/v1/vehicles/nearby?lat=95&lon=0")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get(&jwt, "/api/v1/vehicles/nearby?lat=48&lon=11&radius_m=0")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

/// The names of a fleet answer's vehicles, in its order.
fn feature_names(fleet: &Value) -> Vec<&str> {
    fleet["features"]
        .as_array()
        .unwrap_or_else(|| panic!("not a FeatureCollection: {fleet}"))
        .iter()
        .map(|f| f["properties"]["name"].as_str().unwrap())
        .collect()
}

#[sqlx::test]
async fn fleet_boxes_take_the_whole_world_hemispheres_the_antimeridian_and_the_poles(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let places = [
        ("Dateline", 0.0, 179.5),
        ("Denver", 39.7392, -104.9903),
        ("Greenwich", 1.0, 0.0),
        ("Munich", 48.1374, 11.5755),
        ("North Pole", 90.0, 0.0),
        ("South Pole", -90.0, 0.0),
    ];
    for (name, lat, lon) in places {
        let (_, token) = app.vehicle(&jwt, name).await;
        let (status, reply) = app.ingest(&token, json!({"lat": lat, "lon": lon})).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    let every: Vec<&str> = places.iter().map(|p| p.0).collect();
    let cases: [(&str, &[&str]); 6] = [
        ("-180,-90,180,90", &every),
        (
            "-180,0,180,90",
            &["Dateline", "Denver", "Greenwich", "Munich", "North Pole"],
        ),
        (
            "0,-90,180,90",
            &[
                "Dateline",
                "Greenwich",
                "Munich",
                "North Pole",
                "South Pole",
            ],
        ),
        // West edge east of the east edge: across the antimeridian, 170..180 and -180..-170.
        ("170,-10,-170,10", &["Dateline"]),
        ("-180,89,180,90", &["North Pole"]),
        ("-180,-90,180,-89", &["South Pole"]),
    ];
    for (bbox, expected) in cases {
        let (status, fleet) = app.get(&jwt, &format!("/api/v1/fleet?bbox={bbox}")).await;
        assert_eq!(status, StatusCode::OK, "{bbox}: {fleet}");
        assert_eq!(feature_names(&fleet), expected, "{bbox}");
    }
    // South above north is no box at all.
    let (status, reply) = app.get(&jwt, "/api/v1/fleet?bbox=0,10,1,5").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["error"]["field"], "bbox", "{reply}");
}

#[sqlx::test]
async fn health_and_readiness_answer(db: PgPool) {
    let app = TestApp::spawn(db).await;
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let unknown = app
        .http
        .get(app.url("/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
}

#[sqlx::test]
async fn the_openapi_document_lists_every_route(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let res = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body = res.text().await.unwrap();
    assert!(
        body == include_str!("../../docs/openapi.json"),
        "the served document is not docs/openapi.json"
    );
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/auth/login",
        "/auth/logout",
        "/auth/me",
        "/positions",
        "/osmand",
        "/owntracks",
        "/vehicles",
        "/vehicles/{id}",
        "/vehicles/{id}/token",
        "/vehicles/{id}/positions",
        "/vehicles/{id}/history",
        "/vehicles/nearby",
        "/fleet",
        "/users",
        "/shipments",
        "/shipments/{id}",
        "/shipments/{id}/track",
        "/shipments/{id}/share",
        "/shares/{token}",
        "/settings",
        "/alerts",
        "/alerts/{id}",
        "/alerts/{id}/acknowledge",
        "/geofences",
        "/geofences/{id}",
        "/vehicles/{id}/alert-settings",
        "/ws",
        "/openapi.json",
        "/settings",
        "/driver",
        "/driver/positions",
        "/users/{id}/device-link",
        "/users/{id}",
        "/users/{id}/sessions",
        "/auth/device-link",
        "/csp-report",
        "/shipments/{id}/chat",
        "/shipments/{id}/chat/read",
        "/chat/{id}",
        "/chat/{id}/reactions",
        "/chat/unread",
        "/eta/accuracy",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
}

#[sqlx::test]
async fn malformed_ids_and_query_strings_get_the_api_error_shape(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app.user("Acme", "d@acme.test", Role::Dispatcher).await;
    for path in [
        "/api/v1/vehicles/abc",
        "/api/v1/shipments/1.5",
        "/api/v1/shipments/x/track",
        "/api/v1/users?role=emperor",
        "/api/v1/shipments?status=1&status=2",
        "/api/v1/vehicles/nearby?lat=north&lon=11",
        "/api/v1/vehicles/nearby?lon=11",
    ] {
        let res = app
            .http
            .get(app.url(path))
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = res.json().await.expect("a JSON error body");
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            code == "validation" || code == "malformed",
            "{path}: {body}"
        );
    }
    let res = app
        .http
        .get(app.url("/api/v1/shipments/1/track?since=yesterday"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error());
    assert!(res.json::<Value>().await.unwrap()["error"]["code"].is_string());
}
