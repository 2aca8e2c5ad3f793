//! Chat over HTTP: sending with client ids, history pages and `since`, edits, deletions,
//! reactions, read marks and unread counts, and who may take part.
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::TestApp;

/// A dispatcher and the driver of one shipment: (app, dispatcher jwt, driver jwt, shipment).
async fn conversation(app: &TestApp) -> (String, String, i64) {
    let (_, desk) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (driver, phone) = app.user("Acme", "anna@acme.test", Role::Driver).await;
    let (vehicle, _) = app.vehicle(&desk, "Van 1").await;
    let shipment = app.shipment(&desk, "SHP-1", vehicle, Some(driver)).await;
    (desk, phone, shipment)
}

async fn say(
    app: &TestApp,
    jwt: &str,
    shipment: i64,
    client_id: &str,
    body: &str,
) -> (StatusCode, Value) {
    app.post(
        jwt,
        &format!("/api/v1/shipments/{shipment}/chat"),
        json!({"client_id": client_id, "body": body}),
    )
    .await
}

fn bodies(history: &Value) -> Vec<Value> {
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect()
}

#[sqlx::test]
async fn a_message_is_stored_once_per_client_id_and_read_by_the_other_side(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (desk, phone, shipment) = conversation(&app).await;
    let (status, first) = say(&app, &desk, shipment, "m1", "  Gate 4 today, not 2  ").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["body"], "Gate 4 today, not 2", "trimmed");
    assert_eq!(first["author"]["name"], "dispatch@acme.test");
    assert_eq!(first["author"]["role"], "dispatcher");
    // The same client id again (a retry after a lost answer) is the same message.
    let (status, again) = say(&app, &desk, shipment, "m1", "Gate 4 today, not 2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["seq"], first["seq"]);
    let (status, reply) = say(&app, &phone, shipment, "m1", "OK, on my way").await;
    assert_eq!(status, StatusCode::CREATED, "client ids are per author");
    assert!(reply["seq"].as_i64() > first["seq"].as_i64());

    let (status, history) = app
        .get(&phone, &format!("/api/v1/shipments/{shipment}/chat"))
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(
        bodies(&history),
        [json!("Gate 4 today, not 2"), json!("OK, on my way")]
    );
    assert_eq!(history["unread"], 1, "the dispatcher's message is unread");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM chat_messages")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 2);
}

#[sqlx::test]
async fn bad_messages_are_refused_with_the_field_named(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (desk, _, shipment) = conversation(&app).await;
    let long = "x".repeat(2001);
    for (body, field) in [
        (json!({"client_id": "a", "body": "   "}), "body"),
        (json!({"client_id": "a", "body": long}), "body"),
        (json!({"client_id": "a b", "body": "hi"}), "client_id"),
        (json!({"client_id": "", "body": "hi"}), "client_id"),
    ] {
        let (status, reply) = app
            .post(&desk, &format!("/api/v1/shipments/{shipment}/chat"), body)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert_eq!(reply["error"]["field"], field, "{reply}");
    }
    let (status, _) = app
        .post(
            &desk,
            &format!("/api/v1/shipments/{shipment}/chat"),
            json!({"client_id": "a", "body": "hi", "html": true}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM chat_messages")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[sqlx::test]
async fn history_pages_back_and_since_returns_exactly_what_changed(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (desk, phone, shipment) = conversation(&app).await;
    let mut seqs = Vec::new();
    for i in 0..7 {
        let (_, m) = say(
            &app,
            &desk,
            shipment,
            &format!("m{i}"),
            &format!("message {i}"),
        )
        .await;
        seqs.push(m["seq"].as_i64().unwrap());
    }
    let chat = format!("/api/v1/shipments/{shipment}/chat");
    let (_, page) = app.get(&phone, &format!("{chat}?limit=3")).await;
    assert_eq!(
        bodies(&page),
        [json!("message 4"), json!("message 5"), json!("message 6")]
    );
    let before = page["next_before"].as_i64().unwrap();
    let (_, page) = app
        .get(&phone, &format!("{chat}?limit=3&before={before}"))
        .await;
    assert_eq!(
        bodies(&page),
        [json!("message 1"), json!("message 2"), json!("message 3")]
    );
    let before = page["next_before"].as_i64().unwrap();
    let (_, page) = app
        .get(&phone, &format!("{chat}?limit=3&before={before}"))
        .await;
    assert_eq!(bodies(&page), [json!("message 0")]);
    assert_eq!(page["next_before"], Value::Null);

    // Away after message 4: messages 5 and 6 are new, and message 2 was edited meanwhile.
    let (_, all) = app.get(&desk, &chat).await;
    let id2 = all["messages"][2]["id"].as_i64().unwrap();
    let (status, _) = app
        .patch(
            &desk,
            &format!("/api/v1/chat/{id2}"),
            json!({"body": "message 2, corrected"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, missed) = app.get(&phone, &format!("{chat}?since={}", seqs[4])).await;
    assert_eq!(
        bodies(&missed),
        [
            json!("message 5"),
            json!("message 6"),
            json!("message 2, corrected")
        ]
    );
    let (status, _) = app.get(&phone, &format!("{chat}?since=1&before=5")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get(&phone, &format!("{chat}?limit=500")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[sqlx::test]
async fn authors_edit_and_delete_their_own_and_everyone_reacts(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (desk, phone, shipment) = conversation(&app).await;
    let (_, m) = say(&app, &phone, shipment, "x", "Stuck at the gate").await;
    let id = m["id"].as_i64().unwrap();
    let msg = format!("/api/v1/chat/{id}");

    let (status, _) = app.patch(&desk, &msg, json!({"body": "hijacked"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only the author edits");
    let (status, edited) = app
        .patch(&phone, &msg, json!({"body": "Stuck at gate 4"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["body"], "Stuck at gate 4");
    assert!(edited["edited_at"].is_string());
    assert!(edited["updated_seq"].as_i64() > m["updated_seq"].as_i64());

    let react = format!("{msg}/reactions");
    let (_, r) = app.post(&desk, &react, json!({"emoji": "👍"})).await;
    assert_eq!(r["reactions"]["👍"], json!(["user:1"]));
    let (_, r) = app.post(&phone, &react, json!({"emoji": "👍"})).await;
    assert_eq!(r["reactions"]["👍"], json!(["user:1", "user:2"]));
    let (_, r) = app.post(&desk, &react, json!({"emoji": "👍"})).await;
    assert_eq!(
        r["reactions"]["👍"],
        json!(["user:2"]),
        "a second tap takes it back"
    );
    let (status, _) = app.post(&desk, &react, json!({"emoji": "lol"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let res = app
        .http
        .delete(app.url(&msg))
        .bearer_auth(&desk)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app
        .http
        .delete(app.url(&msg))
        .bearer_auth(&phone)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let deleted: Value = res.json().await.unwrap();
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["body"], Value::Null);
    // It keeps its place in the conversation, shown as deleted.
    let (_, history) = app
        .get(&desk, &format!("/api/v1/shipments/{shipment}/chat"))
        .await;
    assert_eq!(history["messages"][0]["deleted"], true);
    let (status, _) = app.patch(&phone, &msg, json!({"body": "back"})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a deleted message stays deleted"
    );
    let (status, _) = app.post(&desk, &react, json!({"emoji": "👍"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[sqlx::test]
async fn read_marks_clear_unread_counts_and_never_move_back(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (desk, phone, shipment) = conversation(&app).await;
    say(&app, &desk, shipment, "a", "one").await;
    let (_, second) = say(&app, &desk, shipment, "b", "two").await;
    say(&app, &phone, shipment, "c", "mine").await;

    let (_, counts) = app.get(&phone, "/api/v1/chat/unread").await;
    assert_eq!(
        counts["conversations"],
        json!([{"shipment_id": shipment, "unread": 2}])
    );
    let read = format!("/api/v1/shipments/{shipment}/chat/read");
    let (status, r) = app.post(&phone, &read, json!({"seq": second["seq"]})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["unread"], 0);
    let (_, r) = app.post(&phone, &read, json!({"seq": 1})).await;
    assert_eq!(r["unread"], 0, "an older mark does not bring them back");
    let (_, history) = app
        .get(&desk, &format!("/api/v1/shipments/{shipment}/chat"))
        .await;
    let reads = history["reads"].as_array().unwrap();
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0]["participant"], "user:2");
    assert_eq!(reads[0]["read_seq"], second["seq"]);
    let (_, counts) = app.get(&desk, "/api/v1/chat/unread").await;
    assert_eq!(
        counts["conversations"],
        json!([{"shipment_id": shipment, "unread": 1}])
    );
}

#[sqlx::test]
async fn only_the_shipments_people_and_a_chat_share_link_take_part(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (desk, _, shipment) = conversation(&app).await;
    let (_, other_driver) = app.user("Acme", "bob@acme.test", Role::Driver).await;
    let (_, stranger) = app.user("Other", "eve@other.test", Role::Dispatcher).await;
    let chat = format!("/api/v1/shipments/{shipment}/chat");
    assert_eq!(app.get(&other_driver, &chat).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&stranger, &chat).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        say(&app, &stranger, shipment, "x", "hi").await.0,
        StatusCode::NOT_FOUND
    );

    let share = |chat: bool| {
        let desk = desk.clone();
        let app = &app;
        async move {
            let (_, link) = app
                .post(
                    &desk,
                    &format!("/api/v1/shipments/{shipment}/share"),
                    json!({"chat": chat}),
                )
                .await;
            link["token"].as_str().unwrap().to_owned()
        }
    };
    let silent = share(false).await;
    let res = app
        .http
        .post(app.url(&format!("{chat}?share={silent}")))
        .json(&json!({"client_id": "c", "body": "Where is my parcel?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let talking = share(true).await;
    let res = app
        .http
        .post(app.url(&format!("{chat}?share={talking}")))
        .json(&json!({"client_id": "c", "body": "<img src=x onerror=alert(1)>"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let m: Value = res.json().await.unwrap();
    assert_eq!(m["author"]["role"], "customer");
    assert_eq!(
        m["body"], "<img src=x onerror=alert(1)>",
        "stored as text, as sent"
    );
    let (_, history) = app.get(&desk, &chat).await;
    assert_eq!(history["messages"][0]["author"]["name"], "Customer");
}

#[sqlx::test]
async fn a_chat_share_link_reads_its_conversation_in_pages_and_no_other(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (desk, _, shipment) = conversation(&app).await;
    for (i, body) in ["Loading now", "Leaving at 9", "Gate 4"].iter().enumerate() {
        let (status, m) = say(&app, &desk, shipment, &format!("m{i}"), body).await;
        assert_eq!(status, StatusCode::CREATED, "{m}");
    }
    let share = |shipment: i64, chat: bool| {
        let desk = desk.clone();
        let app = &app;
        async move {
            let (status, link) = app
                .post(
                    &desk,
                    &format!("/api/v1/shipments/{shipment}/share"),
                    json!({"chat": chat}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{link}");
            link["token"].as_str().unwrap().to_owned()
        }
    };
    // As the customer's page asks: no session, the link's token in the query.
    let read = |query: String| {
        let app = &app;
        async move {
            let url = app.url(&format!("/api/v1/shipments/{shipment}/chat?{query}"));
            let res = app.http.get(url).send().await.unwrap();
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let talking = share(shipment, true).await;
    let (status, history) = read(format!("share={talking}")).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(
        bodies(&history),
        [json!("Loading now"), json!("Leaving at 9"), json!("Gate 4")]
    );
    assert!(
        history["me"].as_str().unwrap().starts_with("customer:"),
        "{history}"
    );
    let (status, page) = read(format!("share={talking}&limit=2")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(bodies(&page), [json!("Leaving at 9"), json!("Gate 4")]);
    let before = page["next_before"]
        .as_i64()
        .expect("a cursor to the older page");
    let (status, older) = read(format!("share={talking}&before={before}")).await;
    assert_eq!(status, StatusCode::OK, "{older}");
    assert_eq!(bodies(&older), [json!("Loading now")]);
    let since = history["messages"][1]["seq"].as_i64().unwrap();
    let (status, news) = read(format!("share={talking}&since={since}")).await;
    assert_eq!(status, StatusCode::OK, "{news}");
    assert_eq!(bodies(&news), [json!("Gate 4")]);
    let (status, typo) = read(format!("share={talking}&befor={before}")).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown keys are still refused: {typo}"
    );

    let silent = share(shipment, false).await;
    let (status, refused) = read(format!("share={silent}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");

    let (vehicle, _) = app.vehicle(&desk, "Van 2").await;
    let elsewhere = app.shipment(&desk, "SHP-2", vehicle, None).await;
    let theirs = share(elsewhere, true).await;
    let (status, refused) = read(format!("share={theirs}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");
}

#[sqlx::test]
async fn a_message_out_of_sight_is_answered_as_one_that_does_not_exist(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (desk, _, shipment) = conversation(&app).await;
    let (bob, other_phone) = app.user("Acme", "bob@acme.test", Role::Driver).await;
    let (vehicle, _) = app.vehicle(&desk, "Van 2").await;
    let theirs = app.shipment(&desk, "SHP-2", vehicle, Some(bob)).await;
    let (status, hidden) = say(&app, &desk, shipment, "m1", "Gate 4").await;
    assert_eq!(status, StatusCode::CREATED, "{hidden}");
    let hidden = hidden["id"].as_i64().unwrap();
    // Bob may talk in his own shipment's conversation, not in Anna's.
    let (status, own) = say(&app, &other_phone, theirs, "b1", "On my way").await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    let missing = hidden + 1_000_000;

    let attempts = |id: i64| {
        let app = &app;
        let jwt = other_phone.clone();
        async move {
            let path = format!("/api/v1/chat/{id}");
            vec![
                app.patch(&jwt, &path, json!({"body": "changed"})).await,
                app.delete(&jwt, &path).await,
                app.post(&jwt, &format!("{path}/reactions"), json!({"emoji": "👍"}))
                    .await,
            ]
        }
    };
    let out_of_sight = attempts(hidden).await;
    let nonexistent = attempts(missing).await;
    for (seen, none) in out_of_sight.iter().zip(&nonexistent) {
        assert_eq!(seen.0, StatusCode::NOT_FOUND, "{}", seen.1);
        assert_eq!(seen, none, "the two answers tell nothing apart");
        assert_eq!(seen.1["error"]["message"], "message not found");
    }
    let (_, history) = app
        .get(&desk, &format!("/api/v1/shipments/{shipment}/chat"))
        .await;
    assert_eq!(bodies(&history), [json!("Gate 4")], "untouched");
    assert_eq!(history["messages"][0]["reactions"], json!({}));
}

#[sqlx::test]
async fn a_participant_sending_too_fast_gets_429(db: PgPool) {
    let app = TestApp::spawn_with(db, None, &["--chat-rate-per-minute", "1"]).await;
    let (desk, phone, shipment) = conversation(&app).await;
    for i in 0..20 {
        let (status, _) = say(&app, &desk, shipment, &format!("m{i}"), "spam").await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, body) = say(&app, &desk, shipment, "m20", "spam").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // A re-send of one already stored is not a new message and others still talk.
    assert_eq!(
        say(&app, &phone, shipment, "p", "hello").await.0,
        StatusCode::CREATED
    );
}
