//! Taking access away while it is in use: revoking or expiring a share link, disabling a user,
//! signing a user out everywhere and revoking an ingest token end it at once — on the next
//! request, and for live sockets by closing them with 1008, also on other instances.
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{heard_before_cache_expiry, step, unique_prefix, TestApp, WsClient};

const REVOKED: u16 = 1008;

/// An admin of "Acme" with a vehicle on a shipment.
struct Fleet {
    app: TestApp,
    admin: String,
    vehicle: i64,
    ingest_token: String,
    shipment: i64,
}

async fn fleet(app: TestApp) -> Fleet {
    let (_, admin) = app.user("Acme", "admin@acme.test", Role::Admin).await;
    let (vehicle, ingest_token) = app.vehicle(&admin, "Van 1").await;
    let shipment = app.shipment(&admin, "SHP-1", vehicle, None).await;
    Fleet {
        app,
        admin,
        vehicle,
        ingest_token,
        shipment,
    }
}

impl Fleet {
    async fn share_link(&self) -> String {
        let path = format!("/api/v1/shipments/{}/share", self.shipment);
        let (status, body) = self.app.post(&self.admin, &path, json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// A socket subscribed to the shipment, opened with `query` (`share=…` or `token=…`).
    async fn watcher(&self, app: &TestApp, query: &str) -> WsClient {
        let mut ws = app.ws(query).await;
        let topic = format!("shipment:{}", self.shipment);
        let subscribed = ws.subscribe(&topic, None).await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        ws
    }

    /// Creates a user through the API and signs them in; (id, session token).
    async fn person(&self, email: &str, role: &str) -> (i64, String) {
        let (status, user) = self
            .app
            .post(
                &self.admin,
                "/api/v1/users",
                json!({"email": email, "password": "long enough", "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        assert_eq!(user["role"], role);
        assert_eq!(user["disabled"], false);
        (user["id"].as_i64().unwrap(), self.sign_in(email).await.1)
    }

    /// Gives the shipment to a new driver, `email`; their (id, session token).
    async fn driver(&self, email: &str) -> (i64, String) {
        let (id, jwt) = self.person(email, "driver").await;
        let path = format!("/api/v1/shipments/{}", self.shipment);
        let (status, body) = self
            .app
            .patch(&self.admin, &path, json!({"driver_id": id}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (id, jwt)
    }

    /// `PATCH /users/{id}` as the admin.
    async fn change_user(&self, id: i64, change: Value) -> (StatusCode, Value) {
        let path = format!("/api/v1/users/{id}");
        self.app.patch(&self.admin, &path, change).await
    }

    async fn sign_in(&self, email: &str) -> (StatusCode, String) {
        let (status, body) = self
            .app
            .post(
                "",
                "/api/v1/auth/login",
                json!({"email": email, "password": "long enough"}),
            )
            .await;
        let token = body["token"].as_str().unwrap_or_default().to_owned();
        (status, token)
    }
}

async fn shipment_status(app: &TestApp, auth: &str, shipment: i64) -> StatusCode {
    app.get(auth, &format!("/api/v1/shipments/{shipment}"))
        .await
        .0
}

#[sqlx::test]
async fn revoking_a_share_link_closes_its_sockets_at_once_and_no_others(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let revoked = f.share_link().await;
    let kept = f.share_link().await;
    let mut gone = f.watcher(&f.app, &format!("share={revoked}")).await;
    let mut stays = f.watcher(&f.app, &format!("share={kept}")).await;

    let (status, _) = f
        .app
        .delete(&f.admin, &format!("/api/v1/shares/{revoked}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (code, reason) = gone.closed().await;
    assert_eq!(code, REVOKED, "{reason}");

    // The other link's socket lives on and still receives the shipment's positions.
    let (status, _) = f
        .app
        .ingest(&f.ingest_token, step(0, chrono::Utc::now()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let event = stays.next().await;
    assert_eq!(event["type"], "position", "{event}");
    stays.expect_quiet().await;

    // The revoked link opens nothing any more.
    let url = f
        .app
        .url(&format!("/api/v1/shipments/{}?share={revoked}", f.shipment));
    assert_eq!(
        f.app.http.get(url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let url = format!("ws://{}/api/v1/ws?share={revoked}", f.app.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[sqlx::test]
async fn a_share_link_socket_closes_when_the_link_expires(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let link = f.share_link().await;
    // Links last at least a minute through the API; this one is made to end a moment after the
    // socket opens. A machine too busy to open it in that moment gets a longer one.
    let mut moment = 1.5;
    let mut ws = loop {
        sqlx::query("UPDATE share_links SET expires_at = now() + make_interval(secs => $1)")
            .bind(moment)
            .execute(&f.app.db)
            .await
            .unwrap();
        let url = format!("ws://{}/api/v1/ws?share={link}", f.app.addr);
        match tokio_tungstenite::connect_async(url).await {
            Ok((stream, _)) => break WsClient { stream },
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) if res.status() == 401 => {
                // Up to 6 s, which leaves the socket's close well within the test's patience.
                assert!(moment < 6.0, "the link expired before every socket opened");
                moment *= 2.0;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let (code, reason) = ws.closed().await;
    assert_eq!(code, REVOKED);
    assert!(reason.contains("expired"), "{reason}");
}

#[sqlx::test]
async fn disabling_a_user_closes_their_sockets_and_ends_every_session(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let (id, session) = f.person("dispatch@acme.test", "dispatcher").await;
    let (_, other) = f.person("other@acme.test", "dispatcher").await;
    let mut theirs = f.watcher(&f.app, &format!("token={session}")).await;
    let mut others = f.watcher(&f.app, &format!("token={other}")).await;
    assert_eq!(
        shipment_status(&f.app, &session, f.shipment).await,
        StatusCode::OK
    );

    let (status, user) = f.change_user(id, json!({"disabled": true})).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["disabled"], true);
    assert_eq!(theirs.closed().await.0, REVOKED);
    others.expect_quiet().await;

    assert_eq!(
        shipment_status(&f.app, &session, f.shipment).await,
        StatusCode::UNAUTHORIZED,
        "the session ended with the account"
    );
    assert_eq!(
        f.sign_in("dispatch@acme.test").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Enabled again, they sign in afresh; the old session stays over.
    let (status, _) = f.change_user(id, json!({"disabled": false})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, fresh) = f.sign_in("dispatch@acme.test").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        shipment_status(&f.app, &fresh, f.shipment).await,
        StatusCode::OK
    );
    assert_eq!(
        shipment_status(&f.app, &session, f.shipment).await,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test]
async fn a_new_role_takes_effect_at_once(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let (id, session) = f.person("dispatch@acme.test", "dispatcher").await;
    let mut ws = f.watcher(&f.app, &format!("token={session}")).await;
    let (status, _) = f.change_user(id, json!({"role": "driver"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ws.closed().await.0,
        REVOKED,
        "the socket held a dispatcher's rights"
    );
    assert_eq!(
        f.app.get(&session, "/api/v1/vehicles").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, fresh) = f.sign_in("dispatch@acme.test").await;
    assert_eq!(
        f.app.get(&fresh, "/api/v1/vehicles").await.0,
        StatusCode::FORBIDDEN,
        "a driver does not list the fleet"
    );
}

#[sqlx::test]
async fn signing_out_everywhere_ends_every_session_of_that_user_only(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let (id, phone) = f.person("driver@acme.test", "driver").await;
    let (_, laptop) = f.sign_in("driver@acme.test").await;
    let mut ws = f.app.ws(&format!("token={phone}")).await;

    let path = format!("/api/v1/users/{id}/sessions");
    let (status, _) = f.app.delete(&laptop, &path).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "a user may sign themselves out"
    );
    assert_eq!(ws.closed().await.0, REVOKED);
    for session in [&phone, &laptop] {
        assert_eq!(
            f.app.get(session, "/api/v1/driver").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        f.app.get(&f.admin, "/api/v1/auth/me").await.0,
        StatusCode::OK,
        "other users stay signed in"
    );
    let (status, fresh) = f.sign_in("driver@acme.test").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f.app.get(&fresh, "/api/v1/driver").await.0, StatusCode::OK);
}

#[sqlx::test]
async fn people_are_managed_by_their_own_organisations_admins_only(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let (admin_id, _) = f
        .app
        .user("Acme", "second-admin@acme.test", Role::Admin)
        .await;
    let (dispatcher_id, dispatcher) = f.person("dispatch@acme.test", "dispatcher").await;
    let (_, outsider) = f.app.user("Other Co", "boss@other.test", Role::Admin).await;
    let users = "/api/v1/users";
    let new = |email: &str| json!({"email": email, "password": "long enough", "role": "driver"});

    let (status, body) = f.app.post(&dispatcher, users, new("x@acme.test")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = f.app.post(&f.admin, users, new("DISPATCH@acme.test")).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "emails are unique whatever their case: {body}"
    );
    for (body, field) in [
        (
            json!({"email": "nobody", "password": "long enough", "role": "driver"}),
            "email",
        ),
        (
            json!({"email": "a@acme.test", "password": "short", "role": "driver"}),
            "password",
        ),
        (
            json!({"email": "a@acme.test", "password": "long enough", "role": "owner"}),
            "",
        ),
        (
            json!({"email": "a@acme.test", "password": "long enough", "role": "driver", "x": 1}),
            "",
        ),
    ] {
        let (status, answer) = f.app.post(&f.admin, users, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        if !field.is_empty() {
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }
    }

    // Another organisation's admin neither sees nor changes Acme's people.
    let path = format!("/api/v1/users/{dispatcher_id}");
    let (status, _) = f
        .app
        .patch(&outsider, &path, json!({"disabled": true}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = f.app.get(&outsider, users).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let sessions = format!("{path}/sessions");
    let (status, _) = f.app.delete(&outsider, &sessions).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        f.app.get(&dispatcher, "/api/v1/auth/me").await.0,
        StatusCode::OK
    );

    // A dispatcher may not sign others out; nobody may lock themselves out.
    let other_sessions = format!("/api/v1/users/{admin_id}/sessions");
    let (status, _) = f.app.delete(&dispatcher, &other_sessions).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, me) = f.app.get(&f.admin, "/api/v1/auth/me").await;
    let me_path = format!("/api/v1/users/{}", me["id"]);
    for change in [json!({"disabled": true}), json!({"role": "dispatcher"})] {
        let (status, body) = f.app.patch(&f.admin, &me_path, change).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }
    let (status, body) = f.app.patch(&f.admin, &me_path, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (_, listed) = f.app.get(&f.admin, "/api/v1/users?role=dispatcher").await;
    let emails: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["email"])
        .collect();
    assert_eq!(emails, [&json!("dispatch@acme.test")]);
}

#[sqlx::test]
async fn a_revoked_ingest_token_stops_working_at_once_on_every_instance(db: PgPool) {
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL (scripts/test sets it)");
    let shared = Some((redis, unique_prefix()));
    let a = TestApp::spawn_instance(db.clone(), shared.clone()).await;
    let b = TestApp::spawn_instance(db, shared).await;
    let f = fleet(a).await;
    let now = chrono::Utc::now();
    // Instance b has the token cached from a first post: it would trust it until 10 s after.
    let cached = tokio::time::Instant::now();
    assert_eq!(
        b.ingest(&f.ingest_token, step(0, now)).await.0,
        StatusCode::OK
    );

    let path = format!("/api/v1/vehicles/{}/token", f.vehicle);
    let (status, _) = f.app.delete(&f.admin, &path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    heard_before_cache_expiry(&b, &f.ingest_token, cached, StatusCode::UNAUTHORIZED).await;
    for app in [&f.app, &b] {
        assert_eq!(
            app.ingest(&f.ingest_token, step(1, now)).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&f.app.db)
        .await
        .unwrap();
    assert_eq!(stored, 1, "nothing was stored with the revoked token");

    // Rotating gives the vehicle a working token again.
    let (status, body) = f.app.post(&f.admin, &path, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let fresh = body["ingest_token"].as_str().unwrap();
    assert_eq!(b.ingest(fresh, step(3, now)).await.0, StatusCode::OK);
}

#[sqlx::test]
async fn disabling_a_user_on_one_instance_closes_their_socket_on_another(db: PgPool) {
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL (scripts/test sets it)");
    let shared = Some((redis, unique_prefix()));
    let a = TestApp::spawn_instance(db.clone(), shared.clone()).await;
    let b = TestApp::spawn_instance(db, shared).await;
    let f = fleet(a).await;
    let (id, session) = f.person("dispatch@acme.test", "dispatcher").await;
    let link = f.share_link().await;
    let mut user_socket = f.watcher(&b, &format!("token={session}")).await;
    let mut link_socket = f.watcher(&b, &format!("share={link}")).await;

    let (status, _) = f.change_user(id, json!({"disabled": true})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user_socket.closed().await.0, REVOKED);
    let (status, _) = f
        .app
        .delete(&f.admin, &format!("/api/v1/shares/{link}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(link_socket.closed().await.0, REVOKED);
}

#[sqlx::test]
async fn the_periodic_recheck_notices_a_revocation_whose_message_was_lost(db: PgPool) {
    // What a socket re-checks every few minutes, against changes made behind the server's back
    // (as if the instance that made them could not reach Redis).
    let f = fleet(TestApp::spawn_alone(db).await).await;
    let (id, session) = f.person("dispatch@acme.test", "dispatcher").await;
    let link = f.share_link().await;
    let (_, signed_out) = f.sign_in("dispatch@acme.test").await;
    let signed_in = |token: String| {
        let state = f.app.state.clone();
        async move {
            let session = waymark::auth::authenticate_session(&state, &token)
                .await
                .unwrap();
            (waymark::auth::Viewer::User(session.user.clone()), session)
        }
    };
    let (user, session) = signed_in(session).await;
    let (user_too, other_session) = signed_in(signed_out).await;
    let share = waymark::auth::ShareAccess::lookup(&f.app.db, &link)
        .await
        .unwrap();
    let share = waymark::auth::Viewer::Share(share);
    let db = &f.app.db;
    assert!(waymark::auth::still_valid(db, &user, Some(session.id)).await);
    assert!(waymark::auth::still_valid(db, &user_too, Some(other_session.id)).await);
    assert!(waymark::auth::still_valid(db, &share, None).await);

    sqlx::query("INSERT INTO signed_out_sessions (session_id, user_id, expires_at) VALUES ($1, $2, now() + interval '1 hour')")
        .bind(other_session.id)
        .bind(id)
        .execute(db)
        .await
        .unwrap();
    assert!(!waymark::auth::still_valid(db, &user_too, Some(other_session.id)).await);
    assert!(waymark::auth::still_valid(db, &user, Some(session.id)).await);

    sqlx::query("UPDATE users SET session_epoch = session_epoch + 1 WHERE id = $1")
        .bind(id)
        .execute(&f.app.db)
        .await
        .unwrap();
    sqlx::query("UPDATE share_links SET expires_at = now()")
        .execute(&f.app.db)
        .await
        .unwrap();
    assert!(!waymark::auth::still_valid(db, &user, Some(session.id)).await);
    assert!(!waymark::auth::still_valid(db, &share, None).await);
}

/// Reads frames until `count` server-sent `unsubscribed` frames have come (past any `presence`
/// frame of a conversation); the topics they name.
async fn dropped_topics(ws: &mut WsClient, count: usize) -> std::collections::BTreeSet<String> {
    let mut topics = std::collections::BTreeSet::new();
    while topics.len() < count {
        let frame = ws.next().await;
        if frame["type"] == "presence" {
            continue;
        }
        assert_eq!(frame["type"], "unsubscribed", "{frame}");
        assert_eq!(frame["reason"], "forbidden", "{frame}");
        topics.insert(frame["topic"].as_str().unwrap().to_owned());
    }
    topics
}

/// A socket of `jwt` on `app`, subscribed to each of `topics` (a conversation's last: its
/// `presence` frame is read too).
async fn subscribed(app: &TestApp, jwt: &str, topics: &[String]) -> WsClient {
    let mut ws = app.ws(&format!("token={jwt}")).await;
    for topic in topics {
        let reply = ws.subscribe(topic, None).await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
    }
    if topics.last().is_some_and(|t| t.starts_with("chat:")) {
        assert_eq!(ws.next().await["type"], "presence");
    }
    ws
}

/// The next position frame, past any `presence` frame.
async fn next_position(ws: &mut WsClient) -> Value {
    loop {
        let frame = ws.next().await;
        if frame["type"] != "presence" {
            assert_eq!(frame["type"], "position", "{frame}");
            return frame;
        }
    }
}

#[sqlx::test]
async fn a_driver_taken_off_a_shipment_stops_hearing_of_it_on_every_instance(db: PgPool) {
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL (scripts/test sets it)");
    let shared = Some((redis, unique_prefix()));
    let a = TestApp::spawn_instance(db.clone(), shared.clone()).await;
    let b = TestApp::spawn_instance(db, shared).await;
    let f = fleet(a).await;
    // Anna drives the shipment, and another one in a second van.
    let (anna, anna_jwt) = f.driver("anna@acme.test").await;
    let (bob, _) = f.person("bob@acme.test", "driver").await;
    let path = format!("/api/v1/shipments/{}", f.shipment);
    let (van2, van2_token) = f.app.vehicle(&f.admin, "Van 2").await;
    let other = f.app.shipment(&f.admin, "SHP-2", van2, Some(anna)).await;
    let taken = [
        format!("chat:{}", f.shipment),
        format!("shipment:{}", f.shipment),
        format!("vehicle:{}", f.vehicle),
    ];
    let mut topics = vec![format!("shipment:{other}")];
    topics.extend(taken.iter().rev().cloned());
    let mut ws = subscribed(&b, &anna_jwt, &topics).await;

    // Given to Bob on instance a: Anna's socket on instance b drops the three topics it showed.
    let (status, body) = f
        .app
        .patch(&f.admin, &path, json!({"driver_id": bob}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dropped = dropped_topics(&mut ws, taken.len()).await;
    assert_eq!(dropped, taken.iter().cloned().collect());

    // Events go on in seq order: a position of Bob's van, then one of Anna's other shipment.
    // Anna's next event is the second: the first no longer reaches her.
    let now = chrono::Utc::now();
    assert_eq!(
        f.app.ingest(&f.ingest_token, step(0, now)).await.0,
        StatusCode::OK
    );
    let (status, reply) = f.app.ingest(&van2_token, step(0, now)).await;
    assert_eq!(status, StatusCode::OK);
    let event = next_position(&mut ws).await;
    assert_eq!(event["topic"], format!("shipment:{other}"), "{event}");
    assert_eq!(event["seq"], reply["seqs"][0]);
    ws.expect_quiet().await;
    // And she cannot subscribe again.
    let refused = ws.subscribe(&taken[1], None).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
}

#[sqlx::test]
async fn a_new_vehicle_or_a_finished_trip_ends_the_drivers_view_of_the_old_vehicle(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let (_, anna_jwt) = f.driver("anna@acme.test").await;
    let path = format!("/api/v1/shipments/{}", f.shipment);
    let (van2, van2_token) = f.app.vehicle(&f.admin, "Van 2").await;
    let shipment = format!("shipment:{}", f.shipment);
    let old_van = format!("vehicle:{}", f.vehicle);
    let mut ws = subscribed(&f.app, &anna_jwt, &[shipment.clone(), old_van.clone()]).await;

    // The shipment moves to another van: the old one is no longer hers, the shipment still is.
    let (status, body) = f
        .app
        .patch(&f.admin, &path, json!({"vehicle_id": van2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(dropped_topics(&mut ws, 1).await, [old_van.clone()].into());
    let (status, reply) = f.app.ingest(&van2_token, step(0, chrono::Utc::now())).await;
    assert_eq!(status, StatusCode::OK);
    let event = next_position(&mut ws).await;
    assert_eq!(
        (&event["topic"], &event["seq"]),
        (&json!(shipment), &reply["seqs"][0])
    );

    // Delivered: the new van goes too; the shipment, hers to look back on, stays.
    let new_van = format!("vehicle:{van2}");
    assert_eq!(ws.subscribe(&new_van, None).await["type"], "subscribed");
    let (status, _) = f
        .app
        .patch(&f.admin, &path, json!({"status": "delivered"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dropped_topics(&mut ws, 1).await, [new_van].into());
    ws.expect_quiet().await;
    // A change that takes nothing from her tells her nothing.
    let (status, _) = f
        .app
        .patch(&f.admin, &path, json!({"reference": "SHP-1b"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    ws.expect_quiet().await;
}

#[sqlx::test]
async fn signing_out_ends_that_session_at_once_on_every_instance_and_no_other(db: PgPool) {
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL (scripts/test sets it)");
    let shared = Some((redis, unique_prefix()));
    let a = TestApp::spawn_instance(db.clone(), shared.clone()).await;
    let b = TestApp::spawn_instance(db, shared).await;
    let f = fleet(a).await;
    let (_, phone) = f.person("dispatch@acme.test", "dispatcher").await;
    let (_, laptop) = f.sign_in("dispatch@acme.test").await;
    let (_, tablet) = f.sign_in("dispatch@acme.test").await;
    let mut phone_socket = f.watcher(&b, &format!("token={phone}")).await;
    let mut laptop_socket = f.watcher(&b, &format!("token={laptop}")).await;

    // The phone signs out on instance a: its token stops working on b at once, its socket there
    // closes; the same user's other sessions go on.
    let res = f
        .app
        .http
        .post(f.app.url("/api/v1/auth/logout"))
        .bearer_auth(&phone)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        b.get(&phone, "/api/v1/auth/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(phone_socket.closed().await.0, REVOKED);
    assert_eq!(b.get(&laptop, "/api/v1/auth/me").await.0, StatusCode::OK);
    laptop_socket.expect_quiet().await;
    let url = format!("ws://{}/api/v1/ws?token={phone}", b.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());

    // The pages sign out with the cookie: that session ends too, and the cookie is cleared.
    let res = b
        .http
        .post(b.url("/api/v1/auth/logout"))
        .header("cookie", format!("waymark_session={tablet}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("waymark_session=;"), "{cleared}");
    assert_eq!(
        f.app.get(&tablet, "/api/v1/auth/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        f.app.get(&laptop, "/api/v1/auth/me").await.0,
        StatusCode::OK
    );
    // Signing out again, or with nothing, changes nothing.
    let res = f
        .app
        .http
        .post(f.app.url("/api/v1/auth/logout"))
        .bearer_auth(&phone)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = f
        .app
        .http
        .post(f.app.url("/api/v1/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(b.get(&laptop, "/api/v1/auth/me").await.0, StatusCode::OK);

    // A signed-out session is remembered until it would have expired anyway.
    let db = &f.app.db;
    sqlx::query(
        "UPDATE signed_out_sessions SET expires_at = now() - interval '1 minute'
         WHERE session_id = (SELECT min(session_id) FROM signed_out_sessions)",
    )
    .execute(db)
    .await
    .unwrap();
    assert_eq!(
        waymark::auth::forget_expired_sign_outs(db).await.unwrap(),
        1
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM signed_out_sessions")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(left, 1);
}

#[sqlx::test]
async fn a_session_that_expired_half_a_minute_ago_is_refused(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let user = waymark::auth::authenticate(&f.app.state, &f.admin)
        .await
        .unwrap();
    let sessions = &f.app.state.sessions;
    let expired = sessions
        .issue_for(&user, chrono::Duration::seconds(-30))
        .unwrap();
    let (status, body) = f.app.get(&expired, "/api/v1/auth/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let url = format!("ws://{}/api/v1/ws?token={expired}", f.app.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    // One still running is fine.
    let fresh = sessions
        .issue_for(&user, chrono::Duration::minutes(1))
        .unwrap();
    assert_eq!(f.app.get(&fresh, "/api/v1/auth/me").await.0, StatusCode::OK);
}

#[sqlx::test]
async fn arriving_ends_the_drivers_view_of_the_vehicle_at_once(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let (_, anna_jwt) = f.driver("anna@acme.test").await;
    let path = format!("/api/v1/shipments/{}", f.shipment);
    // The trip below set off twenty minutes ago.
    f.app.backdate(f.shipment).await;
    let shipment = format!("shipment:{}", f.shipment);
    let van = format!("vehicle:{}", f.vehicle);
    let mut ws = subscribed(&f.app, &anna_jwt, &[shipment, van.clone()]).await;

    // Set off from the origin, then reach the destination (12 km in 20 minutes): arrived.
    let now = chrono::Utc::now();
    for (lat, lon, at) in [
        (48.1374, 11.5755, now - chrono::Duration::minutes(20)),
        (48.1642, 11.4330, now),
    ] {
        let fix = json!({"lat": lat, "lon": lon, "recorded_at": at.to_rfc3339(), "accuracy": 5.0});
        let (status, body) = f.app.ingest(&f.ingest_token, fix).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, body) = f.app.get(&f.admin, &path).await;
    assert_eq!(body["status"], "arrived", "{body}");

    // The van is no longer hers to watch, at once rather than at the next periodic re-check;
    // the shipment, hers to look back on, stays.
    let dropped = loop {
        let frame = ws.next().await;
        if frame["type"] == "unsubscribed" {
            break frame;
        }
        assert!(
            ["position", "alert", "presence"].contains(&frame["type"].as_str().unwrap()),
            "{frame}"
        );
    };
    assert_eq!(
        (&dropped["topic"], &dropped["reason"]),
        (&json!(van), &json!("forbidden"))
    );
    ws.send(json!({"type": "ping", "ref": "after"})).await;
    loop {
        let frame = ws.next().await;
        assert_ne!(frame["type"], "unsubscribed", "{frame}");
        if frame["type"] == "pong" {
            break;
        }
    }
}
