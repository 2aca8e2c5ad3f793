//! Test harness: starts the server on port 0 against the test's database and offers clients.
use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::{net::TcpStream, sync::oneshot, task::JoinHandle};
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};
use waymark::{
    auth::{create_user, Role},
    cli::{Cli, Command},
    AppState,
};

/// How long a test waits for something that should happen at once before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: PgPool,
    /// The server's state, for looking inside (subscription counts and the like).
    pub state: AppState,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// A server on its own, fanning out through Redis when `REDIS_URL` is set (on channels of its
    /// own, so tests running side by side never hear each other).
    pub async fn spawn(db: PgPool) -> TestApp {
        let redis = std::env::var("REDIS_URL")
            .ok()
            .map(|url| (url, unique_prefix()));
        TestApp::spawn_instance(db, redis).await
    }

    /// A server with no Redis: it fans out to its own subscribers only.
    pub async fn spawn_alone(db: PgPool) -> TestApp {
        TestApp::spawn_instance(db, None).await
    }

    /// One of several instances sharing `db` and the Redis channels `redis` = (url, prefix).
    pub async fn spawn_instance(db: PgPool, redis: Option<(String, String)>) -> TestApp {
        TestApp::spawn_with(db, redis, &[]).await
    }

    /// A server with extra `waymark serve` flags (they win over the harness's own).
    pub async fn spawn_with(
        db: PgPool,
        redis: Option<(String, String)>,
        extra: &[&str],
    ) -> TestApp {
        let defaults = [
            ("--bind", "127.0.0.1:0"),
            ("--jwt-secret", "test-secret-test-secret-test-secret"),
            ("--tile-url", ""),
            ("--ws-write-timeout-s", "2"),
            // The alert clock is the tests' own (they call `alerts::tick` with a time of their
            // choosing): a background tick in the middle of a slow test would raise `silent` for
            // its points from minutes ago.
            ("--alert-tick-s", "86400"),
            // Likewise trips and stops: tests bring them up to date with `TestApp::segment`.
            ("--segment-tick-s", "0"),
            // Tests post as fast as they can; the limit itself has its own tests.
            ("--ingest-rate", "0"),
        ];
        let mut args: Vec<String> = vec!["waymark".into(), "serve".into()];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        // Without Redis, override any REDIS_URL in the environment.
        let (url, prefix) = redis.unwrap_or_default();
        args.extend(["--redis-url".into(), url, "--redis-prefix".into(), prefix]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let cli = Cli::parse_from(args);
        let Command::Serve(config) = cli.command else {
            unreachable!()
        };
        let listener = waymark::listen(&config).expect("the server listens");
        let addr = listener.local_addr().unwrap();
        let state = AppState::new(db.clone(), *config)
            .await
            .expect("the server starts");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(waymark::serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            db,
            state,
            http: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Brings every vehicle's trips and stops up to date with the fixes stored so far, as the
    /// segmenter's background task does every tick.
    pub async fn segment(&self) {
        waymark::history::segmenter::catch_up(&self.db, &self.state.metrics)
            .await
            .expect("trips and stops detected");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server the way SIGTERM does and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    /// Creates a user and signs in; returns (user id, JWT).
    pub async fn user(&self, org: &str, email: &str, role: Role) -> (i64, String) {
        let id = create_user(&self.db, org, email, "correct horse", role)
            .await
            .unwrap();
        let res = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": "correct horse"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        (id, body["token"].as_str().unwrap().to_owned())
    }

    /// A request with `jwt` as the bearer token and `body` (if any) as JSON; its status and
    /// JSON answer (null when it has none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        jwt: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(jwt);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, jwt: &str, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, jwt, path, None).await
    }

    pub async fn post(&self, jwt: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, jwt, path, Some(body))
            .await
    }

    pub async fn patch(&self, jwt: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PATCH, jwt, path, Some(body))
            .await
    }

    pub async fn delete(&self, jwt: &str, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, jwt, path, None).await
    }

    /// Creates a vehicle; returns (vehicle id, ingest token).
    pub async fn vehicle(&self, jwt: &str, name: &str) -> (i64, String) {
        let (status, body) = self
            .post(jwt, "/api/v1/vehicles", json!({"name": name}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["vehicle"]["id"].as_i64().unwrap(),
            body["ingest_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates a shipment for `vehicle` (and `driver`) along a short route in Munich.
    pub async fn shipment(
        &self,
        jwt: &str,
        reference: &str,
        vehicle: i64,
        driver: Option<i64>,
    ) -> i64 {
        let (status, body) = self
            .post(
                jwt,
                "/api/v1/shipments",
                json!({
                    "reference": reference,
                    "origin": {"lat": 48.1374, "lon": 11.5755, "name": "Marienplatz"},
                    "destination": {"lat": 48.1642, "lon": 11.4330},
                    "planned_route": {"type": "LineString", "coordinates": [[11.5755, 48.1374], [11.4330, 48.1642]]},
                    "vehicle_id": vehicle,
                    "driver_id": driver,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// Opens `shipment`'s time window a day back. Tests replay trips recorded hours ago, while
    /// the API assigns a shipment its vehicle now, and only fixes taken since join it.
    pub async fn backdate(&self, shipment: i64) {
        sqlx::query("UPDATE shipments SET fixes_from = now() - interval '1 day' WHERE id = $1")
            .bind(shipment)
            .execute(&self.db)
            .await
            .unwrap();
    }

    /// Posts a raw body to the ingest endpoint.
    pub async fn ingest(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.post(token, "/api/v1/positions", body).await
    }

    pub async fn ws(&self, query: &str) -> WsClient {
        self.ws_with(query, None).await
    }

    /// As [`TestApp::ws`], with the client's own WebSocket settings.
    pub async fn ws_with(
        &self,
        query: &str,
        config: Option<tokio_tungstenite::tungstenite::protocol::WebSocketConfig>,
    ) -> WsClient {
        let url = format!("ws://{}/api/v1/ws?{}", self.addr, query);
        let (stream, _) = tokio_tungstenite::connect_async_with_config(url, config, false)
            .await
            .expect("websocket connects");
        let mut client = WsClient { stream };
        let hello = client.next().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        client
    }

    pub async fn count_positions(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM positions")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn send(&mut self, frame: Value) {
        self.stream
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.unwrap();
    }

    /// The next JSON text message (one frame, or on a `batch=true` connection possibly an array
    /// of frames); fails the test if none comes in time. (The server's pings do not count: one
    /// every few seconds must not keep a test waiting for ever.)
    pub async fn next(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a frame arrives in time")
                .expect("the socket is open")
                .expect("the frame is readable");
            match msg {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// Reads until the server closes the connection; its close code and reason. Fails the test
    /// if the connection stays open, or ends without a close frame.
    pub async fn closed(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("the server closes the connection in time");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Subscribes and returns the `subscribed` frame.
    pub async fn subscribe(&mut self, topic: &str, since: Option<i64>) -> Value {
        let mut frame = json!({"type": "subscribe", "topic": topic, "ref": topic});
        if let Some(s) = since {
            frame["since"] = json!(s);
        }
        self.send(frame).await;
        self.next().await
    }

    /// Proves nothing else is queued: a ping's pong is the very next frame.
    pub async fn expect_quiet(&mut self) {
        self.send(json!({"type": "ping", "ref": "quiet"})).await;
        let frame = self.next().await;
        assert_eq!(
            frame["type"], "pong",
            "expected nothing before the pong, got {frame}"
        );
        assert_eq!(frame["ref"], "quiet");
    }
}

/// Polls `check` until it holds; fails the test after [`PATIENCE`].
pub async fn wait_until(what: &str, check: impl AsyncFnMut() -> bool) {
    wait_until_within(what, PATIENCE, check).await
}

/// Polls `check` until it holds; fails the test after `patience`.
pub async fn wait_until_within(
    what: &str,
    patience: Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    wait_for_within(what, patience, check_bool(&mut check)).await
}

/// Polls `check` until it gives a value, and returns it; after [`PATIENCE`] fails the test with
/// what `check` said the last time (its `Err`: what there is instead).
pub async fn wait_for<T>(what: &str, check: impl AsyncFnMut() -> Result<T, String>) -> T {
    wait_for_within(what, PATIENCE, check).await
}

/// [`wait_for`] with its own patience. The one polling loop of the tests: every wait goes
/// through it, so none sleeps a fixed time and none waits unbounded.
pub async fn wait_for_within<T>(
    what: &str,
    patience: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(now) => assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting until {what}: {now}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A yes/no check as a [`wait_for`] check.
fn check_bool(
    check: &mut impl AsyncFnMut() -> bool,
) -> impl AsyncFnMut() -> Result<(), String> + '_ {
    async move || {
        if check().await {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    }
}

/// A Redis channel prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("waymark-test-{}", waymark::auth::token::generate(16))
}

/// A position near Marienplatz, `i` steps east, at a fixed time `i` seconds after `base`.
pub fn step(i: i64, base: chrono::DateTime<chrono::Utc>) -> Value {
    json!({
        "lat": 48.1374,
        "lon": 11.5755 + i as f64 * 0.0001,
        "recorded_at": (base + chrono::Duration::seconds(i)).to_rfc3339(),
        "speed": 8.5,
        "heading": 90.0,
        "accuracy": 5.0,
        "battery": 80.0,
    })
}

/// A program named by `env`, or the first of `names` found on `PATH`.
pub fn find_program(env: &str, names: &[&str]) -> String {
    if let Ok(path) = std::env::var(env) {
        return path;
    }
    for name in names {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let candidate = std::path::Path::new(dir).join(name);
            if candidate.is_file() {
                return candidate.to_string_lossy().into_owned();
            }
        }
    }
    panic!(
        "{} not found: scripts/test installs it, or set {env}",
        names[0]
    );
}

/// A dispatcher of Acme and one vehicle, Van 1, with its ingest token.
pub struct Fleet {
    pub app: TestApp,
    pub dispatcher: String,
    pub vehicle: i64,
    pub token: String,
}

pub async fn fleet(app: TestApp) -> Fleet {
    let (_, dispatcher) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (vehicle, token) = app.vehicle(&dispatcher, "Van 1").await;
    Fleet {
        app,
        dispatcher,
        vehicle,
        token,
    }
}

/// Waits until `app` answers `token`'s Traccar heartbeat (which authenticates but stores
/// nothing) with `expected`, and fails unless that happens before the ingest token cache would
/// have let go of the token by itself, 10 s after `cached`: only a message through Redis can
/// have told `app` in time.
pub async fn heard_before_cache_expiry(
    app: &TestApp,
    token: &str,
    cached: tokio::time::Instant,
    expected: StatusCode,
) {
    let heartbeat =
        json!({"device_id": token, "location": {"timestamp": chrono::Utc::now().to_rfc3339()}});
    let what = format!("the instance answers the token {expected}");
    let heard = wait_until(&what, || async {
        let res = app
            .http
            .post(app.url("/api/v1/osmand"))
            .json(&heartbeat)
            .send()
            .await
            .unwrap();
        res.status() == expected
    });
    tokio::time::timeout_at(cached + Duration::from_secs(10), heard)
        .await
        .expect("the change reached the instance before its cache expired");
}
