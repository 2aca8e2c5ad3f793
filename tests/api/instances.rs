//! Several instances behind a load balancer: fan-out through Redis, Redis going away and coming
//! back, and resuming on another instance. Each test runs its own Redis channels (or its own
//! Redis server) against its own database.
use std::{
    collections::HashSet,
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use chrono::{Duration, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use waymark::auth::Role;

use crate::support::{
    step, unique_prefix, wait_until, wait_until_within, TestApp, WsClient, PATIENCE,
};

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .expect("REDIS_URL must point at a Redis server (scripts/test sets it)")
}

/// A Redis server of the test's own on a free loopback port, so the test can stop and restart it.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts (install Debian's redis-server; scripts/test does)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        wait_until("the private Redis answers", || async {
            match client.get_multiplexed_async_connection().await {
                Ok(mut c) => redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        })
        .await;
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// How many connections listen on `channel`.
    async fn listeners(&self, channel: &str) -> i64 {
        let client = redis::Client::open(self.url()).unwrap();
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            return 0;
        };
        let reply: Vec<redis::Value> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        match reply.get(1) {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        }
    }
}

/// Two instances sharing the test's database and a fresh set of channels on `redis`.
async fn two_instances(db: PgPool, redis: &str) -> (TestApp, TestApp) {
    two_instances_on(db, redis, &unique_prefix()).await
}

async fn two_instances_on(db: PgPool, redis: &str, prefix: &str) -> (TestApp, TestApp) {
    let shared = Some((redis.to_owned(), prefix.to_owned()));
    let a = TestApp::spawn_instance(db.clone(), shared.clone()).await;
    let b = TestApp::spawn_instance(db, shared).await;
    (a, b)
}

/// Reads position events until every seq in `expected` has arrived; fails on a duplicate, on
/// one out of seq order, or on one not expected.
pub(crate) async fn receive_exactly(ws: &mut WsClient, expected: &[i64]) {
    let wanted: HashSet<i64> = expected.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut last = i64::MIN;
    while seen.len() < wanted.len() {
        let event = ws.next().await;
        assert_eq!(event["type"], "position", "{event}");
        let seq = event["seq"].as_i64().unwrap();
        assert!(wanted.contains(&seq), "unexpected seq {seq}");
        assert!(seen.insert(seq), "seq {seq} arrived twice");
        assert!(seq > last, "seq {seq} arrived after {last}");
        last = seq;
    }
    ws.expect_quiet().await;
}

#[sqlx::test]
async fn a_position_posted_to_one_instance_reaches_subscribers_of_another_once(db: PgPool) {
    let (a, b) = two_instances(db, &redis_url()).await;
    let (_, jwt) = a.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (vehicle, token) = a.vehicle(&jwt, "Van 1").await;
    let shipment = a.shipment(&jwt, "SHP-1", vehicle, None).await;
    a.backdate(shipment).await;

    let mut on_b = b.ws(&format!("token={jwt}")).await;
    on_b.subscribe(&format!("shipment:{shipment}"), None).await;
    let mut on_a = a.ws(&format!("token={jwt}")).await;
    on_a.subscribe(&format!("shipment:{shipment}"), None).await;

    let base = Utc::now() - Duration::minutes(5);
    let mut seqs = Vec::new();
    for i in 0..5 {
        let target = if i % 2 == 0 { &a } else { &b };
        let (status, reply) = target.ingest(&token, step(i, base)).await;
        assert_eq!(status, 200);
        seqs.push(reply["seqs"][0].as_i64().unwrap());
    }
    receive_exactly(&mut on_b, &seqs).await;
    receive_exactly(&mut on_a, &seqs).await;
    // Each instance heard every one of the other's events through Redis (the database catch-up
    // may also have delivered some first under load; the sequencer then drops the copy).
    for (instance, from_the_other) in [(&a, 2), (&b, 3)] {
        let fanout = instance.state.tracking.fanout.as_ref().unwrap();
        wait_until(
            "the other instance's events arrive through Redis",
            || async { fanout.received() == from_the_other },
        )
        .await;
    }
}

#[sqlx::test]
async fn since_on_another_instance_replays_exactly_what_was_missed(db: PgPool) {
    let (a, b) = two_instances(db, &redis_url()).await;
    since_on_another_instance_replays_exactly(&a, &b).await;
}

/// Positions posted to both instances while a socket on `b` was away are replayed exactly on
/// resume with `since`, after live delivery through whatever Redis they share; and from the
/// first snapshot, everything.
pub(crate) async fn since_on_another_instance_replays_exactly(a: &TestApp, b: &TestApp) {
    let (_, jwt) = a.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (_, token) = a.vehicle(&jwt, "Van 1").await;
    let mut on_b = b.ws(&format!("token={jwt}")).await;
    let since = on_b.subscribe("fleet", None).await["snapshot"]["seq"]
        .as_i64()
        .unwrap();
    let base = Utc::now() - Duration::minutes(5);
    let mut seqs = Vec::new();
    for i in 0..3 {
        let (_, reply) = a.ingest(&token, step(i, base)).await;
        seqs.push(reply["seqs"][0].as_i64().unwrap());
    }
    receive_exactly(&mut on_b, &seqs).await;
    let seen = *seqs.last().unwrap();
    drop(on_b);
    let mut missed = Vec::new();
    for i in 3..9 {
        let target = if i % 2 == 0 { a } else { b };
        let (_, reply) = target.ingest(&token, step(i, base)).await;
        missed.push(reply["seqs"][0].as_i64().unwrap());
    }
    let mut again = b.ws(&format!("token={jwt}")).await;
    again.subscribe("fleet", Some(seen)).await;
    receive_exactly(&mut again, &missed).await;
    // And from the first snapshot, everything.
    let mut all = a.ws(&format!("token={jwt}")).await;
    all.subscribe("fleet", Some(since)).await;
    seqs.extend(missed);
    receive_exactly(&mut all, &seqs).await;
}

#[sqlx::test]
async fn every_subscriber_gets_every_position_once_through_a_redis_outage(db: PgPool) {
    let mut redis = PrivateRedis::start().await;
    let prefix = unique_prefix();
    let ranges = format!("{prefix}:ranges");
    let (a, b) = two_instances_on(db, &redis.url(), &prefix).await;
    wait_until("both instances listen on Redis", || async {
        redis.listeners(&ranges).await == 2
    })
    .await;

    let (_, jwt) = a.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (_, token) = a.vehicle(&jwt, "Van 1").await;
    let mut on_a = a.ws(&format!("token={jwt}")).await;
    on_a.subscribe("fleet", None).await;
    let mut on_b = b.ws(&format!("token={jwt}")).await;
    on_b.subscribe("fleet", None).await;

    let base = Utc::now() - Duration::minutes(10);
    let mut seqs = Vec::new();
    let mut i = 0;
    let mut post_round = |a: &TestApp, b: &TestApp, token: &str| {
        let (a, b, token) = (
            a.url("/api/v1/positions"),
            b.url("/api/v1/positions"),
            token.to_owned(),
        );
        let http = reqwest::Client::new();
        let from = i;
        i += 6;
        async move {
            let mut out = Vec::new();
            for n in from..from + 6 {
                let url = if n % 2 == 0 { &a } else { &b };
                let res = http
                    .post(url)
                    .bearer_auth(&token)
                    .json(&step(n, base))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let reply: serde_json::Value = res.json().await.unwrap();
                out.push(reply["seqs"][0].as_i64().unwrap());
            }
            out
        }
    };
    seqs.extend(post_round(&a, &b, &token).await);
    redis.stop().await;
    seqs.extend(post_round(&a, &b, &token).await);
    // With Redis gone each instance still serves its own subscribers, and reads what the other
    // committed from the database.
    receive_exactly(&mut on_a, &seqs).await;
    receive_exactly(&mut on_b, &seqs).await;
    let filled = |app: &TestApp| app.state.tracking.sequencer.filled_from_database();
    assert!(
        filled(&a) > 0 && filled(&b) > 0,
        "the outage was bridged from the database"
    );
    let received = |app: &TestApp| app.state.tracking.fanout.as_ref().unwrap().received();
    let before = (received(&a), received(&b));

    redis.restart().await;
    wait_until("both instances are back on Redis", || async {
        redis.listeners(&ranges).await == 2
    })
    .await;
    let more = post_round(&a, &b, &token).await;
    seqs.extend(&more);
    receive_exactly(&mut on_a, &more).await;
    receive_exactly(&mut on_b, &more).await;
    assert_eq!(seqs.len(), 18);
    // Half of the last round was posted to each instance: each hears the other's three again
    // through Redis.
    wait_until("Redis carries events again", || async {
        received(&a) >= before.0 + 3 && received(&b) >= before.1 + 3
    })
    .await;
}

/// The real `waymark serve` binary against the test's database.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    async fn start(db: &PgPool) -> ServerProcess {
        let name: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(db)
            .await
            .unwrap();
        let mut database_url = url::Url::parse(&std::env::var("DATABASE_URL").unwrap()).unwrap();
        database_url.set_path(&format!("/{name}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_waymark"))
            .arg("serve")
            .env("DATABASE_URL", database_url.as_str())
            .env("WAYMARK_BIND", "127.0.0.1:0")
            .env("WAYMARK_JWT_SECRET", "test-secret-test-secret-test-secret")
            // The load here is one vehicle posting from many clients: the per-vehicle ingest
            // limit would end it after its burst, before the crash it is there for.
            .env("WAYMARK_INGEST_RATE", "0")
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the server binary starts");
        // It logs the address it listens on; read up to that line.
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let address = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(at) = line.find("address=") {
                    return line[at + "address=".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .to_owned();
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("the server listens in time");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServerProcess {
            child,
            url: format!("http://{address}"),
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Posts positions from `workers` concurrent clients until the server stops answering; returns
/// the seqs of every position that got a 200, and counts them in `acknowledged` as they come.
async fn post_until_stopped(
    url: &str,
    token: &str,
    workers: i64,
    acknowledged: Arc<AtomicUsize>,
) -> Vec<i64> {
    let base = Utc::now() - Duration::hours(2);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (url, token) = (format!("{url}/api/v1/positions"), token.to_owned());
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut acked = Vec::new();
                for n in 0..100_000 {
                    let p = step(w * 100_000 + n, base);
                    let reply = match http.post(&url).bearer_auth(&token).json(&p).send().await {
                        Ok(res) if res.status() == 200 => res.json::<serde_json::Value>().await,
                        _ => break,
                    };
                    // The server may die between its answer's head and body.
                    let Ok(reply) = reply else { break };
                    acked.push(reply["seqs"][0].as_i64().unwrap());
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked
}

async fn stored_seqs(db: &PgPool) -> HashSet<i64> {
    sqlx::query_scalar::<_, i64>("SELECT seq FROM positions")
        .fetch_all(db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Starts `workers` clients posting until the server stops, and returns once `acknowledged`
/// positions were (and so are in the database); the task yields the acknowledged seqs.
async fn start_load(
    server: &ServerProcess,
    token: &str,
    workers: i64,
    acknowledged: usize,
) -> tokio::task::JoinHandle<Vec<i64>> {
    let count = Arc::new(AtomicUsize::new(0));
    let posting = tokio::spawn({
        let (url, token, count) = (server.url.clone(), token.to_owned(), count.clone());
        async move { post_until_stopped(&url, &token, workers, count).await }
    });
    // How soon depends on how busy the machine is, which is not what the tests are about.
    wait_until_within("load is under way", 6 * PATIENCE, || async {
        count.load(Ordering::Relaxed) >= acknowledged
    })
    .await;
    posting
}

/// Every acknowledged seq is in the database.
async fn assert_all_stored(db: &PgPool, acked: &[i64]) {
    let stored = stored_seqs(db).await;
    let lost: Vec<_> = acked.iter().filter(|s| !stored.contains(s)).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
}

async fn fleet_on(server: &ServerProcess, db: &PgPool) -> (String, String) {
    waymark::auth::create_user(db, "Acme", "d@acme.test", "correct horse", Role::Dispatcher)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .post(format!("{}/api/v1/auth/login", server.url))
        .json(&json!({"email": "d@acme.test", "password": "correct horse"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = login["token"].as_str().unwrap().to_owned();
    let vehicle: serde_json::Value = http
        .post(format!("{}/api/v1/vehicles", server.url))
        .bearer_auth(&jwt)
        .json(&json!({"name": "Van 1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (jwt, vehicle["ingest_token"].as_str().unwrap().to_owned())
}

#[sqlx::test]
async fn sigterm_during_posts_keeps_every_acknowledged_position_and_tells_clients_to_resume(
    db: PgPool,
) {
    let mut server = ServerProcess::start(&db).await;
    let (jwt, token) = fleet_on(&server, &db).await;
    let ws_url = format!(
        "{}/api/v1/ws?token={jwt}",
        server.url.replace("http://", "ws://")
    );
    let (stream, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut ws = WsClient { stream };
    ws.next().await;
    ws.subscribe("fleet", None).await;

    let posting = start_load(&server, &token, 8, 50).await;
    server.signal("-TERM");

    // The socket is closed with the resume code.
    let code = loop {
        use futures_util::StreamExt;
        match tokio::time::timeout(PATIENCE, ws.stream.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
                break u16::from(frame.code)
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 1012);
    let exit = tokio::time::timeout(PATIENCE, server.child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let acked = posting.await.unwrap();
    assert!(!acked.is_empty());
    assert_all_stored(&db, &acked).await;
}

#[sqlx::test]
async fn sigkill_under_load_loses_nothing_that_was_acknowledged(db: PgPool) {
    let mut server = ServerProcess::start(&db).await;
    let (_, token) = fleet_on(&server, &db).await;
    let posting = start_load(&server, &token, 16, 200).await;
    server.signal("-KILL");
    server.child.wait().await.unwrap();
    let acked = posting.await.unwrap();
    assert!(acked.len() >= 200);
    assert_all_stored(&db, &acked).await;
}
