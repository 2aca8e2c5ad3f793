//! How the server writes to a WebSocket: a message longer than a fragment (a snapshot with a
//! long planned route) arrives whole, as one message, though no frame on the wire is longer than
//! [`FRAGMENT_BYTES`]; frames ready together (a resume's snapshot and missed events) arrive
//! whole and in order; and a request that is not a WebSocket upgrade is refused as before.
use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use waymark::{auth::Role, socket::FRAGMENT_BYTES};

use crate::support::{step, TestApp, WsClient};

/// Points of the long planned route: its snapshot is many fragments long.
const ROUTE_POINTS: usize = 1_000;
/// Positions posted while a connection is away.
const MISSED: i64 = 40;

/// A connection whose client refuses any frame longer than [`FRAGMENT_BYTES`]: a longer message
/// that reaches it whole came in fragments.
async fn ws_in_fragments(app: &TestApp, query: &str) -> WsClient {
    let config = WebSocketConfig::default().max_frame_size(Some(FRAGMENT_BYTES));
    app.ws_with(query, Some(config)).await
}

/// A dispatcher, a vehicle's ingest token, and a shipment of it with a planned route of
/// [`ROUTE_POINTS`] points, which are returned.
async fn long_shipment(app: &TestApp) -> (String, String, i64, Value) {
    let (_, dispatcher) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (vehicle, token) = app.vehicle(&dispatcher, "Van 1").await;
    // Whole ten-thousandths of a degree print and parse back exactly.
    let route: Vec<Value> = (0..ROUTE_POINTS as i32)
        .map(|i| json!([f64::from(114_000 + i) / 1e4, f64::from(481_000 + i) / 1e4]))
        .collect();
    let route = Value::Array(route);
    let (status, body) = app
        .post(
            &dispatcher,
            "/api/v1/shipments",
            json!({
                "reference": "SHP-LONG",
                "origin": {"lat": 48.1, "lon": 11.4},
                "destination": {"lat": 48.1999, "lon": 11.4999},
                "planned_route": {"type": "LineString", "coordinates": route},
                "vehicle_id": vehicle,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let shipment = body["id"].as_i64().unwrap();
    // The positions posted are taken minutes ago.
    app.backdate(shipment).await;
    (dispatcher, token, shipment, route)
}

/// Checks `frame` is the `subscribed` of the long shipment, its route whole.
fn assert_whole_snapshot(frame: &Value, route: &Value) {
    assert_eq!(frame["type"], "subscribed", "{frame}");
    let snapshot = &frame["snapshot"]["shipment"];
    assert_eq!(snapshot["planned_route"]["coordinates"], *route);
    assert!(
        frame.to_string().len() > 10 * FRAGMENT_BYTES,
        "the snapshot spans many fragments"
    );
}

/// The seqs of the position frames among `frames`, in the order they came.
fn position_seqs(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f["type"] == "position")
        .map(|f| f["seq"].as_i64().unwrap())
        .collect()
}

/// Every frame until the pong of a ping sent now: all that was queued before it, in order.
async fn until_quiet(ws: &mut WsClient) -> Vec<Value> {
    ws.send(json!({"type": "ping", "ref": "end"})).await;
    let mut frames = Vec::new();
    loop {
        let frame = ws.next().await;
        if frame["type"] == "pong" && frame["ref"] == "end" {
            return frames;
        }
        frames.push(frame);
    }
}

#[sqlx::test]
async fn a_snapshot_longer_than_a_fragment_arrives_whole_as_one_message(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (dispatcher, _, shipment, route) = long_shipment(&app).await;
    for query in [
        format!("token={dispatcher}"),
        format!("token={dispatcher}&batch=true"),
    ] {
        let mut ws = ws_in_fragments(&app, &query).await;
        let subscribed = ws.subscribe(&format!("shipment:{shipment}"), None).await;
        assert_whole_snapshot(&subscribed, &route);
        // The connection goes on after a fragmented message.
        ws.expect_quiet().await;
    }
}

#[sqlx::test]
async fn a_snapshot_and_the_events_missed_arrive_whole_and_in_order(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (dispatcher, token, shipment, route) = long_shipment(&app).await;
    let topic = format!("shipment:{shipment}");
    let mut live = ws_in_fragments(&app, &format!("token={dispatcher}")).await;
    let subscribed = live.subscribe(&topic, None).await;
    let since = subscribed["snapshot"]["seq"].as_i64().unwrap();

    let base = Utc::now() - Duration::minutes(2);
    let body: Vec<Value> = (0..MISSED).map(|i| step(i, base)).collect();
    let (status, reply) = app.ingest(&token, json!(body)).await;
    assert!(status.is_success(), "{status} {reply}");
    let seqs: Vec<i64> = reply["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect();
    assert_eq!(seqs.len(), MISSED as usize, "{reply}");
    assert_eq!(position_seqs(&until_quiet(&mut live).await), seqs);

    // A resume queues the long snapshot and every missed event before the writer runs: they go
    // out together, the snapshot in fragments between whole frames.
    let resume = json!({"type": "subscribe", "topic": topic, "since": since, "ref": "r"});
    let mut resumed = ws_in_fragments(&app, &format!("token={dispatcher}")).await;
    resumed.send(resume.clone()).await;
    let frames = until_quiet(&mut resumed).await;
    assert_whole_snapshot(&frames[0], &route);
    assert_eq!(position_seqs(&frames[1..]), seqs);

    // With `batch`, the same frames come as one array message, itself in fragments.
    let mut batched = ws_in_fragments(&app, &format!("token={dispatcher}&batch=true")).await;
    batched.send(resume).await;
    let message = batched.next().await;
    let array = message.as_array().expect("the catch-up comes as one array");
    assert_eq!(array[..], frames[..]);
    batched.expect_quiet().await;
}

#[sqlx::test]
async fn a_request_that_is_not_a_websocket_upgrade_is_refused_with_the_reason(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, dispatcher) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let upgrade = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
    ];
    let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "Connection header did not include 'upgrade'"),
        (
            &upgrade[..1],
            "`Upgrade` header did not include 'websocket'",
        ),
        (&upgrade, "`Sec-WebSocket-Key` header missing"),
        (
            &[upgrade[0], upgrade[1], key, ("sec-websocket-version", "8")],
            "`Sec-WebSocket-Version` header did not include '13'",
        ),
    ];
    for (headers, why) in cases {
        let mut request = app.http.get(app.url("/api/v1/ws")).bearer_auth(&dispatcher);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "malformed", "{body}");
        assert_eq!(
            body["error"]["message"],
            format!("this endpoint speaks WebSocket only: {why}"),
        );
    }
    // Credentials are checked first: without them the answer is 401 whatever the request.
    let response = app.http.get(app.url("/api/v1/ws")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
