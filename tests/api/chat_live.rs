//! Chat over the WebSocket: the `chat:{id}` topic's snapshot and events, the chat client frames
//! and their acknowledgements and error frames, `since` resume, who may join, and delivery across
//! two instances through Redis.
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{unique_prefix, wait_until, TestApp, WsClient};

/// A dispatcher and the driver of one shipment, each on a socket subscribed to its chat.
struct Talk {
    desk: String,
    phone: String,
    shipment: i64,
    topic: String,
}

async fn talk(app: &TestApp) -> Talk {
    let (_, desk) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (driver, phone) = app.user("Acme", "anna@acme.test", Role::Driver).await;
    let (vehicle, _) = app.vehicle(&desk, "Van 1").await;
    let shipment = app.shipment(&desk, "SHP-1", vehicle, Some(driver)).await;
    Talk {
        desk,
        phone,
        shipment,
        topic: format!("chat:{shipment}"),
    }
}

/// A socket subscribed to `topic`, with its `subscribed` frame and the `presence` frame every
/// joining socket gets after it (and after the replay, with `since`: then it is left unread).
async fn joined_seeing(
    app: &TestApp,
    jwt: &str,
    topic: &str,
    since: Option<i64>,
) -> (WsClient, Value, Value) {
    let mut ws = app.ws(&format!("token={jwt}")).await;
    let subscribed = ws.subscribe(topic, since).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    if since.is_some() {
        return (ws, subscribed, Value::Null);
    }
    let presence = ws.next().await;
    assert_eq!(presence["type"], "presence", "{presence}");
    (ws, subscribed, presence)
}

async fn joined(app: &TestApp, jwt: &str, topic: &str, since: Option<i64>) -> (WsClient, Value) {
    let (ws, subscribed, _) = joined_seeing(app, jwt, topic, since).await;
    (ws, subscribed)
}

async fn send(ws: &mut WsClient, topic: &str, client_id: &str, body: &str) {
    ws.send(
        json!({"type": "chat_send", "topic": topic, "client_id": client_id, "body": body,
        "ref": client_id}),
    )
    .await;
}

/// How many messages are stored.
async fn stored(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM chat_messages")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// The next frame, which must be of type `kind`, past any `presence` frame (others joining and
/// leaving, which the presence test checks on its own).
async fn expect(ws: &mut WsClient, kind: &str) -> Value {
    loop {
        let frame = ws.next().await;
        if frame["type"] == "presence" && kind != "presence" {
            continue;
        }
        assert_eq!(frame["type"], kind, "{frame}");
        return frame;
    }
}

#[sqlx::test]
async fn a_sent_message_is_acked_to_its_sender_and_reaches_the_other_side_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let t = talk(&app).await;
    let (mut desk, _) = joined(&app, &t.desk, &t.topic, None).await;
    let (mut phone, _) = joined(&app, &t.phone, &t.topic, None).await;

    send(&mut desk, &t.topic, "m1", "  Gate 4 today  ").await;
    let ack = expect(&mut desk, "chat_ack").await;
    assert_eq!(ack["ref"], "m1");
    let message = &ack["message"];
    assert_eq!(message["body"], "Gate 4 today");
    assert!(message["id"].as_i64().unwrap() > 0);
    let seq = message["seq"].as_i64().unwrap();
    let own = expect(&mut desk, "chat").await;
    assert_eq!(
        own["data"]["id"], message["id"],
        "the sender hears it after the ack"
    );
    let heard = expect(&mut phone, "chat").await;
    assert_eq!(heard["topic"], t.topic);
    assert_eq!(heard["seq"], seq);
    assert_eq!(heard["data"]["body"], "Gate 4 today");
    assert_eq!(heard["data"]["author"]["role"], "dispatcher");

    // A re-send (the ack was lost) acks the stored message and publishes nothing.
    send(&mut desk, &t.topic, "m1", "Gate 4 today").await;
    let again = expect(&mut desk, "chat_ack").await;
    assert_eq!(again["message"]["id"], message["id"]);
    assert_eq!(again["message"]["seq"], seq);
    desk.expect_quiet().await;
    phone.expect_quiet().await;
    assert_eq!(stored(&app).await, 1);
}

#[sqlx::test]
async fn the_snapshot_has_the_latest_messages_the_read_marks_and_the_unread_count(db: PgPool) {
    let app = TestApp::spawn_with(db, None, &["--chat-rate-per-minute", "100000"]).await;
    let t = talk(&app).await;
    let (mut desk, _) = joined(&app, &t.desk, &t.topic, None).await;
    for i in 0..55 {
        send(&mut desk, &t.topic, &format!("m{i}"), &format!("note {i}")).await;
        expect(&mut desk, "chat_ack").await;
        expect(&mut desk, "chat").await;
    }
    let (mut phone, subscribed) = joined(&app, &t.phone, &t.topic, None).await;
    let snapshot = &subscribed["snapshot"];
    let messages = snapshot["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 50);
    assert_eq!(messages[0]["body"], "note 5", "oldest first");
    assert_eq!(messages[49]["body"], "note 54");
    assert_eq!(snapshot["unread"], 55);
    assert_eq!(snapshot["me"], format!("user:{}", phone_id(&app).await));
    assert!(
        snapshot["next_before"].as_i64().is_some(),
        "older pages exist"
    );
    assert!(snapshot["seq"].as_i64().unwrap() >= messages[49]["seq"].as_i64().unwrap());

    // The driver reads up to "note 49": the mark reaches everyone, the count drops.
    let read_to = messages[44]["seq"].as_i64().unwrap();
    phone
        .send(json!({"type": "chat_read", "topic": t.topic, "seq": read_to, "ref": "r"}))
        .await;
    let unread = expect(&mut phone, "chat_unread").await;
    assert_eq!(unread["unread"], 5);
    assert_eq!(unread["ref"], "r");
    expect(&mut phone, "chat_read").await;
    let mark = expect(&mut desk, "chat_read").await;
    assert_eq!(mark["data"]["read_seq"], read_to);
    assert_eq!(mark["data"]["participant"], snapshot["me"]);
    // A mark never moves back, and a repeat publishes nothing.
    phone
        .send(json!({"type": "chat_read", "topic": t.topic, "seq": read_to - 3}))
        .await;
    assert_eq!(expect(&mut phone, "chat_unread").await["unread"], 5);
    desk.expect_quiet().await;
    phone.expect_quiet().await;

    let (_, later) = joined(&app, &t.desk, &t.topic, None).await;
    assert_eq!(later["snapshot"]["reads"][0]["read_seq"], read_to);
    assert_eq!(
        later["snapshot"]["unread"], 0,
        "the dispatcher's own messages"
    );
}

async fn phone_id(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT id FROM users WHERE email = 'anna@acme.test'")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[sqlx::test]
async fn edits_deletions_and_reactions_reach_the_other_side(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let t = talk(&app).await;
    let (mut desk, _) = joined(&app, &t.desk, &t.topic, None).await;
    let (mut phone, _) = joined(&app, &t.phone, &t.topic, None).await;
    send(&mut desk, &t.topic, "m1", "Gate 2").await;
    let id = expect(&mut desk, "chat_ack").await["message"]["id"].clone();
    expect(&mut desk, "chat").await;
    expect(&mut phone, "chat").await;

    desk.send(json!({"type": "chat_edit", "id": id, "body": "Gate 4", "ref": 1}))
        .await;
    let ack = expect(&mut desk, "chat_ack").await;
    assert_eq!(ack["ref"], 1);
    expect(&mut desk, "chat").await;
    let edited = expect(&mut phone, "chat").await;
    assert_eq!(edited["data"]["body"], "Gate 4");
    assert!(edited["data"]["edited_at"].is_string());
    assert!(
        edited["seq"].as_i64() > edited["data"]["seq"].as_i64(),
        "a new seq"
    );

    phone
        .send(json!({"type": "chat_react", "id": id, "emoji": "👍"}))
        .await;
    expect(&mut phone, "chat_ack").await;
    expect(&mut phone, "chat").await;
    let reacted = expect(&mut desk, "chat").await;
    let me = format!("user:{}", phone_id(&app).await);
    assert_eq!(reacted["data"]["reactions"], json!({"👍": [me]}));

    // Only the author edits or deletes.
    phone
        .send(json!({"type": "chat_edit", "id": id, "body": "mine now", "ref": "x"}))
        .await;
    let refused = expect(&mut phone, "error").await;
    assert_eq!(refused["code"], "forbidden");
    assert_eq!(refused["ref"], "x");

    desk.send(json!({"type": "chat_delete", "id": id})).await;
    expect(&mut desk, "chat_ack").await;
    expect(&mut desk, "chat").await;
    let deleted = expect(&mut phone, "chat").await;
    assert_eq!(deleted["data"]["deleted"], true);
    assert_eq!(deleted["data"]["body"], Value::Null);
    desk.send(json!({"type": "chat_edit", "id": id, "body": "back"}))
        .await;
    assert_eq!(expect(&mut desk, "error").await["code"], "conflict");
    phone.expect_quiet().await;
}

#[sqlx::test]
async fn bad_chat_frames_get_error_frames_and_the_connection_lives_on(db: PgPool) {
    let app = TestApp::spawn_with(db, None, &["--chat-rate-per-minute", "1"]).await;
    let t = talk(&app).await;
    let (mut desk, _) = joined(&app, &t.desk, &t.topic, None).await;
    send(&mut desk, &t.topic, "m0", "   ").await;
    let empty = expect(&mut desk, "error").await;
    assert_eq!(empty["code"], "validation");
    assert_eq!(empty["field"], "body");
    assert_eq!(empty["ref"], "m0");
    send(&mut desk, &t.topic, "m0", &"x".repeat(2001)).await;
    assert_eq!(expect(&mut desk, "error").await["field"], "body");
    send(&mut desk, &t.topic, "no spaces", "hi").await;
    assert_eq!(expect(&mut desk, "error").await["field"], "client_id");
    send(&mut desk, &format!("shipment:{}", t.shipment), "m0", "hi").await;
    assert_eq!(expect(&mut desk, "error").await["code"], "bad_topic");
    desk.send(json!({"type": "chat_send", "topic": t.topic}))
        .await;
    assert_eq!(expect(&mut desk, "error").await["code"], "bad_frame");
    desk.send(json!({"type": "chat_react", "id": 1, "emoji": ":)"}))
        .await;
    assert_eq!(expect(&mut desk, "error").await["field"], "emoji");
    // The burst allowance, then the limit.
    for i in 0..20 {
        send(&mut desk, &t.topic, &format!("m{i}"), "spam").await;
        expect(&mut desk, "chat_ack").await;
        expect(&mut desk, "chat").await;
    }
    send(&mut desk, &t.topic, "m20", "spam").await;
    let limited = expect(&mut desk, "error").await;
    assert_eq!(limited["code"], "rate_limited", "{limited}");
    assert!(limited["retry_after_ms"].as_u64().unwrap() > 0);
    desk.expect_quiet().await;
    assert_eq!(stored(&app).await, 20, "nothing refused was stored");
}

#[sqlx::test]
async fn since_resumes_with_exactly_the_missed_messages_as_they_are_now(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let t = talk(&app).await;
    let (mut desk, _) = joined(&app, &t.desk, &t.topic, None).await;
    let (mut phone, _) = joined(&app, &t.phone, &t.topic, None).await;
    send(&mut desk, &t.topic, "m1", "seen").await;
    expect(&mut desk, "chat_ack").await;
    expect(&mut desk, "chat").await;
    let seen = expect(&mut phone, "chat").await["seq"].as_i64().unwrap();
    drop(phone);

    let mut missed = Vec::new();
    for (i, body) in ["first missed", "second missed"].iter().enumerate() {
        send(&mut desk, &t.topic, &format!("n{i}"), body).await;
        missed.push(expect(&mut desk, "chat_ack").await["message"]["id"].clone());
        expect(&mut desk, "chat").await;
    }
    desk.send(json!({"type": "chat_edit", "id": missed[0], "body": "first, edited"}))
        .await;
    expect(&mut desk, "chat_ack").await;
    expect(&mut desk, "chat").await;

    let (mut phone, _) = joined(&app, &t.phone, &t.topic, Some(seen)).await;
    let a = expect(&mut phone, "chat").await;
    let b = expect(&mut phone, "chat").await;
    assert_eq!(a["data"]["body"], "second missed");
    assert_eq!(
        b["data"]["body"], "first, edited",
        "the message as it is now, once"
    );
    assert!(a["seq"].as_i64() < b["seq"].as_i64());
    expect(&mut phone, "presence").await;
    phone.expect_quiet().await;
    // Live again after the replay.
    send(&mut desk, &t.topic, "n9", "live").await;
    assert_eq!(expect(&mut phone, "chat").await["data"]["body"], "live");
}

#[sqlx::test]
async fn a_driver_of_another_shipment_and_another_organisation_are_refused(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let t = talk(&app).await;
    let (_, other_driver) = app.user("Acme", "bob@acme.test", Role::Driver).await;
    let (_, stranger) = app.user("Other", "eve@other.test", Role::Dispatcher).await;
    for jwt in [&other_driver, &stranger] {
        let mut ws = app.ws(&format!("token={jwt}")).await;
        let refused = ws.subscribe(&t.topic, None).await;
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(refused["code"], "forbidden");
        send(&mut ws, &t.topic, "x", "let me in").await;
        assert_eq!(expect(&mut ws, "error").await["code"], "not_found");
        ws.send(json!({"type": "chat_read", "topic": t.topic, "seq": 1}))
            .await;
        assert_eq!(expect(&mut ws, "error").await["code"], "not_found");
    }
    assert_eq!(stored(&app).await, 0);
}

#[sqlx::test]
async fn a_message_sent_on_one_instance_reaches_a_participant_on_another(db: PgPool) {
    let url = std::env::var("REDIS_URL").expect("REDIS_URL (scripts/test sets it)");
    let shared = Some((url, unique_prefix()));
    let a = TestApp::spawn_instance(db.clone(), shared.clone()).await;
    let b = TestApp::spawn_instance(db, shared).await;
    let t = talk(&a).await;
    let (mut desk, _) = joined(&a, &t.desk, &t.topic, None).await;
    let (mut phone, _) = joined(&b, &t.phone, &t.topic, None).await;
    send(&mut phone, &t.topic, "p1", "Stuck at the gate").await;
    let ack = expect(&mut phone, "chat_ack").await;
    let heard = expect(&mut desk, "chat").await;
    assert_eq!(heard["data"]["id"], ack["message"]["id"]);
    assert_eq!(heard["data"]["body"], "Stuck at the gate");
    // Through Redis (which may come after the database's catch-up on a busy machine).
    let fanout = a.state.tracking.fanout.as_ref().unwrap();
    wait_until("the message arrives through Redis", || async {
        fanout.received() > 0
    })
    .await;
}

/// The participant keys of a `presence` frame.
fn online(frame: &Value) -> Vec<String> {
    assert_eq!(frame["type"], "presence", "{frame}");
    frame["online"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["participant"].as_str().unwrap().to_owned())
        .collect()
}

#[sqlx::test]
async fn presence_counts_a_user_with_two_tabs_once_and_notices_a_dropped_socket(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let t = talk(&app).await;
    let desk_key = "user:1".to_owned();
    let phone_key = format!("user:{}", phone_id(&app).await);
    let (mut desk, _, first) = joined_seeing(&app, &t.desk, &t.topic, None).await;
    assert_eq!(online(&first), [desk_key.as_str()]);

    let (mut tab1, _, seen) = joined_seeing(&app, &t.phone, &t.topic, None).await;
    let both = [desk_key.clone(), phone_key.clone()];
    assert_eq!(online(&seen), both);
    assert_eq!(online(&desk.next().await), both);
    // A second tab of the same driver: only that tab is told who is there.
    let (mut tab2, _, seen) = joined_seeing(&app, &t.phone, &t.topic, None).await;
    assert_eq!(online(&seen), both);
    desk.expect_quiet().await;
    tab1.expect_quiet().await;

    // One tab's socket drops: the driver is still online.
    drop(tab1);
    desk.expect_quiet().await;
    tab2.expect_quiet().await;
    // The last one drops: the dispatcher hears at once.
    drop(tab2);
    assert_eq!(online(&desk.next().await), [desk_key.as_str()]);
    // Leaving the topic counts as leaving too.
    let (mut tab3, _) = joined(&app, &t.phone, &t.topic, None).await;
    assert_eq!(online(&desk.next().await), both);
    tab3.send(json!({"type": "unsubscribe", "topic": t.topic}))
        .await;
    assert_eq!(online(&desk.next().await), [desk_key.as_str()]);
}

#[sqlx::test]
async fn a_socket_that_goes_dead_leaves_presence_within_the_timeout(db: PgPool) {
    // Pinged every two thirds of a second; a peer silent for two seconds is gone.
    let app = TestApp::spawn_with(db, None, &["--presence-timeout-s", "2"]).await;
    let t = talk(&app).await;
    let phone_key = format!("user:{}", phone_id(&app).await);
    let (mut desk, _, _) = joined_seeing(&app, &t.desk, &t.topic, None).await;
    // The phone joins and then loses its network without closing: it never reads (or answers a
    // ping) again after joining, so the server hears from it last after `lost`. The desk is read
    // meanwhile, as a live client answers pings.
    let lost = std::time::Instant::now();
    let (joined, both) = tokio::join!(joined_seeing(&app, &t.phone, &t.topic, None), desk.next());
    let phone = joined.0;
    assert_eq!(online(&both), ["user:1", phone_key.as_str()]);
    assert_eq!(online(&desk.next().await), ["user:1"]);
    assert!(
        lost.elapsed() >= std::time::Duration::from_secs(1),
        "not before the timeout"
    );
    // The dispatcher, who answers pings, stays.
    desk.expect_quiet().await;
    drop(phone);
}

#[sqlx::test]
async fn typing_reaches_the_others_throttled_and_says_when_it_expires(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let t = talk(&app).await;
    let (mut desk, _) = joined(&app, &t.desk, &t.topic, None).await;
    let (mut phone, _) = joined(&app, &t.phone, &t.topic, None).await;
    expect(&mut desk, "presence").await;

    let sent = std::time::Instant::now();
    for _ in 0..5 {
        phone
            .send(json!({"type": "typing", "topic": t.topic}))
            .await;
    }
    let typing = expect(&mut desk, "typing").await;
    assert_eq!(typing["topic"], t.topic);
    assert_eq!(
        typing["participant"],
        format!("user:{}", phone_id(&app).await)
    );
    assert_eq!(typing["name"], "anna@acme.test");
    assert_eq!(typing["expires_in_ms"], 5000);
    // One of the five is forwarded: as many more as 2-s intervals went by while a busy machine
    // sent and handled them, and on a machine that keeps up, none.
    phone.expect_quiet().await;
    let intervals = sent.elapsed().as_secs() / 2;
    desk.send(json!({"type": "ping", "ref": "throttled"})).await;
    let mut more = 0;
    loop {
        let frame = desk.next().await;
        match frame["type"].as_str() {
            Some("typing") => more += 1,
            Some("pong") => break,
            _ => panic!("unexpected {frame}"),
        }
    }
    assert!(
        more <= intervals,
        "{more} more forwarded in {intervals} intervals"
    );
    // Others are throttled on their own.
    desk.send(json!({"type": "typing", "topic": t.topic})).await;
    assert_eq!(expect(&mut phone, "typing").await["participant"], "user:1");

    // Once the throttle interval has passed, typing is forwarded again.
    wait_until("typing is forwarded again", async || {
        phone
            .send(json!({"type": "typing", "topic": t.topic, "ref": "t"}))
            .await;
        phone.expect_quiet().await;
        desk.send(json!({"type": "ping", "ref": "p"})).await;
        let next = desk.next().await;
        if next["type"] == "typing" {
            return true;
        }
        assert_eq!(next["type"], "pong");
        false
    })
    .await;

    // Typing needs the conversation joined first.
    let mut outsider = app.ws(&format!("token={}", t.desk)).await;
    outsider
        .send(json!({"type": "typing", "topic": t.topic, "ref": "o"}))
        .await;
    let refused = expect(&mut outsider, "error").await;
    assert_eq!(refused["code"], "forbidden");
}

#[sqlx::test]
async fn presence_and_typing_cross_instances_through_redis(db: PgPool) {
    let url = std::env::var("REDIS_URL").expect("REDIS_URL (scripts/test sets it)");
    presence_and_typing_cross_instances(db, &url).await;
}

/// Two instances sharing the Redis at `url` (one server or a cluster): who is in a
/// conversation, and who is typing, reach the other instance's sockets.
pub(crate) async fn presence_and_typing_cross_instances(db: PgPool, url: &str) {
    let shared = Some((url.to_owned(), unique_prefix()));
    let a = TestApp::spawn_instance(db.clone(), shared.clone()).await;
    let b = TestApp::spawn_instance(db, shared).await;
    let t = talk(&a).await;
    let phone_key = format!("user:{}", phone_id(&a).await);
    let (mut desk, _, first) = joined_seeing(&a, &t.desk, &t.topic, None).await;
    assert_eq!(online(&first), ["user:1"]);
    // The driver on the other instance sees the dispatcher, and the dispatcher hears of them.
    let (mut phone, _, seen) = joined_seeing(&b, &t.phone, &t.topic, None).await;
    assert_eq!(online(&seen), ["user:1", phone_key.as_str()]);
    assert_eq!(online(&desk.next().await), ["user:1", phone_key.as_str()]);

    phone
        .send(json!({"type": "typing", "topic": t.topic}))
        .await;
    let typing = expect(&mut desk, "typing").await;
    assert_eq!(typing["participant"], phone_key);
    phone.expect_quiet().await;

    drop(phone);
    assert_eq!(online(&desk.next().await), ["user:1"]);
}
