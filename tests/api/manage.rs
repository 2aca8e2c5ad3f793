//! Managing the fleet through the API: changing a vehicle (name, speed unit), retiring it and
//! putting it back in service, and a shipment's share links listed and revoked by id.
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{fleet, heard_before_cache_expiry, step, unique_prefix, Fleet, TestApp};

impl Fleet {
    fn path(&self) -> String {
        format!("/api/v1/vehicles/{}", self.vehicle)
    }

    async fn change(&self, body: Value) -> (StatusCode, Value) {
        self.app.patch(&self.dispatcher, &self.path(), body).await
    }

    /// A fix through the OsmAnd protocol, whose speed is in the vehicle's unit; the status.
    async fn osmand(&self, app: &TestApp, speed: f64, at: i64) -> StatusCode {
        app.http
            .get(app.url(&format!(
                "/api/v1/osmand?id={}&lat=48.1374&lon=11.5755&timestamp={at}&speed={speed}",
                self.token
            )))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn owntracks(&self) -> StatusCode {
        self.app
            .http
            .post(self.app.url("/api/v1/owntracks"))
            .basic_auth("jane", Some(&self.token))
            .json(&json!({"_type": "location", "lat": 48.1, "lon": 11.5, "tst": chrono::Utc::now().timestamp()}))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn listed(&self, query: &str) -> Vec<i64> {
        let (status, body) = self
            .app
            .get(&self.dispatcher, &format!("/api/v1/vehicles{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_i64().unwrap())
            .collect()
    }

    async fn stored_speeds(&self) -> Vec<f64> {
        sqlx::query_scalar(
            "SELECT speed::float8 FROM positions WHERE vehicle_id = $1 ORDER BY recorded_at",
        )
        .bind(self.vehicle)
        .fetch_all(&self.app.db)
        .await
        .unwrap()
    }
}

#[sqlx::test]
async fn a_vehicle_is_renamed_and_its_new_speed_unit_applies_to_the_next_fix(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let now = chrono::Utc::now().timestamp();
    // Knots by default; the first fix also puts the token in the instance's cache.
    assert_eq!(f.osmand(&f.app, 10.0, now - 20).await, StatusCode::OK);

    let (status, body) = f
        .change(json!({"name": "  Van 1 (blue)  ", "speed_unit": "mps"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Van 1 (blue)");
    assert_eq!(body["speed_unit"], "mps");
    assert_eq!(body["status"], "active");
    assert_eq!(body["retired_at"], Value::Null);
    let (_, read) = f.app.get(&f.dispatcher, &f.path()).await;
    assert_eq!(read["name"], "Van 1 (blue)");

    // The cached lookup still said knots: the change must have cleared it.
    assert_eq!(f.osmand(&f.app, 10.0, now - 10).await, StatusCode::OK);
    let speeds = f.stored_speeds().await;
    assert_eq!(speeds.len(), 2);
    assert!((speeds[0] - 5.14444).abs() < 0.01, "knots: {speeds:?}");
    assert!((speeds[1] - 10.0).abs() < 0.01, "m/s: {speeds:?}");
}

#[sqlx::test]
async fn a_retired_vehicle_keeps_its_history_leaves_the_live_fleet_and_its_token_answers_410(
    db: PgPool,
) {
    let f = fleet(TestApp::spawn(db).await).await;
    let now = chrono::Utc::now();
    assert_eq!(f.app.ingest(&f.token, step(0, now)).await.0, StatusCode::OK);
    let (other, _) = f.app.vehicle(&f.dispatcher, "Van 2").await;

    let (status, body) = f.change(json!({"status": "retired"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "retired");
    assert!(body["retired_at"].is_string(), "{body}");

    // Its devices are told it is for good, through every ingest door, and nothing is stored.
    let (status, refused) = f.app.ingest(&f.token, step(1, now)).await;
    assert_eq!(status, StatusCode::GONE, "{refused}");
    assert_eq!(refused["error"]["code"], "vehicle_retired");
    assert_eq!(
        f.osmand(&f.app, 1.0, now.timestamp()).await,
        StatusCode::GONE
    );
    assert_eq!(f.owntracks().await, StatusCode::GONE);
    assert_eq!(f.stored_speeds().await.len(), 1);

    // It leaves the live fleet…
    assert_eq!(f.listed("").await, vec![other]);
    assert_eq!(f.listed("?status=active").await, vec![other]);
    assert_eq!(f.listed("?status=retired").await, vec![f.vehicle]);
    let mut all = f.listed("?status=all").await;
    all.sort();
    assert_eq!(all, vec![f.vehicle, other]);
    let (_, geojson) = f.app.get(&f.dispatcher, "/api/v1/fleet").await;
    assert_eq!(
        geojson["features"].as_array().unwrap().len(),
        0,
        "{geojson}"
    );
    let (_, near) = f
        .app
        .get(
            &f.dispatcher,
            "/api/v1/vehicles/nearby?lat=48.1374&lon=11.5755&radius_m=5000",
        )
        .await;
    assert_eq!(near, json!([]));
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    let subscribed = ws.subscribe("fleet", None).await;
    let ids: Vec<i64> = subscribed["snapshot"]["vehicles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![other]);

    // …keeps its history…
    let (status, one) = f.app.get(&f.dispatcher, &f.path()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["status"], "retired");
    assert!(one["last_position"].is_object(), "{one}");
    let (status, log) = f
        .app
        .get(&f.dispatcher, &format!("{}/positions", f.path()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(log["positions"].as_array().unwrap().len(), 1, "{log}");

    // …and cannot be given a shipment.
    let (status, body) = f
        .app
        .post(
            &f.dispatcher,
            "/api/v1/shipments",
            json!({"reference": "SHP-1", "origin": {"lat": 48.1, "lon": 11.5},
                   "destination": {"lat": 48.2, "lon": 11.6}, "vehicle_id": f.vehicle}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "vehicle_id", "{body}");

    // Back in service, the same token works again.
    let (status, body) = f.change(json!({"status": "active"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["retired_at"], Value::Null);
    assert_eq!(f.app.ingest(&f.token, step(2, now)).await.0, StatusCode::OK);
}

#[sqlx::test]
async fn a_vehicle_carrying_a_shipment_cannot_be_retired(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let shipment = f
        .app
        .shipment(&f.dispatcher, "SHP-77", f.vehicle, None)
        .await;
    let (status, body) = f.change(json!({"status": "retired"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SHP-77"),
        "{body}"
    );
    assert_eq!(f.listed("").await, vec![f.vehicle]);
    // A second active shipment for it is refused at the field at fault, as is a reference taken.
    for (reference, field) in [("SHP-78", "vehicle_id"), ("SHP-77", "reference")] {
        let (status, body) = f
            .app
            .post(
                &f.dispatcher,
                "/api/v1/shipments",
                json!({"reference": reference, "origin": {"lat": 48.1, "lon": 11.5},
                       "destination": {"lat": 48.2, "lon": 11.6}, "vehicle_id": f.vehicle}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }

    let (status, _) = f
        .app
        .patch(
            &f.dispatcher,
            &format!("/api/v1/shipments/{shipment}"),
            json!({"status": "cancelled"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = f.change(json!({"status": "retired"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[sqlx::test]
async fn bad_vehicle_changes_are_refused_naming_the_field(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    for (body, field) in [
        (json!({}), ""),
        (json!({"name": "   "}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"speed_unit": "furlongs"}), "speed_unit"),
        (json!({"status": "scrapped"}), "status"),
    ] {
        let (status, reply) = f.change(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
        assert_eq!(reply["error"]["code"], "validation", "{body}: {reply}");
        if !field.is_empty() {
            assert_eq!(reply["error"]["field"], field, "{body}: {reply}");
        }
    }
    for body in [
        json!({"colour": "blue"}),
        json!(["name"]),
        json!({"name": 7}),
    ] {
        let (status, reply) = f.change(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
    }
    let (status, _) = f
        .app
        .get(&f.dispatcher, "/api/v1/vehicles?status=scrapped")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Nothing changed.
    let (_, read) = f.app.get(&f.dispatcher, &f.path()).await;
    assert_eq!(read["name"], "Van 1");
    assert_eq!(read["speed_unit"], "knots");

    // Drivers may not; another organisation's vehicle does not exist for them.
    let (_, driver) = f.app.user("Acme", "driver@acme.test", Role::Driver).await;
    let (status, _) = f
        .app
        .patch(&driver, &f.path(), json!({"name": "Mine"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, outsider) = f
        .app
        .user("Other", "dispatch@other.test", Role::Dispatcher)
        .await;
    for body in [json!({"name": "Mine"}), json!({"status": "retired"})] {
        let (status, _) = f.app.patch(&outsider, &f.path(), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (_, read) = f.app.get(&f.dispatcher, &f.path()).await;
    assert_eq!(
        (read["name"].as_str(), read["status"].as_str()),
        (Some("Van 1"), Some("active"))
    );
}

#[sqlx::test]
async fn retiring_a_vehicle_refuses_its_token_at_once_on_every_instance(db: PgPool) {
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL (scripts/test sets it)");
    let shared = Some((redis, unique_prefix()));
    let a = TestApp::spawn_instance(db.clone(), shared.clone()).await;
    let b = TestApp::spawn_instance(db, shared).await;
    let f = fleet(a).await;
    let now = chrono::Utc::now();
    // Instance b has the token cached from a first post: it would trust it until 10 s after.
    let cached = tokio::time::Instant::now();
    assert_eq!(b.ingest(&f.token, step(0, now)).await.0, StatusCode::OK);

    let (status, _) = f.change(json!({"status": "retired"})).await;
    assert_eq!(status, StatusCode::OK);
    heard_before_cache_expiry(&b, &f.token, cached, StatusCode::GONE).await;
    assert_eq!(b.ingest(&f.token, step(1, now)).await.0, StatusCode::GONE);
}

#[sqlx::test]
async fn a_shipments_share_links_are_listed_without_their_tokens_and_revoked_by_id(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let shipment = f
        .app
        .shipment(&f.dispatcher, "SHP-9", f.vehicle, None)
        .await;
    let make = format!("/api/v1/shipments/{shipment}/share");
    let (_, first) = f.app.post(&f.dispatcher, &make, json!({})).await;
    let (status, second) = f
        .app
        .post(
            &f.dispatcher,
            &make,
            json!({"chat": true, "expires_in_s": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let list = format!("/api/v1/shipments/{shipment}/shares");
    let (status, links) = f.app.get(&f.dispatcher, &list).await;
    assert_eq!(status, StatusCode::OK, "{links}");
    let links = links.as_array().unwrap().clone();
    assert_eq!(links.len(), 2);
    // Newest first; the tokens are never shown again.
    assert_eq!(links[0]["chat"], true);
    assert_eq!(links[1]["chat"], false);
    for link in &links {
        assert_eq!(link["active"], true, "{link}");
        assert_eq!(link["revoked_at"], Value::Null);
        assert!(link.get("token").is_none(), "{link}");
        let text = link.to_string();
        for token in [&first["token"], &second["token"]] {
            assert!(!text.contains(token.as_str().unwrap()), "{text}");
        }
    }

    // Another organisation, a driver, and another shipment's path cannot touch them.
    let (_, outsider) = f
        .app
        .user("Other", "dispatch@other.test", Role::Dispatcher)
        .await;
    let older = links[1]["id"].as_i64().unwrap();
    let revoke = format!("{list}/{older}");
    assert_eq!(f.app.get(&outsider, &list).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        f.app.delete(&outsider, &revoke).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, driver) = f.app.user("Acme", "driver@acme.test", Role::Driver).await;
    assert_eq!(f.app.get(&driver, &list).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        f.app.delete(&driver, &revoke).await.0,
        StatusCode::FORBIDDEN
    );
    let other_shipment = f
        .app
        .shipment(
            &f.dispatcher,
            "SHP-10",
            f.app.vehicle(&f.dispatcher, "Van 3").await.0,
            None,
        )
        .await;
    let (status, _) = f
        .app
        .delete(
            &f.dispatcher,
            &format!("/api/v1/shipments/{other_shipment}/shares/{older}"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let token = first["token"].as_str().unwrap();
    let follow = format!("/api/v1/shipments/{shipment}?share={token}");
    let anyone = async || {
        let res = f.app.http.get(f.app.url(&follow)).send().await.unwrap();
        res.status()
    };
    assert_eq!(anyone().await, StatusCode::OK);

    // Revoked by its id: the link stops working, and the list says so.
    let (status, _) = f.app.delete(&f.dispatcher, &revoke).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(anyone().await, StatusCode::UNAUTHORIZED);
    let (_, links) = f.app.get(&f.dispatcher, &list).await;
    assert_eq!(links[1]["active"], false, "{links}");
    assert!(links[1]["revoked_at"].is_string(), "{links}");
    assert_eq!(links[0]["active"], true, "{links}");
    let (status, _) = f
        .app
        .get(&f.dispatcher, &format!("{list}/not-a-number"))
        .await;
    assert!(status.is_client_error());
}

#[sqlx::test]
async fn vehicle_changes_reach_the_fleet_topic_live_and_on_resume(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    let subscribed = ws.subscribe("fleet", None).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let since = subscribed["snapshot"]["seq"].as_i64().unwrap();
    let (_, outsider) = f
        .app
        .user("Other", "dispatch@other.test", Role::Dispatcher)
        .await;
    let mut other = f.app.ws(&format!("token={outsider}")).await;
    other.subscribe("fleet", None).await;

    // Created, renamed, retired: each change reaches the open map at once.
    let (van2, _) = f.app.vehicle(&f.dispatcher, "Van 2").await;
    let created = ws.next().await;
    assert_eq!(created["type"], "vehicle", "{created}");
    assert_eq!(created["topic"], "fleet");
    assert_eq!(created["data"]["id"], van2);
    assert_eq!(created["data"]["name"], "Van 2");
    assert_eq!(created["data"]["status"], "active");
    assert!(created["data"].get("last_position").is_none(), "{created}");

    let (status, _) = f.change(json!({"name": "Van 1 (blue)"})).await;
    assert_eq!(status, StatusCode::OK);
    let renamed = ws.next().await;
    assert_eq!(renamed["data"]["id"], f.vehicle, "{renamed}");
    assert_eq!(renamed["data"]["name"], "Van 1 (blue)");

    let (status, _) = f
        .app
        .patch(
            &f.dispatcher,
            &format!("/api/v1/vehicles/{van2}"),
            json!({"status": "retired"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let retired = ws.next().await;
    assert_eq!(retired["data"]["id"], van2, "{retired}");
    assert_eq!(retired["data"]["status"], "retired");
    assert!(retired["data"]["retired_at"].is_string());
    assert!(created["seq"].as_i64() < renamed["seq"].as_i64());
    assert!(renamed["seq"].as_i64() < retired["seq"].as_i64());
    // A refused change publishes nothing; another organisation hears of none of it.
    let (status, _) = f.change(json!({"speed_unit": "furlongs"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    ws.expect_quiet().await;
    other.expect_quiet().await;

    // A map that was away gets each changed vehicle once, as it is now, in seq order.
    let mut back = f.app.ws(&format!("token={}", f.dispatcher)).await;
    back.send(json!({"type": "subscribe", "topic": "fleet", "since": since}))
        .await;
    let mut replayed = Vec::new();
    while replayed.len() < 2 {
        let frame = back.next().await;
        if frame["type"] == "vehicle" {
            replayed.push(frame);
        }
    }
    assert_eq!(replayed[0]["seq"], renamed["seq"], "{replayed:?}");
    assert_eq!(replayed[0]["data"]["name"], "Van 1 (blue)");
    assert_eq!(replayed[1]["seq"], retired["seq"], "{replayed:?}");
    assert_eq!(replayed[1]["data"]["status"], "retired");
    back.expect_quiet().await;
}
