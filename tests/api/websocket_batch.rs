//! `?batch=true` on the WebSocket: frames the server has ready together arrive as one message
//! holding a JSON array of them, in order; flattened, they are exactly the frames a connection
//! without the option receives one per message.
use chrono::{Duration, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{step, TestApp, WsClient};

/// Positions each vehicle posts in one request.
const BURST: i64 = 40;

/// A dispatcher and three vehicles without shipments (so a live frame and its replay are the
/// same bytes).
async fn fleet(db: PgPool) -> (TestApp, String, Vec<String>) {
    let app = TestApp::spawn(db).await;
    let (_, dispatcher) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let mut tokens = Vec::new();
    for name in ["Van 1", "Van 2", "Van 3"] {
        tokens.push(app.vehicle(&dispatcher, name).await.1);
    }
    (app, dispatcher, tokens)
}

/// Posts `BURST` positions for each vehicle, one batch request each; the seqs, in order.
async fn burst(app: &TestApp, tokens: &[String]) -> Vec<i64> {
    let base = Utc::now() - Duration::minutes(2);
    let mut seqs = Vec::new();
    for token in tokens {
        let body: Vec<Value> = (0..BURST).map(|i| step(i, base)).collect();
        let (status, reply) = app.ingest(token, json!(body)).await;
        assert!(status.is_success(), "{status} {reply}");
        assert_eq!(reply["accepted"], BURST, "{reply}");
        seqs.extend(
            reply["seqs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_i64().unwrap()),
        );
    }
    seqs.sort_unstable();
    seqs
}

/// The next `n` frames of a connection without `batch`, checking each came as its own message.
async fn one_per_message(ws: &mut WsClient, n: usize) -> Vec<Value> {
    let mut frames = Vec::new();
    while frames.len() < n {
        let message = ws.next().await;
        assert!(message.is_object(), "one frame per message, got {message}");
        frames.push(message);
    }
    frames
}

/// The next `n` frames of a `batch` connection, flattened, and how many messages held them.
/// An array always holds more than one frame: a lone frame is sent as itself.
async fn flattened(ws: &mut WsClient, n: usize) -> (Vec<Value>, usize) {
    let (mut frames, mut messages) = (Vec::new(), 0);
    while frames.len() < n {
        messages += 1;
        match ws.next().await {
            Value::Array(array) => {
                assert!(array.len() > 1, "an array of one frame: {array:?}");
                assert!(array.iter().all(Value::is_object), "{array:?}");
                frames.extend(array);
            }
            frame => {
                assert!(frame.is_object(), "{frame}");
                frames.push(frame);
            }
        }
    }
    (frames, messages)
}

#[sqlx::test]
async fn a_burst_arrives_in_arrays_that_flatten_to_the_frames_sent_one_by_one(db: PgPool) {
    let (app, dispatcher, tokens) = fleet(db).await;
    let mut plain = app.ws(&format!("token={dispatcher}")).await;
    let mut batched = app.ws(&format!("token={dispatcher}&batch=true")).await;
    let snapshot = plain.subscribe("fleet", None).await;
    assert_eq!(snapshot["type"], "subscribed", "{snapshot}");
    let since = snapshot["snapshot"]["seq"].as_i64().unwrap();
    let subscribed = batched.subscribe("fleet", None).await;
    assert_eq!(
        subscribed["type"], "subscribed",
        "a lone reply is not wrapped: {subscribed}"
    );

    let seqs = burst(&app, &tokens).await;
    let expected = one_per_message(&mut plain, seqs.len()).await;
    let got: Vec<(Value, Value)> = expected
        .iter()
        .map(|f| (f["type"].clone(), f["topic"].clone()))
        .collect();
    assert!(
        got.iter()
            .all(|t| *t == (json!("position"), json!("fleet"))),
        "{got:?}"
    );
    let order: Vec<i64> = expected
        .iter()
        .map(|f| f["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(order, seqs, "every position once, in seq order");

    // Live: however the frames happened to be grouped, the same frames in the same order.
    let (live, _) = flattened(&mut batched, seqs.len()).await;
    assert_eq!(live, expected);
    batched.expect_quiet().await;
    plain.expect_quiet().await;

    // A resume queues its snapshot and every missed event before the writer runs: one array.
    let mut resumed = app.ws(&format!("token={dispatcher}&batch=true")).await;
    resumed
        .send(json!({"type": "subscribe", "topic": "fleet", "since": since, "ref": "r"}))
        .await;
    let message = resumed.next().await;
    let array = message.as_array().expect("the catch-up comes as one array");
    assert_eq!(array.len(), seqs.len() + 1, "{message}");
    assert_eq!(array[0]["type"], "subscribed");
    assert_eq!(array[0]["ref"], "r");
    assert_eq!(array[1..], expected[..]);
    resumed.expect_quiet().await;

    // The same resume without the option: the same frames, one per message.
    let mut resumed_plain = app.ws(&format!("token={dispatcher}")).await;
    resumed_plain
        .send(json!({"type": "subscribe", "topic": "fleet", "since": since, "ref": "r"}))
        .await;
    let again = one_per_message(&mut resumed_plain, seqs.len() + 1).await;
    assert_eq!(again[..], array[..]);
}

#[sqlx::test]
async fn with_batch_a_lone_event_still_arrives_as_a_plain_object(db: PgPool) {
    let (app, dispatcher, tokens) = fleet(db).await;
    let mut ws = app.ws(&format!("token={dispatcher}&batch=true")).await;
    let subscribed = ws.subscribe("fleet", None).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let (_, reply) = app
        .ingest(&tokens[0], json!({"lat": 48.15, "lon": 11.55}))
        .await;
    let event = ws.next().await;
    assert_eq!(event["type"], "position", "{event}");
    assert_eq!(event["seq"], reply["seqs"][0]);
    ws.expect_quiet().await;

    let (status, body) = app.get(&dispatcher, "/api/v1/ws?batch=maybe").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "malformed", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("batch"),
        "{body}"
    );
}
