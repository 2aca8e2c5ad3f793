//! Several `waymark serve` processes on one port (`WAYMARK_REUSE_PORT`): the kernel hands each
//! new connection to one of them, each is an instance of its own, and Redis carries the events
//! between them. Without the setting a taken port is refused, saying how to share it.
use chrono::{Duration, Utc};
use clap::Parser;
use sqlx::PgPool;
use waymark::{
    auth::Role,
    cli::{Cli, Command},
};

use crate::support::{step, unique_prefix, TestApp, WsClient};

/// Connections opened to the shared port before giving up on the kernel ever handing one to
/// the other instance (it picks by a hash of the client's port: all on one side is 2⁻⁶³).
const CONNECTIONS_TO_SPREAD: usize = 64;

/// What `waymark serve --bind <bind> [--reuse-port]` listens with.
fn listen_on(bind: &str, reuse_port: bool) -> anyhow::Result<tokio::net::TcpListener> {
    let mut argv = vec!["waymark", "serve", "--bind", bind];
    if reuse_port {
        argv.push("--reuse-port");
    }
    let Command::Serve(config) = Cli::parse_from(argv).command else {
        unreachable!()
    };
    waymark::listen(&config)
}

/// Opens WebSockets to the port `a` and `b` share until one is served by each; returns (the one
/// on `a`, the one on `b`). The instance whose connection gauge went up serves the new socket
/// (its hello has arrived, and the gauge counts from the upgrade); all stay open meanwhile, so
/// the gauges only go up.
async fn one_socket_on_each(a: &TestApp, b: &TestApp, jwt: &str) -> (WsClient, WsClient) {
    let open = |app: &TestApp| app.state.metrics.websocket_connections.get();
    let (mut on_a, mut on_b, mut others) = (None, None, Vec::new());
    for _ in 0..CONNECTIONS_TO_SPREAD {
        let before = (open(a), open(b));
        let ws = a.ws(&format!("token={jwt}")).await;
        let after = (open(a), open(b));
        assert_eq!(
            (after.0 - before.0) + (after.1 - before.1),
            1,
            "exactly one instance took the connection"
        );
        match (after.0 > before.0, &on_a, &on_b) {
            (true, None, _) => on_a = Some(ws),
            (false, _, None) => on_b = Some(ws),
            _ => others.push(ws),
        }
        if let (Some(_), Some(_)) = (&on_a, &on_b) {
            return (on_a.unwrap(), on_b.unwrap());
        }
    }
    panic!("{CONNECTIONS_TO_SPREAD} connections to the shared port all went to one instance");
}

#[sqlx::test]
async fn processes_sharing_a_port_each_take_connections_and_deliver_each_others_events(db: PgPool) {
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL must point at a Redis server");
    let shared = Some((redis, unique_prefix()));
    let a = TestApp::spawn_with(db.clone(), shared.clone(), &["--reuse-port"]).await;
    let port = a.addr.to_string();
    let b = TestApp::spawn_with(db, shared, &["--reuse-port", "--bind", &port]).await;
    assert_eq!(b.addr, a.addr, "both listen on one address");

    let (_, jwt) = a.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (vehicle, token) = a.vehicle(&jwt, "Van 1").await;
    let (mut on_a, mut on_b) = one_socket_on_each(&a, &b, &jwt).await;
    let topic = format!("vehicle:{vehicle}");
    for ws in [&mut on_a, &mut on_b] {
        assert_eq!(ws.subscribe(&topic, None).await["type"], "subscribed");
    }

    // Posted through the shared port: whichever instance commits it, both deliver it.
    for i in 0..4 {
        let (status, reply) = a
            .ingest(&token, step(i, Utc::now() - Duration::minutes(5)))
            .await;
        assert_eq!(status, 200, "{reply}");
        let seq = reply["seqs"][0].as_i64().unwrap();
        for ws in [&mut on_a, &mut on_b] {
            let event = ws.next().await;
            assert_eq!(
                (event["type"].as_str(), event["seq"].as_i64()),
                (Some("position"), Some(seq)),
                "{event}"
            );
        }
    }
}

#[tokio::test]
async fn a_taken_port_is_refused_unless_every_process_on_it_shares_it() {
    for (holder_shares, newcomer_shares) in [(false, false), (false, true), (true, false)] {
        let held = listen_on("127.0.0.1:0", holder_shares).expect("a free port");
        let taken = held.local_addr().unwrap().to_string();
        let error = listen_on(&taken, newcomer_shares).expect_err("the port is taken");
        let message = format!("{error:#}");
        assert!(
            message.contains(&format!(
                "cannot listen on {taken}: another process holds the port"
            )) && message.contains("WAYMARK_REUSE_PORT=true")
                && message.contains("in use"),
            "{message}"
        );
    }

    // Every process sharing: the second one listens too.
    let first = listen_on("127.0.0.1:0", true).unwrap();
    let port = first.local_addr().unwrap().to_string();
    let second = listen_on(&port, true).unwrap();
    assert_eq!(second.local_addr().unwrap(), first.local_addr().unwrap());
}
