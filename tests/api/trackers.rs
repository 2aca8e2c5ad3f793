//! Tracker apps: the OsmAnd protocol, Traccar Client's JSON and OwnTracks HTTP mode, each with the
//! apps' own example payloads, stored through the same writer as native ingest.
use chrono::{DateTime, Duration, DurationRound, SecondsFormat, Utc};
use reqwest::{header::CONTENT_TYPE, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::TestApp;

/// What the positions table holds for one point.
#[derive(Debug, sqlx::FromRow)]
struct Stored {
    lat: f64,
    lon: f64,
    recorded_at: DateTime<Utc>,
    speed: Option<f32>,
    heading: Option<f32>,
    accuracy: Option<f32>,
    altitude: Option<f32>,
    battery: Option<f32>,
    filter_reason: Option<String>,
    attributes: Option<Value>,
}

struct Trackers {
    app: TestApp,
    jwt: String,
}

impl Trackers {
    async fn spawn(db: PgPool) -> Trackers {
        let app = TestApp::spawn(db).await;
        let (_, jwt) = app
            .user("Acme", "dispatch@acme.test", Role::Dispatcher)
            .await;
        Trackers { app, jwt }
    }

    /// Creates a vehicle whose OsmAnd-protocol speed is in `unit`; returns (id, ingest token).
    async fn vehicle(&self, name: &str, unit: &str) -> (i64, String) {
        let (status, body) = self
            .app
            .post(
                &self.jwt,
                "/api/v1/vehicles",
                json!({"name": name, "speed_unit": unit}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["vehicle"]["id"].as_i64().unwrap(),
            body["ingest_token"].as_str().unwrap().to_owned(),
        )
    }

    /// `GET /api/v1/osmand?{query}`; returns the status and the body text.
    async fn osmand_get(&self, query: &str) -> (StatusCode, String) {
        let res = self
            .app
            .http
            .get(self.app.url(&format!("/api/v1/osmand?{query}")))
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }

    /// `POST /api/v1/osmand` with everything in the query string, as the legacy Traccar Client.
    async fn osmand_post_query(&self, query: &str) -> (StatusCode, String) {
        let res = self
            .app
            .http
            .post(self.app.url(&format!("/api/v1/osmand?{query}")))
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }

    /// `POST /api/v1/osmand` with a form body and no query string.
    async fn osmand_form(&self, form: &str) -> (StatusCode, String) {
        let res = self
            .app
            .http
            .post(self.app.url("/api/v1/osmand"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.to_owned())
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }

    /// `POST /api/v1/osmand` with a JSON body, as Traccar Client 9.
    async fn traccar_json(&self, body: String) -> (StatusCode, String) {
        let res = self
            .app
            .http
            .post(self.app.url("/api/v1/osmand"))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }

    /// `POST /api/v1/owntracks` with the token as the Basic password, as the app sends it.
    async fn owntracks(&self, token: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut req = self
            .app
            .http
            .post(self.app.url("/api/v1/owntracks"))
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .header("X-Limit-U", "jane")
            .header("X-Limit-D", "phone")
            .body(body.to_owned());
        if let Some(token) = token {
            req = req.basic_auth("jane", Some(token));
        }
        let res = req.send().await.unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    /// Every stored point of `vehicle`, oldest first.
    async fn stored(&self, vehicle: i64) -> Vec<Stored> {
        sqlx::query_as(
            "SELECT ST_Y(point::geometry) AS lat, ST_X(point::geometry) AS lon, recorded_at, \
             speed, heading, accuracy, altitude, battery, filter_reason, attributes \
             FROM positions WHERE vehicle_id = $1 ORDER BY recorded_at",
        )
        .bind(vehicle)
        .fetch_all(&self.app.db)
        .await
        .unwrap()
    }

    async fn only(&self, vehicle: i64) -> Stored {
        let mut rows = self.stored(vehicle).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows.remove(0)
    }
}

/// A recent whole second, so the point is neither filtered nor a duplicate of another test's.
fn minutes_ago(m: i64) -> DateTime<Utc> {
    (Utc::now() - Duration::minutes(m))
        .duration_trunc(Duration::seconds(1))
        .unwrap()
}

fn encode(s: &str) -> String {
    s.replace('%', "%25")
        .replace(':', "%3A")
        .replace('+', "%2B")
        .replace(' ', "+")
}

fn close(got: Option<f32>, want: f64) -> bool {
    got.is_some_and(|g| (f64::from(g) - want).abs() < 1e-3)
}

#[sqlx::test]
async fn the_legacy_traccar_client_ping_is_stored_with_knots_as_mps(db: PgPool) {
    let t = Trackers::spawn(db).await;
    let (vehicle, token) = t.vehicle("Phone", "knots").await;
    let when = minutes_ago(5);
    let (status, body) = t
        .osmand_post_query(&format!(
            "id={token}&lat=60.0&lon=30.0&timestamp={}&speed=10.0&bearing=0.0&altitude=0\
             &accuracy=8&batt=87&charge=true",
            when.timestamp()
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "", "the apps expect an empty body");
    let p = t.only(vehicle).await;
    assert_eq!((p.lat, p.lon, p.recorded_at), (60.0, 30.0, when));
    assert!(close(p.speed, 5.14444), "{p:?}");
    assert_eq!(
        (p.heading, p.altitude, p.accuracy, p.battery),
        (Some(0.0), Some(0.0), Some(8.0), Some(87.0))
    );
    assert_eq!(p.filter_reason, None);
    assert_eq!(p.attributes, Some(json!({"charge": true})));

    let (_, v) = t
        .app
        .get(&t.jwt, &format!("/api/v1/vehicles/{vehicle}"))
        .await;
    assert_eq!(v["last_position"]["lat"], 60.0, "it becomes current");
}

#[sqlx::test]
async fn the_osmand_examples_are_stored(db: PgPool) {
    let t = Trackers::spawn(db).await;

    let (iso_vehicle, token) = t.vehicle("ISO", "knots").await;
    let when = minutes_ago(10);
    let iso = encode(&when.to_rfc3339_opts(SecondsFormat::Secs, true));
    let (status, body) = t
        .osmand_get(&format!(
            "id={token}&lat=42.06288&lon=-88.23412&timestamp={iso}&hdop=6.0&altitude=224.0&speed=0.0"
        ))
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let p = t.only(iso_vehicle).await;
    assert_eq!((p.lat, p.lon, p.recorded_at), (42.06288, -88.23412, when));
    assert_eq!((p.speed, p.altitude), (Some(0.0), Some(224.0)));
    assert_eq!(p.attributes, Some(json!({"hdop": 6.0})));

    let (form_vehicle, token) = t.vehicle("Form", "knots").await;
    let when = Utc::now() - Duration::minutes(3);
    let when = DateTime::from_timestamp_millis(when.timestamp_millis()).unwrap();
    let (status, body) = t
        .osmand_form(&format!(
            "id={token}&lat=60.0&lon=30.0&timestamp={}",
            when.timestamp_millis()
        ))
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let p = t.only(form_vehicle).await;
    assert_eq!((p.lat, p.lon, p.recorded_at), (60.0, 30.0, when));

    // The OsmAnd app's own template: GET, time in ms, `deviceid`, speed in m/s.
    let (app_vehicle, token) = t.vehicle("OsmAnd app", "mps").await;
    let (status, _) = t
        .osmand_get(&format!(
            "deviceid={token}&lat=48.1374&lon=11.5755&timestamp={}&hdop=4.5&altitude=519\
             &speed=13.4&bearing=92.5",
            when.timestamp_millis()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let p = t.only(app_vehicle).await;
    assert!(close(p.speed, 13.4), "{p:?}");
    assert_eq!(p.heading, Some(92.5));
}

#[sqlx::test]
async fn every_osmand_timestamp_form_is_understood(db: PgPool) {
    let t = Trackers::spawn(db).await;
    let (vehicle, token) = t.vehicle("Clock", "knots").await;
    let times: Vec<DateTime<Utc>> = (1..=5).map(|i| minutes_ago(20 - i)).collect();
    let forms = [
        times[0].timestamp().to_string(),
        (times[1].timestamp() * 1000).to_string(),
        encode(&times[2].to_rfc3339_opts(SecondsFormat::Secs, true)),
        encode(
            &times[3]
                .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
                .to_rfc3339(),
        ),
        encode(&times[4].format("%Y-%m-%d %H:%M:%S").to_string()),
    ];
    for form in &forms {
        let (status, body) = t
            .osmand_get(&format!("id={token}&lat=48.1&lon=11.5&timestamp={form}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{form}: {body}");
    }
    let before = Utc::now();
    let (status, _) = t.osmand_get(&format!("id={token}&lat=48.1&lon=11.5")).await;
    assert_eq!(status, StatusCode::OK);

    let stored = t.stored(vehicle).await;
    let got: Vec<DateTime<Utc>> = stored.iter().map(|p| p.recorded_at).collect();
    assert_eq!(&got[..5], &times[..], "each form is the instant it names");
    assert!(
        got[5] >= before - Duration::seconds(1) && got[5] <= Utc::now(),
        "no timestamp means the server's clock"
    );
}

#[sqlx::test]
async fn the_same_movement_in_each_speed_unit_is_stored_as_the_same_mps(db: PgPool) {
    let t = Trackers::spawn(db).await;
    let when = minutes_ago(2).timestamp();
    for (unit, speed) in [
        ("knots", "19.438445"),
        ("kmh", "36"),
        ("mph", "22.369363"),
        ("mps", "10"),
    ] {
        let (vehicle, token) = t.vehicle(unit, unit).await;
        let (status, body) = t
            .osmand_get(&format!(
                "id={token}&lat=48.1&lon=11.5&timestamp={when}&speed={speed}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{unit}: {body}");
        let p = t.only(vehicle).await;
        assert!(close(p.speed, 10.0), "{unit}: {:?}", p.speed);
    }
}

#[sqlx::test]
async fn a_repeated_osmand_ping_is_stored_once(db: PgPool) {
    let t = Trackers::spawn(db).await;
    let (vehicle, token) = t.vehicle("Retry", "knots").await;
    let query = format!(
        "id={token}&lat=48.1&lon=11.5&timestamp={}",
        minutes_ago(1).timestamp()
    );
    for _ in 0..2 {
        let (status, _) = t.osmand_post_query(&query).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(t.stored(vehicle).await.len(), 1);
}

#[sqlx::test]
async fn bad_osmand_pings_name_the_field_and_store_nothing(db: PgPool) {
    let t = Trackers::spawn(db).await;
    let (_, token) = t.vehicle("Strict", "knots").await;
    let cases = [
        (format!("id={token}&lon=30.0"), "lat"),
        (format!("id={token}&lat=91&lon=30.0"), "lat"),
        (
            format!("id={token}&lat=60&lon=30&timestamp=yesterday"),
            "timestamp",
        ),
        (format!("id={token}&lat=60&lon=30&speed=fast"), "speed"),
        ("lat=60&lon=30".to_owned(), "id"),
    ];
    for (query, field) in cases {
        let (status, body) = t.osmand_get(&query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "validation", "{query}");
        assert_eq!(body["error"]["field"], field, "{query}");
    }
    let (status, body) = t.osmand_form("id=nope&lat=60&lon=30").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(t.app.count_positions().await, 0);
}

fn traccar_body(token: &str, timestamp: &str) -> Value {
    json!({
      "location": {
        "timestamp": timestamp,
        "coords": { "latitude": 37.4219983, "longitude": -122.084, "accuracy": 5,
                    "speed": 0, "heading": -1, "altitude": 5 },
        "is_moving": false,
        "odometer": 0,
        "event": "motionchange",
        "battery": { "level": 0.79, "is_charging": false },
        "activity": { "type": "still" },
        "extras": {},
        "_": format!("&id={token}&lat=37.4219983&lon=-122.084&timestamp={timestamp}&")
      },
      "device_id": token
    })
}

#[sqlx::test]
async fn the_traccar_client_json_is_stored_with_mps_speed(db: PgPool) {
    let t = Trackers::spawn(db).await;
    // m/s even on a knots vehicle: the JSON format defines its unit.
    let (vehicle, token) = t.vehicle("Traccar", "knots").await;
    let when = Utc::now() - Duration::minutes(4);
    let when = DateTime::from_timestamp_millis(when.timestamp_millis()).unwrap();
    let stamp = when.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut body = traccar_body(&token, &stamp);
    body["location"]["coords"]["speed"] = json!(4.25);
    let (status, reply) = t.traccar_json(body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply, "");
    let p = t.only(vehicle).await;
    assert_eq!((p.lat, p.lon, p.recorded_at), (37.4219983, -122.084, when));
    assert_eq!(
        (p.speed, p.heading, p.accuracy, p.altitude, p.battery),
        (Some(4.25), None, Some(5.0), Some(5.0), Some(79.0))
    );
    assert_eq!(p.filter_reason, None);
    let attrs = p.attributes.unwrap();
    assert_eq!(attrs["charge"], false);
    assert_eq!(attrs["motion"], false);
    assert_eq!(attrs["activity"], "still");
    assert!(attrs.get("_").is_none(), "the echo carries the token");
    assert!(attrs.get("device_id").is_none());
}

#[sqlx::test]
async fn bad_traccar_json_is_refused_and_stores_nothing(db: PgPool) {
    let t = Trackers::spawn(db).await;
    let (_, token) = t.vehicle("Traccar", "knots").await;
    let stamp = Utc::now().to_rfc3339();

    let (status, body) = t.traccar_json("{\"location\": ".to_owned()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("\"malformed\""), "{body}");

    let cases = [
        (
            "/location/coords/latitude",
            Value::Null,
            "location.coords.latitude",
        ),
        (
            "/location/coords/latitude",
            json!(95.0),
            "location.coords.latitude",
        ),
        ("/location/timestamp", json!("soon"), "location.timestamp"),
        (
            "/location/coords/speed",
            json!("fast"),
            "location.coords.speed",
        ),
    ];
    for (pointer, value, field) in cases {
        let mut body = traccar_body(&token, &stamp);
        *body.pointer_mut(pointer).unwrap() = value;
        let (status, reply) = t.traccar_json(body.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{pointer}: {reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["error"]["field"], field, "{pointer}");
    }

    let (status, _) = t
        .traccar_json(traccar_body("wrong-token", &stamp).to_string())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut body = traccar_body(&token, &stamp);
    body.as_object_mut().unwrap().remove("device_id");
    let (status, reply) = t.traccar_json(body.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reply.contains("\"device_id\""), "{reply}");
    assert_eq!(t.app.count_positions().await, 0);
}

#[sqlx::test]
async fn a_traccar_heartbeat_without_coords_is_answered_and_stores_nothing(db: PgPool) {
    let t = Trackers::spawn(db).await;
    let (_, token) = t.vehicle("Traccar", "knots").await;
    let mut body = traccar_body(&token, &Utc::now().to_rfc3339());
    let location = body["location"].as_object_mut().unwrap();
    location.remove("coords");
    location.insert("extras".into(), json!({"heartbeat": true}));
    let (status, reply) = t.traccar_json(body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply, "", "the app expects an empty body");
    assert_eq!(t.app.count_positions().await, 0);
    // A heartbeat still needs the vehicle's token.
    let mut stranger = body.clone();
    stranger["device_id"] = json!("wrong-token");
    let (status, _) = t.traccar_json(stranger.to_string()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test]
async fn an_owntracks_location_is_stored_and_answered_with_an_empty_array(db: PgPool) {
    let t = Trackers::spawn(db).await;
    let (vehicle, token) = t.vehicle("Jane", "knots").await;
    let when = minutes_ago(6);
    let body = json!({
      "_type": "location", "tid": "JJ", "topic": "owntracks/jane/phone",
      "lat": 48.85833, "lon": 2.29513, "tst": when.timestamp(), "created_at": when.timestamp() + 1,
      "acc": 5, "alt": 167, "vac": 21, "vel": 61, "cog": 271,
      "batt": 41, "bs": 1, "t": "u", "m": 1, "conn": "m",
      "inregions": ["Home"], "_id": "a1b2c3d4"
    });
    let (status, reply) = t.owntracks(Some(&token), &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply, json!([]));
    let p = t.only(vehicle).await;
    assert_eq!((p.lat, p.lon, p.recorded_at), (48.85833, 2.29513, when));
    assert!(close(p.speed, 61.0 / 3.6), "km/h become m/s: {p:?}");
    assert_eq!(
        (p.heading, p.accuracy, p.altitude, p.battery),
        (Some(271.0), Some(5.0), Some(167.0), Some(41.0))
    );
    let attrs = p.attributes.unwrap();
    assert_eq!(attrs["tid"], "JJ");
    assert_eq!(attrs["inregions"], json!(["Home"]));
    assert_eq!(attrs["conn"], "m");

    // The booklet's test ping, with the token as a Bearer token instead.
    let when = minutes_ago(1);
    let ping = json!({"_type":"location","tid":"JJ","lat":48.856826,"lon":2.292713,"tst":when.timestamp(),"batt":11});
    let res = t
        .app
        .http
        .post(t.app.url("/api/v1/owntracks"))
        .bearer_auth(&token)
        .header(CONTENT_TYPE, "application/json")
        .body(ping.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), json!([]));
    let rows = t.stored(vehicle).await;
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1].lat, rows[1].recorded_at), (48.856826, when));
}

#[sqlx::test]
async fn owntracks_messages_without_a_location_are_accepted_and_ignored(db: PgPool) {
    let t = Trackers::spawn(db).await;
    let (_, token) = t.vehicle("Jane", "knots").await;
    let now = Utc::now().timestamp();
    let bodies = [
        json!({"_type": "transition", "event": "enter", "wtst": now, "desc": "Home", "lat": 1, "lon": 1, "tst": now})
            .to_string(),
        json!({"_type": "waypoint", "desc": "Home", "lat": 1, "lon": 1, "tst": now}).to_string(),
        json!({"_type": "status"}).to_string(),
        json!({"_type": "card", "name": "Jane"}).to_string(),
        String::new(),
    ];
    for body in bodies {
        let (status, reply) = t.owntracks(Some(&token), &body).await;
        assert_eq!(status, StatusCode::OK, "{body}: {reply}");
        assert_eq!(reply, json!([]), "{body}");
    }
    assert_eq!(t.app.count_positions().await, 0);
}

#[sqlx::test]
async fn bad_owntracks_requests_are_refused_and_store_nothing(db: PgPool) {
    let t = Trackers::spawn(db).await;
    let (_, token) = t.vehicle("Jane", "knots").await;
    let ping = json!({"_type": "location", "lat": 48.85, "lon": 2.29}).to_string();

    let (status, reply) = t.owntracks(None, &ping).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
    let (status, reply) = t.owntracks(Some("wrong-token"), &ping).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
    assert_eq!(reply["error"]["code"], "unauthorized");

    let (status, reply) = t.owntracks(Some(&token), "{\"_type\": \"loc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["error"]["code"], "malformed");

    let cases = [
        (json!({"_type": "location", "lon": 2.29}), "lat"),
        (json!({"_type": "location", "lat": 95, "lon": 2.29}), "lat"),
        (
            json!({"_type": "location", "lat": 48.85, "lon": 2.29, "tst": "now"}),
            "tst",
        ),
        (
            json!({"_type": "location", "lat": 48.85, "lon": 2.29, "vel": "fast"}),
            "vel",
        ),
    ];
    for (body, field) in cases {
        let (status, reply) = t.owntracks(Some(&token), &body.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
        assert_eq!(reply["error"]["field"], field, "{body}");
    }
    assert_eq!(t.app.count_positions().await, 0);
}
