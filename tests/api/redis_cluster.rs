//! Instances fanning out through a Redis Cluster: each test starts a cluster of three masters of
//! its own on loopback ports and two instances against it. Positions reach the other instance
//! through sharded pub/sub over more than one master, `since` resumes exactly, revocations close
//! sockets elsewhere at once, chat presence and typing and the sign-in limits hold across
//! instances too, and the instances follow a channel whose slot moves and find a master again
//! that went away and came back.
use std::{path::PathBuf, process::Stdio};

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use waymark::auth::Role;

use crate::{
    chat_live::presence_and_typing_cross_instances,
    instances::{receive_exactly, since_on_another_instance_replays_exactly},
    security::sign_in_limits_hold_across_instances,
    support::{find_program, step, unique_prefix, wait_until, TestApp, WsClient},
};

/// Three masters (no replicas) on free loopback ports, killed and forgotten on drop.
struct LocalCluster {
    server: String,
    ports: Vec<u16>,
    nodes: Vec<Child>,
    dir: PathBuf,
}

impl LocalCluster {
    async fn start() -> LocalCluster {
        let server = find_program("WAYMARK_REDIS_SERVER", &["redis-server"]);
        let cli = find_program("WAYMARK_REDIS_CLI", &["redis-cli"]);
        require_redis_7(&server).await;
        let dir = std::env::temp_dir().join(unique_prefix());
        std::fs::create_dir_all(&dir).unwrap();
        let ports = free_ports(3);
        let nodes = ports
            .iter()
            .map(|port| start_node(&server, &dir, *port))
            .collect();
        let cluster = LocalCluster {
            server,
            ports,
            nodes,
            dir,
        };
        for port in &cluster.ports {
            wait_until("a cluster node answers", || async {
                cluster
                    .query::<String>(*port, redis::cmd("PING"))
                    .await
                    .is_some()
            })
            .await;
        }
        let mut create = Command::new(&cli);
        create.args(["--cluster", "create"]);
        create.args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = create.output().await.expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_whole().await;
        cluster
    }

    async fn wait_whole(&self) {
        for port in &self.ports {
            wait_until("every node sees the cluster whole", || async {
                let info = self
                    .query::<String>(*port, redis::cmd("CLUSTER").arg("INFO").clone())
                    .await;
                info.is_some_and(|i| i.contains("cluster_state:ok"))
            })
            .await;
        }
    }

    /// Kills node `i` (a master, with no replica to take over).
    async fn kill(&mut self, i: usize) {
        self.nodes[i].kill().await.unwrap();
    }

    /// Starts node `i` again from its configuration file: it comes back with its slots.
    async fn restart(&mut self, i: usize) {
        self.nodes[i] = start_node(&self.server, &self.dir, self.ports[i]);
        self.wait_whole().await;
    }

    /// A `REDIS_URL` naming the cluster by its first node only: the instance finds the rest.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }

    /// A `REDIS_URL` listing the other two nodes as seeds.
    fn seed_list(&self) -> String {
        self.ports[1..]
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `cmd` on the node at `port` alone; none if it does not answer.
    async fn query<T: redis::FromRedisValue>(&self, port: u16, cmd: redis::Cmd) -> Option<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        cmd.query_async(&mut c).await.ok()
    }

    /// How many connections listen on each of `channels`, summed over the nodes; and on how
    /// many nodes anyone listens.
    async fn listeners(&self, channels: &[String]) -> (Vec<i64>, usize) {
        let mut total = vec![0; channels.len()];
        let mut nodes = 0;
        for port in &self.ports {
            let mut cmd = redis::cmd("PUBSUB");
            cmd.arg("SHARDNUMSUB").arg(channels);
            let reply: Vec<(String, i64)> = self.query(*port, cmd).await.unwrap_or_default();
            let here: Vec<i64> = reply.into_iter().map(|(_, n)| n).collect();
            if here.iter().any(|n| *n > 0) {
                nodes += 1;
            }
            for (t, n) in total.iter_mut().zip(here) {
                *t += n;
            }
        }
        (total, nodes)
    }

    /// How many connections listen on shard channel `channel` at the node at `port`.
    async fn listeners_on(&self, port: u16, channel: &str) -> i64 {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("SHARDNUMSUB").arg(channel);
        let reply: Vec<(String, i64)> = self.query(port, cmd).await.unwrap_or_default();
        reply.first().map_or(0, |(_, n)| *n)
    }

    /// Moves the (keyless) slot of `key` from the master at `source` to the one at `target`,
    /// Redis's own way: importing, migrating, then the new owner first.
    async fn move_slot_of(&self, key: &str, source: u16, target: u16) {
        let cmd = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).clone();
        let slot: i64 = self.query(source, cmd).await.unwrap();
        let id = |port| self.query::<String>(port, redis::cmd("CLUSTER").arg("MYID").clone());
        let (source_id, target_id) = (id(source).await.unwrap(), id(target).await.unwrap());
        for (port, state, node) in [
            (target, "IMPORTING", &source_id),
            (source, "MIGRATING", &target_id),
            (target, "NODE", &target_id),
            (source, "NODE", &target_id),
        ] {
            let cmd = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(node)
                .clone();
            let reply: Option<String> = self.query(port, cmd).await;
            assert_eq!(
                reply.as_deref(),
                Some("OK"),
                "SETSLOT {slot} {state} on {port}"
            );
        }
    }

    /// How many SPUBLISH commands each node has carried out.
    async fn spublish_calls(&self) -> Vec<u64> {
        let mut calls = Vec::new();
        for port in &self.ports {
            let cmd = redis::cmd("INFO").arg("commandstats").clone();
            let stats: String = self.query(*port, cmd).await.unwrap_or_default();
            let n = stats
                .lines()
                .find_map(|l| l.strip_prefix("cmdstat_spublish:calls="))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |n| n.parse().unwrap());
            calls.push(n);
        }
        calls
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sharded pub/sub came with Redis 7.
async fn require_redis_7(server: &str) {
    let out = Command::new(server)
        .arg("--version")
        .output()
        .await
        .expect("redis-server runs");
    let version = String::from_utf8_lossy(&out.stdout);
    let major: u32 = version
        .split("v=")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 7,
        "{server} is not Redis 7 or later ({version}): scripts/test installs it, or set WAYMARK_REDIS_SERVER"
    );
}

/// `n` distinct free ports, each with its cluster bus port (10000 above) free too.
fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < n {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        held.push(listener);
        let Some(bus) = port.checked_add(10000) else {
            continue;
        };
        let taken = ports.iter().any(|p| *p == bus || p + 10000 == port);
        if let (false, Ok(bus)) = (taken, std::net::TcpListener::bind(("127.0.0.1", bus))) {
            held.push(bus);
            ports.push(port);
        }
    }
    ports
}

fn start_node(server: &str, dir: &std::path::Path, port: u16) -> Child {
    let config = dir.join(format!("nodes-{port}.conf"));
    Command::new(server)
        .args(["--port", &port.to_string(), "--cluster-enabled", "yes"])
        .arg("--cluster-config-file")
        .arg(config)
        .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server starts")
}

/// Instance a names the cluster by one node, b by a list of the others; both share `prefix`.
async fn two_instances(db: PgPool, cluster: &LocalCluster, prefix: &str) -> (TestApp, TestApp) {
    let a = TestApp::spawn_instance(db.clone(), Some((cluster.url(), prefix.to_owned()))).await;
    let b = TestApp::spawn_instance(db, Some((cluster.seed_list(), prefix.to_owned()))).await;
    for app in [&a, &b] {
        let fanout = app.state.tracking.fanout.as_ref().unwrap();
        wait_until("the instance listens on the cluster", || async {
            fanout.connected().await
        })
        .await;
    }
    (a, b)
}

#[sqlx::test]
async fn positions_reach_another_instance_through_sharded_pub_sub_on_several_masters(db: PgPool) {
    let cluster = LocalCluster::start().await;
    let prefix = unique_prefix();
    let (a, b) = two_instances(db, &cluster, &prefix).await;
    // Both instances listen on every shard channel, on the master serving it.
    let channels: Vec<String> = (0..16).map(|n| format!("{prefix}:{{e{n}}}")).collect();
    let (listeners, nodes) = cluster.listeners(&channels).await;
    assert_eq!(listeners, vec![2; channels.len()], "{channels:?}");
    assert_eq!(nodes, 3, "the channels spread over every master");

    let (_, jwt) = a.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (vehicle, token) = a.vehicle(&jwt, "Van 1").await;
    let shipment = a.shipment(&jwt, "SHP-1", vehicle, None).await;
    a.backdate(shipment).await;
    let topic = format!("shipment:{shipment}");
    let mut on_b = b.ws(&format!("token={jwt}")).await;
    on_b.subscribe(&topic, None).await;

    let received = b.state.tracking.fanout.as_ref().unwrap().received();
    let published_before = cluster.spublish_calls().await;
    post_each_through_the_cluster(&a, &b, &token, &mut on_b, 6).await;
    assert!(b.state.tracking.fanout.as_ref().unwrap().received() >= received + 6);
    let published: Vec<u64> = cluster
        .spublish_calls()
        .await
        .iter()
        .zip(&published_before)
        .map(|(now, before)| now - before)
        .collect();
    assert!(
        published.iter().filter(|n| **n > 0).count() >= 2,
        "batches travelled over one master only: {published:?}"
    );
}

#[sqlx::test]
async fn since_on_another_instance_replays_exactly_what_was_missed_with_a_cluster(db: PgPool) {
    let cluster = LocalCluster::start().await;
    let (a, b) = two_instances(db, &cluster, &unique_prefix()).await;
    since_on_another_instance_replays_exactly(&a, &b).await;
}

async fn share_link(app: &TestApp, admin: &str, shipment: i64) -> String {
    let path = format!("/api/v1/shipments/{shipment}/share");
    let (status, body) = app.post(admin, &path, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

#[sqlx::test]
async fn a_share_link_revoked_on_one_instance_closes_its_socket_on_another_at_once(db: PgPool) {
    let cluster = LocalCluster::start().await;
    let (a, b) = two_instances(db, &cluster, &unique_prefix()).await;
    let (_, admin) = a.user("Acme", "admin@acme.test", Role::Admin).await;
    let (vehicle, _) = a.vehicle(&admin, "Van 1").await;
    let shipment = a.shipment(&admin, "SHP-1", vehicle, None).await;
    let (revoked, kept) = (
        share_link(&a, &admin, shipment).await,
        share_link(&a, &admin, shipment).await,
    );
    let mut sockets = Vec::new();
    for link in [&revoked, &kept] {
        let mut ws = b.ws(&format!("share={link}")).await;
        let subscribed = ws.subscribe(&format!("shipment:{shipment}"), None).await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        sockets.push(ws);
    }

    let (status, _) = a.delete(&admin, &format!("/api/v1/shares/{revoked}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Within the test's patience, far below the sockets' periodic re-check of their credential:
    // only the message through the cluster can have closed it.
    let (code, reason) = sockets[0].closed().await;
    assert_eq!(code, 1008, "{reason}");
    sockets[1].expect_quiet().await;
}

#[sqlx::test]
async fn presence_and_typing_cross_instances_through_a_cluster(db: PgPool) {
    let cluster = LocalCluster::start().await;
    presence_and_typing_cross_instances(db, &cluster.url()).await;
}

#[sqlx::test]
async fn sign_in_limits_hold_across_instances_sharing_a_cluster(db: PgPool) {
    let cluster = LocalCluster::start().await;
    sign_in_limits_hold_across_instances(db, &cluster.url()).await;
}

#[sqlx::test]
async fn an_instance_finds_out_by_itself_whether_redis_is_a_cluster(db: PgPool) {
    let cluster = LocalCluster::start().await;
    let prefix = unique_prefix();
    let (a, _b) = two_instances(db, &cluster, &prefix).await;
    // A cluster's instances listen on shard channels only: nothing on the single-server ones.
    let mut cmd = redis::cmd("PUBSUB");
    cmd.arg("NUMSUB").arg(format!("{prefix}:ranges"));
    let numsub: Vec<(String, i64)> = cluster.query(cluster.ports[0], cmd).await.unwrap();
    assert_eq!(numsub[0].1, 0, "no one listens for range announcements");
    let (status, ready) = a.get("", "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["redis"], "ok", "{ready}");
}

#[sqlx::test]
async fn instances_follow_a_shard_channel_whose_slot_moves_to_another_master(db: PgPool) {
    let cluster = LocalCluster::start().await;
    let prefix = unique_prefix();
    let (a, b) = two_instances(db, &cluster, &prefix).await;
    let channel = format!("{prefix}:{{e0}}");
    let mut source = None;
    for port in &cluster.ports {
        if cluster.listeners_on(*port, &channel).await == 2 {
            source = Some(*port);
        }
    }
    let source = source.expect("both instances listen on the channel's master");
    let target = *cluster.ports.iter().find(|p| **p != source).unwrap();
    cluster.move_slot_of(&channel, source, target).await;
    wait_until(
        "both instances listen on the channel's new master",
        || async {
            cluster.listeners_on(target, &channel).await == 2
                && cluster.listeners_on(source, &channel).await == 0
        },
    )
    .await;

    let (_, jwt) = a.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (_, token) = a.vehicle(&jwt, "Van 1").await;
    let mut on_b = b.ws(&format!("token={jwt}")).await;
    on_b.subscribe("fleet", None).await;
    // Sixteen consecutive batches: one on every shard channel, the moved one included.
    post_each_through_the_cluster(&a, &b, &token, &mut on_b, 16).await;
}

/// Posts `count` fixes to `a` one at a time, each received on `b`'s socket before the next is
/// posted (so every batch is its own message), and checks that `b` read none of them from the
/// database: every event came through the cluster.
async fn post_each_through_the_cluster(
    a: &TestApp,
    b: &TestApp,
    token: &str,
    on_b: &mut WsClient,
    count: i64,
) {
    let filled = b.state.tracking.sequencer.filled_from_database();
    let base = Utc::now() - Duration::minutes(5);
    for i in 0..count {
        let (status, reply) = a.ingest(token, step(i, base)).await;
        assert_eq!(status, StatusCode::OK);
        receive_exactly(on_b, &[reply["seqs"][0].as_i64().unwrap()]).await;
    }
    assert_eq!(
        b.state.tracking.sequencer.filled_from_database(),
        filled,
        "nothing was read from the database: every event came through the cluster"
    );
}

#[sqlx::test]
async fn instances_reconnect_by_themselves_when_a_master_comes_back(db: PgPool) {
    let mut cluster = LocalCluster::start().await;
    let (a, b) = two_instances(db, &cluster, &unique_prefix()).await;
    let (_, jwt) = a.user("Acme", "d@acme.test", Role::Dispatcher).await;
    let (_, token) = a.vehicle(&jwt, "Van 1").await;
    let mut on_b = b.ws(&format!("token={jwt}")).await;
    on_b.subscribe("fleet", None).await;
    let base = Utc::now() - Duration::minutes(5);
    let post = |i: i64| {
        let (a, token) = (&a, &token);
        async move {
            let (status, reply) = a.ingest(token, step(i, base)).await;
            assert_eq!(status, StatusCode::OK);
            reply["seqs"][0].as_i64().unwrap()
        }
    };

    cluster.kill(1).await;
    let fanout = |app: &TestApp| app.state.tracking.fanout.clone().unwrap();
    wait_until("the instances notice the master is gone", || async {
        !fanout(&a).connected().await && !fanout(&b).connected().await
    })
    .await;
    // Meanwhile nothing is lost: what Redis cannot carry comes from the database.
    let missed: Vec<i64> = [post(0).await, post(1).await].into();
    receive_exactly(&mut on_b, &missed).await;

    cluster.restart(1).await;
    wait_until("the instances listen on the cluster again", || async {
        fanout(&a).connected().await && fanout(&b).connected().await
    })
    .await;
    let filled = b.state.tracking.sequencer.filled_from_database();
    for i in 2..18 {
        let seq = post(i).await;
        receive_exactly(&mut on_b, &[seq]).await;
    }
    assert_eq!(
        b.state.tracking.sequencer.filled_from_database(),
        filled,
        "after the master came back every event came through the cluster again"
    );
}
