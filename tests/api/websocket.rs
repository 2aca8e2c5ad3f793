//! The WebSocket protocol: subscriptions, live events, permissions, resume with `since`, and
//! bad frames.
use chrono::{Duration, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::Message;
use waymark::{
    auth::Role,
    tracking::{
        position::{to_micros, Position, PositionEvent},
        read_seq, Event, EventTx,
    },
};

use crate::support::{step, TestApp};

struct Fleet {
    app: TestApp,
    dispatcher: String,
    vehicle: i64,
    token: String,
    shipment: i64,
}

async fn fleet(db: PgPool) -> Fleet {
    let app = TestApp::spawn(db).await;
    let (_, dispatcher) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (vehicle, token) = app.vehicle(&dispatcher, "Van 1").await;
    let shipment = app.shipment(&dispatcher, "SHP-1", vehicle, None).await;
    // The tests replay positions taken minutes ago.
    app.backdate(shipment).await;
    Fleet {
        app,
        dispatcher,
        vehicle,
        token,
        shipment,
    }
}

#[sqlx::test]
async fn a_posted_position_reaches_every_matching_topic_with_its_seq(db: PgPool) {
    let f = fleet(db).await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    for topic in [
        format!("shipment:{}", f.shipment),
        format!("vehicle:{}", f.vehicle),
        "fleet".into(),
    ] {
        let sub = ws.subscribe(&topic, None).await;
        assert_eq!(sub["type"], "subscribed", "{sub}");
        assert_eq!(sub["topic"], topic);
        assert_eq!(sub["ref"], topic);
        assert!(sub["snapshot"]["seq"].is_i64());
    }
    let (_, reply) = f
        .app
        .ingest(
            &f.token,
            json!({"lat": 48.15, "lon": 11.55, "speed": 10.0, "heading": 45}),
        )
        .await;
    let seq = reply["seqs"][0].as_i64().unwrap();
    let mut topics = Vec::new();
    for _ in 0..3 {
        let event = ws.next().await;
        assert_eq!(event["type"], "position");
        assert_eq!(event["seq"], seq);
        let data = &event["data"];
        assert_eq!(data["vehicle_id"], f.vehicle);
        assert_eq!(data["shipment_id"], f.shipment);
        assert_eq!(
            (data["lat"].as_f64(), data["lon"].as_f64()),
            (Some(48.15), Some(11.55))
        );
        assert_eq!(data["speed"], 10.0);
        assert_eq!(data["heading"], 45.0);
        assert_eq!(data["late"], false);
        assert!(data["recorded_at"].is_string() && data["received_at"].is_string());
        topics.push(event["topic"].as_str().unwrap().to_owned());
    }
    topics.sort();
    assert_eq!(
        topics,
        [
            "fleet".to_owned(),
            format!("shipment:{}", f.shipment),
            format!("vehicle:{}", f.vehicle)
        ]
    );
    ws.expect_quiet().await;
}

#[sqlx::test]
async fn snapshots_carry_the_current_state(db: PgPool) {
    let f = fleet(db).await;
    f.app
        .ingest(&f.token, json!({"lat": 48.15, "lon": 11.55}))
        .await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    let fleet = ws.subscribe("fleet", None).await;
    let vehicles = fleet["snapshot"]["vehicles"].as_array().unwrap();
    assert_eq!(vehicles.len(), 1);
    assert_eq!(vehicles[0]["last_position"]["lat"], 48.15);
    let shipment = ws
        .subscribe(&format!("shipment:{}", f.shipment), None)
        .await;
    assert_eq!(shipment["snapshot"]["shipment"]["status"], "in_transit");
    assert_eq!(
        shipment["snapshot"]["shipment"]["last_position"]["lon"],
        11.55
    );
}

#[sqlx::test]
async fn an_event_transaction_gives_back_the_seqs_of_a_rollback_and_publishes_what_it_commits(
    db: PgPool,
) {
    let f = fleet(db).await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    let topic = format!("vehicle:{}", f.vehicle);
    let before = ws.subscribe(&topic, None).await["snapshot"]["seq"]
        .as_i64()
        .unwrap();
    let now = to_micros(Utc::now());
    let position = Position {
        vehicle_id: f.vehicle,
        shipment_id: None,
        lat: 48.15,
        lon: 11.55,
        recorded_at: now,
        received_at: now,
        accuracy: None,
        speed: None,
        heading: None,
        altitude: None,
        battery: None,
        late: false,
        eta: None,
    };
    let organisation_id: i64 =
        sqlx::query_scalar("SELECT organisation_id FROM vehicles WHERE id = $1")
            .bind(f.vehicle)
            .fetch_one(&f.app.db)
            .await
            .unwrap();

    let mut dropped = EventTx::begin(&f.app.db).await.unwrap();
    let given_back = dropped.next_seq();
    dropped.rollback().await.unwrap();
    assert_eq!(read_seq(&f.app.db).await.unwrap(), before);

    let mut tx = EventTx::begin(&f.app.db).await.unwrap();
    let seq = tx.next_seq();
    assert_eq!(seq, given_back, "a rolled back seq is handed out again");
    tx.push(Event::new(
        seq,
        PositionEvent {
            organisation_id,
            position,
        },
    ));
    let committed = tx.commit().await.unwrap();
    assert_eq!(read_seq(&f.app.db).await.unwrap(), seq);
    committed.publish(&f.app.state.tracking);
    let event = ws.next().await;
    assert_eq!(
        (&event["type"], &event["topic"], &event["seq"]),
        (&json!("position"), &json!(topic), &json!(seq))
    );
    assert_eq!(event["data"]["vehicle_id"], f.vehicle);
    ws.expect_quiet().await;
}

#[sqlx::test]
async fn late_points_are_published_marked_and_filtered_points_never(db: PgPool) {
    let f = fleet(db).await;
    let base = Utc::now() - Duration::minutes(10);
    f.app.ingest(&f.token, step(10, base)).await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    ws.subscribe(&format!("vehicle:{}", f.vehicle), None).await;
    f.app
        .ingest(&f.token, json!([{"lat": 0.0, "lon": 0.0}, step(3, base)]))
        .await;
    let event = ws.next().await;
    assert_eq!(event["data"]["late"], true, "{event}");
    let at: chrono::DateTime<Utc> =
        serde_json::from_value(event["data"]["recorded_at"].clone()).unwrap();
    assert_eq!(at, to_micros(base + Duration::seconds(3)));
    ws.expect_quiet().await;
}

#[sqlx::test]
async fn since_replays_exactly_what_was_missed_then_goes_live(db: PgPool) {
    let f = fleet(db).await;
    let topic = format!("shipment:{}", f.shipment);
    let base = Utc::now() - Duration::minutes(10);
    f.app.ingest(&f.token, step(0, base)).await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    let since = ws.subscribe(&topic, None).await["snapshot"]["seq"]
        .as_i64()
        .unwrap();
    drop(ws);

    // Missed while away: three positions (one late), one filtered, one re-send.
    let mut missed = Vec::new();
    for body in [
        json!([step(2, base), step(3, base)]),
        json!(step(1, base)),
        json!({"lat": 0.0, "lon": 0.0}),
        json!(step(3, base)),
    ] {
        let (_, reply) = f.app.ingest(&f.token, body).await;
        missed.extend(
            reply["seqs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_i64().unwrap()),
        );
    }
    let expected: Vec<i64> = vec![missed[0], missed[1], missed[2]];

    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    let sub = ws.subscribe(&topic, Some(since)).await;
    assert_eq!(sub["type"], "subscribed");
    let mut replayed = Vec::new();
    for _ in 0..expected.len() {
        let event = ws.next().await;
        assert_eq!(event["type"], "position");
        assert_eq!(event["topic"], topic);
        replayed.push((
            event["seq"].as_i64().unwrap(),
            event["data"]["late"].as_bool().unwrap(),
        ));
    }
    assert_eq!(
        replayed,
        vec![
            (expected[0], false),
            (expected[1], false),
            (expected[2], true)
        ]
    );
    ws.expect_quiet().await;

    let (_, reply) = f.app.ingest(&f.token, step(4, base)).await;
    let live = ws.next().await;
    assert_eq!(
        live["seq"], reply["seqs"][0],
        "then live, with nothing repeated"
    );
    ws.expect_quiet().await;
}

#[sqlx::test]
async fn a_replayed_event_is_the_same_frame_live_delivery_sent(db: PgPool) {
    let f = fleet(db).await;
    let topic = format!("vehicle:{}", f.vehicle);
    let mut live = f.app.ws(&format!("token={}", f.dispatcher)).await;
    let since = live.subscribe(&topic, None).await["snapshot"]["seq"]
        .as_i64()
        .unwrap();
    f.app.ingest(&f.token, json!({"lat": 48.123456789, "lon": 11.987654321, "accuracy": 3.3, "battery": 55.5, "altitude": 519.25})).await;
    let live_event = live.next().await;
    let mut again = f.app.ws(&format!("token={}", f.dispatcher)).await;
    again.subscribe(&topic, Some(since)).await;
    assert_eq!(again.next().await, live_event);
}

#[sqlx::test]
async fn subscriptions_outside_ones_rights_are_forbidden(db: PgPool) {
    let f = fleet(db).await;
    let (driver_id, driver) = f.app.user("Acme", "driver@acme.test", Role::Driver).await;
    let (other_vehicle, _) = f.app.vehicle(&f.dispatcher, "Van 2").await;
    let own = f
        .app
        .shipment(&f.dispatcher, "SHP-2", other_vehicle, Some(driver_id))
        .await;
    let (_, outsider) = f.app.user("Other Co", "boss@other.test", Role::Admin).await;
    let (_, share) = f
        .app
        .post(
            &f.dispatcher,
            &format!("/api/v1/shipments/{own}/share"),
            json!({}),
        )
        .await;
    let share_token = share["token"].as_str().unwrap();

    let forbidden = |frame: &Value| frame["type"] == "error" && frame["code"] == "forbidden";

    let mut ws = f.app.ws(&format!("token={outsider}")).await;
    for topic in [
        format!("shipment:{}", f.shipment),
        format!("vehicle:{}", f.vehicle),
    ] {
        let reply = ws.subscribe(&topic, None).await;
        assert!(
            forbidden(&reply),
            "another organisation on {topic}: {reply}"
        );
    }
    let reply = ws.subscribe("fleet", None).await;
    assert_eq!(reply["type"], "subscribed", "its own fleet is fine");
    assert_eq!(
        reply["snapshot"]["vehicles"],
        json!([]),
        "and holds none of ours"
    );

    let mut ws = f.app.ws(&format!("token={driver}")).await;
    assert!(
        forbidden(
            &ws.subscribe(&format!("shipment:{}", f.shipment), None)
                .await
        ),
        "a driver on someone else's shipment"
    );
    assert!(
        forbidden(&ws.subscribe("fleet", None).await),
        "a driver on the fleet"
    );
    assert_eq!(
        ws.subscribe(&format!("shipment:{own}"), None).await["type"],
        "subscribed"
    );
    assert_eq!(
        ws.subscribe(&format!("vehicle:{other_vehicle}"), None)
            .await["type"],
        "subscribed"
    );

    let mut ws = f.app.ws(&format!("share={share_token}")).await;
    assert!(
        forbidden(
            &ws.subscribe(&format!("shipment:{}", f.shipment), None)
                .await
        ),
        "a share link on another shipment"
    );
    assert!(forbidden(&ws.subscribe("fleet", None).await));
    assert!(forbidden(
        &ws.subscribe(&format!("vehicle:{other_vehicle}"), None)
            .await
    ));
    assert_eq!(
        ws.subscribe(&format!("shipment:{own}"), None).await["type"],
        "subscribed"
    );

    // After all those refusals, a position on a forbidden topic still reaches no one.
    f.app
        .ingest(&f.token, json!({"lat": 48.2, "lon": 11.6}))
        .await;
    ws.expect_quiet().await;
}

#[sqlx::test]
async fn connections_without_valid_credentials_are_refused(db: PgPool) {
    let f = fleet(db).await;
    for query in ["", "token=nonsense", "share=nonsense"] {
        let url = format!("ws://{}/api/v1/ws?{query}", f.app.addr);
        let err = tokio_tungstenite::connect_async(url)
            .await
            .expect_err("refused");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(res) => {
                assert_eq!(res.status(), 401, "{query}")
            }
            other => panic!("expected an HTTP 401, got {other:?}"),
        }
    }
}

#[sqlx::test]
async fn browser_connections_from_other_sites_are_refused(db: PgPool) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let f = fleet(db).await;
    let url = format!("ws://{}/api/v1/ws?token={}", f.app.addr, f.dispatcher);
    for (origin, allowed) in [
        ("http://evil.example", false),
        (&*format!("http://{}", f.app.addr), true),
    ] {
        let mut request = url.clone().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => assert!(allowed, "{origin} was let in"),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert!(!allowed, "{origin} was refused");
                assert_eq!(res.status(), 403);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[sqlx::test]
async fn bad_frames_get_error_frames_and_the_connection_lives_on(db: PgPool) {
    let f = fleet(db).await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::Text("not json".into()), "bad_frame"),
        (Message::Text("[1,2,3]".into()), "unknown_type"),
        (Message::Text(r#"{"type":"launch"}"#.into()), "unknown_type"),
        (Message::Text(r#"{"type":"subscribe"}"#.into()), "bad_frame"),
        (
            Message::Text(r#"{"type":"subscribe","topic":"weather"}"#.into()),
            "bad_topic",
        ),
        (
            Message::Text(r#"{"type":"subscribe","topic":"vehicle:abc"}"#.into()),
            "bad_topic",
        ),
        (
            Message::Text(r#"{"type":"subscribe","topic":"fleet","since":-5}"#.into()),
            "bad_frame",
        ),
        (Message::Binary(vec![1u8, 2, 3].into()), "bad_frame"),
    ];
    for (message, code) in cases {
        let shown = format!("{message:?}");
        ws.send_raw(message).await;
        let reply = ws.next().await;
        assert_eq!(reply["type"], "error", "{shown}");
        assert_eq!(reply["code"], code, "{shown}: {reply}");
    }
    ws.send(json!({"type": "ping", "ref": 42})).await;
    let pong = ws.next().await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["ref"], 42);
    assert_eq!(ws.subscribe("fleet", None).await["type"], "subscribed");
}

#[sqlx::test]
async fn an_oversized_frame_closes_with_1009_and_other_connections_go_on(db: PgPool) {
    let f = fleet(db).await;
    let mut other = f.app.ws(&format!("token={}", f.dispatcher)).await;
    other.subscribe("fleet", None).await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    let huge = json!({"type": "ping", "ref": "x".repeat(2 * 1024 * 1024)});
    // The server stops reading at the frame's header, so sending the rest may fail.
    let _ =
        futures_util::SinkExt::send(&mut ws.stream, Message::Text(huge.to_string().into())).await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("64 KiB"), "{reason}");

    // The connection opened before goes on, and so does the server.
    other.expect_quiet().await;
    f.app
        .ingest(&f.token, json!({"lat": 48.2, "lon": 11.6}))
        .await;
    let event = other.next().await;
    assert_eq!(event["type"], "position", "{event}");
    let mut later = f.app.ws(&format!("token={}", f.dispatcher)).await;
    later.expect_quiet().await;
}

#[sqlx::test]
async fn unsubscribe_stops_events(db: PgPool) {
    let f = fleet(db).await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    ws.subscribe("fleet", None).await;
    ws.send(json!({"type": "unsubscribe", "topic": "fleet", "ref": "u"}))
        .await;
    let reply = ws.next().await;
    assert_eq!(reply["type"], "unsubscribed");
    assert_eq!(reply["ref"], "u");
    f.app
        .ingest(&f.token, json!({"lat": 48.2, "lon": 11.6}))
        .await;
    ws.expect_quiet().await;
}

#[sqlx::test]
async fn shutdown_closes_sockets_with_the_resume_code(db: PgPool) {
    let f = fleet(db).await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    ws.subscribe("fleet", None).await;
    let stopping = tokio::spawn(f.app.shutdown());
    let close = loop {
        match futures_util::StreamExt::next(&mut ws.stream).await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(
        u16::from(close.expect("a close frame with a code").code),
        1012
    );
    stopping.await.unwrap();
}

#[sqlx::test]
async fn a_subscriber_that_never_reads_delays_no_one_and_is_closed(db: PgPool) {
    use futures_util::StreamExt;
    let f = fleet(db).await;
    let topic = format!("vehicle:{}", f.vehicle);
    let base = Utc::now() - Duration::hours(1);
    f.app.ingest(&f.token, step(0, base)).await;

    // A client with a tiny receive window that subscribes and then never reads again.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(f.app.addr).await.unwrap();
    let url = format!("ws://{}/api/v1/ws?token={}", f.app.addr, f.dispatcher);
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (stalled, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let mut stalled = crate::support::WsClient { stream: stalled };
    stalled.next().await;
    stalled.subscribe(&topic, None).await;

    let mut reader = f.app.ws(&format!("token={}", f.dispatcher)).await;
    reader.subscribe(&topic, None).await;
    let hub = f.app.state.tracking.hub.clone();
    assert_eq!(hub.subscription_count(), 2);

    // Late points are never conflated, so they pile up for the stalled client until it is cut
    // off; the reader gets each batch as it comes.
    let mut batches = 0;
    while hub.subscription_count() == 2 {
        assert!(batches < 200, "the stalled client was never closed");
        let points: Vec<Value> = (0..500)
            .map(|i| step(-(batches * 500 + i + 1), base))
            .collect();
        let (status, reply) = f.app.ingest(&f.token, Value::Array(points)).await;
        assert_eq!(status, 200);
        let last = reply["seqs"][499].as_i64().unwrap();
        loop {
            let event = reader.next().await;
            assert_eq!(event["data"]["late"], true);
            if event["seq"] == last {
                break;
            }
        }
        batches += 1;
    }
    // The stalled client's connection ends (after whatever it had buffered).
    let ended = tokio::time::timeout(crate::support::PATIENCE, async {
        while let Some(Ok(_)) = stalled.stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stalled connection was closed");
    reader.expect_quiet().await;
}

#[sqlx::test]
async fn without_redis_an_instance_still_serves_its_own_subscribers(db: PgPool) {
    let app = TestApp::spawn_alone(db).await;
    assert!(app.state.tracking.fanout.is_none());
    let (_, jwt) = app.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    // A position nobody watches yet, then one the new subscriber must get.
    let base = Utc::now() - Duration::minutes(1);
    app.ingest(&token, step(0, base)).await;
    let mut ws = app.ws(&format!("token={jwt}")).await;
    ws.subscribe(&format!("vehicle:{vehicle}"), None).await;
    let (_, reply) = app.ingest(&token, step(1, base)).await;
    let event = ws.next().await;
    assert_eq!(event["seq"], reply["seqs"][0]);
    assert_eq!(event["data"]["lon"], step(1, base)["lon"]);
    ws.expect_quiet().await;
}

#[sqlx::test]
async fn a_driver_sees_only_their_own_trips_of_a_vehicle_in_snapshots_and_replays(db: PgPool) {
    let f = fleet(db).await;
    let (bob, _) = f.app.user("Acme", "bob@acme.test", Role::Driver).await;
    let (anna, anna_jwt) = f.app.user("Acme", "anna@acme.test", Role::Driver).await;
    let topic = format!("vehicle:{}", f.vehicle);
    let shipment = format!("/api/v1/shipments/{}", f.shipment);
    // Bob drives the van's first trip.
    let (status, _) = f
        .app
        .patch(&f.dispatcher, &shipment, json!({"driver_id": bob}))
        .await;
    assert_eq!(status, 200);
    let base = Utc::now() - Duration::minutes(10);
    let (_, bobs) = f
        .app
        .ingest(&f.token, json!([step(0, base), step(1, base)]))
        .await;
    let (status, _) = f
        .app
        .patch(&f.dispatcher, &shipment, json!({"status": "delivered"}))
        .await;
    assert_eq!(status, 200);
    // Then Anna gets the van for hers: nothing of Bob's trip is hers to see.
    let hers = f
        .app
        .shipment(&f.dispatcher, "SHP-2", f.vehicle, Some(anna))
        .await;
    let vehicle_path = format!("/api/v1/vehicles/{}", f.vehicle);
    let (status, vehicle) = f.app.get(&anna_jwt, &vehicle_path).await;
    assert_eq!(status, 200, "{vehicle}");
    assert_eq!(vehicle["last_position"], Value::Null, "{vehicle}");
    let mut ws = f.app.ws(&format!("token={anna_jwt}")).await;
    let sub = ws.subscribe(&topic, Some(0)).await;
    assert_eq!(
        sub["snapshot"]["vehicle"]["last_position"],
        Value::Null,
        "{sub}"
    );
    ws.expect_quiet().await;
    drop(ws);

    // Taken since her shipment was assigned (and Bob's ended), so they are its own.
    let now = Utc::now();
    let (_, annas) = f
        .app
        .ingest(&f.token, json!([step(2, now), step(3, now)]))
        .await;
    let mut ws = f.app.ws(&format!("token={anna_jwt}")).await;
    let sub = ws.subscribe(&topic, Some(0)).await;
    assert_eq!(
        sub["snapshot"]["vehicle"]["last_position"]["shipment_id"],
        hers
    );
    for seq in annas["seqs"].as_array().unwrap() {
        let event = ws.next().await;
        assert_eq!(
            (&event["seq"], &event["data"]["shipment_id"]),
            (seq, &json!(hers))
        );
    }
    ws.expect_quiet().await;
    let (_, vehicle) = f.app.get(&anna_jwt, &vehicle_path).await;
    assert_eq!(vehicle["last_position"]["shipment_id"], hers);

    // The dispatcher still gets every trip back.
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    ws.subscribe(&topic, Some(0)).await;
    let all: Vec<&Value> = bobs["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .chain(annas["seqs"].as_array().unwrap())
        .collect();
    for seq in all {
        assert_eq!(&ws.next().await["seq"], seq);
    }
    ws.expect_quiet().await;
}
