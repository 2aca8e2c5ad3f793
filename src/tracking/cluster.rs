//! Fan-out over a Redis Cluster, through sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7).
//!
//! On one server the fan-out filters by topic and keeps a batch's events and its range together
//! with MULTI/EXEC (see `fanout`). A cluster allows neither: a transaction cannot span slots, and
//! messages on channels of different shards have no order between them, so a range announced on
//! one channel could overtake its events on others. Here each committed batch therefore travels
//! as one self-contained message, its seq range and every event's frame, on one of
//! [`SHARD_CHANNELS`] channels whose hash tags (`{e0}`, `{e1}`, …) spread them over the masters;
//! the batch's first seq picks the channel. Every instance listens on all of them, so hearing a
//! message means having the whole batch, and the sequencer orders batches from every shard by
//! seq and fills what none brought from the database, exactly as on one server. Revocations and
//! chat ephemera ride the same channels, tagged by kind.
//!
//! The `redis` crate's cluster connection routes commands (SPUBLISH included) but cannot
//! subscribe, so the listener opens one RESP3 connection per master serving these channels, from
//! `CLUSTER SLOTS` and each channel's slot, and starts over when any of them drops or Redis moves
//! one of the channels' slots elsewhere (it then unsubscribes it).
use std::collections::BTreeMap;

use axum::extract::ws::Utf8Bytes;
use redis::{
    aio::MultiplexedConnection, cluster_async::ClusterConnection, AsyncConnectionConfig,
    ConnectionAddr, ConnectionInfo, ProtocolVersion, PushInfo, RedisResult, Value,
};
use tokio::sync::mpsc;

use super::{
    fanout::{topic_name, topic_named},
    Batch, Published,
};
use crate::auth::Revoked;

/// How many channels batches are spread over. Every instance listens on all of them, so this
/// bounds over how many masters the fan-out's traffic spreads, not what each instance receives.
pub const SHARD_CHANNELS: i64 = 16;

/// Shard channel `shard` of the deployment `prefix`: only the hash tag decides its slot.
pub fn shard_channel(prefix: &str, shard: i64) -> String {
    format!("{prefix}:{{e{shard}}}")
}

/// The shard a batch, or a conversation's ephemeral frames, go on: consecutive batches take
/// consecutive channels, so the load spreads whatever the number of instances.
pub fn shard_of(n: i64) -> i64 {
    n.rem_euclid(SHARD_CHANNELS)
}

/// What one message on a shard channel carries.
#[derive(Debug)]
pub enum Message {
    /// A committed batch, whole.
    Batch(Batch),
    /// A typing or presence frame of conversation `shipment`.
    Ephemeral {
        shipment: i64,
        frame: Utf8Bytes,
    },
    Revoked(Revoked),
}

/// `b <instance> <first> <last> <events>`, then per event a newline, `<topic> <seq> <conflated
/// vehicle or -> <length>`, a newline and the frame's bytes: frames are measured, never escaped,
/// and a message cut short never passes for a whole batch.
pub fn encode_batch(instance: &str, batch: &Batch) -> String {
    let frames: usize = batch.events.iter().map(|e| e.frame.len() + 40).sum();
    let mut out = String::with_capacity(64 + frames);
    out.push_str(&format!(
        "b {instance} {} {} {}",
        batch.first,
        batch.last,
        batch.events.len()
    ));
    for e in &batch.events {
        let conflate = e
            .conflate_vehicle
            .map_or_else(|| "-".to_owned(), |v| v.to_string());
        out.push('\n');
        out.push_str(&format!(
            "{} {} {conflate} {}\n",
            topic_name(e.key),
            e.seq,
            e.frame.len()
        ));
        out.push_str(e.frame.as_str());
    }
    out
}

/// `e <instance> <shipment>`, a newline, the frame.
pub fn encode_ephemeral(instance: &str, shipment: i64, frame: &str) -> String {
    format!("e {instance} {shipment}\n{frame}")
}

/// `r <instance> <revocation>`.
pub fn encode_revoked(instance: &str, revoked: Revoked) -> String {
    format!("r {instance} {}", revoked.encode())
}

/// The sending instance and the message; none if `payload` is not one of ours.
pub fn decode(payload: &str) -> Option<(&str, Message)> {
    let (head, body) = payload.split_once('\n').unwrap_or((payload, ""));
    let mut words = head.splitn(3, ' ');
    let (kind, instance, rest) = (words.next()?, words.next()?, words.next()?);
    let message = match kind {
        "b" => Message::Batch(decode_batch(rest, body)?),
        "e" => Message::Ephemeral {
            shipment: rest.parse().ok()?,
            frame: Utf8Bytes::from(body.to_owned()),
        },
        "r" => Message::Revoked(Revoked::decode(rest)?),
        _ => return None,
    };
    Some((instance, message))
}

fn decode_batch(header: &str, mut body: &str) -> Option<Batch> {
    let mut words = header.split(' ');
    let (Some(first), Some(last), Some(count), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    let (first, last, count) = (first.parse().ok()?, last.parse().ok()?, count.parse().ok()?);
    let mut events = Vec::with_capacity(count);
    while !body.is_empty() {
        let (line, rest) = body.split_once('\n')?;
        let mut words = line.split(' ');
        let (Some(topic), Some(seq), Some(conflate), Some(length), None) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            return None;
        };
        let length: usize = length.parse().ok()?;
        let frame = rest.get(..length)?;
        events.push(Published {
            key: topic_named(topic)?,
            seq: seq.parse().ok()?,
            conflate_vehicle: conflate.parse().ok(),
            frame: Utf8Bytes::from(frame.to_owned()),
        });
        // The newline before the next event's line, if there is one.
        body = rest[length..].strip_prefix('\n').unwrap_or(&rest[length..]);
    }
    if events.len() != count {
        return None;
    }
    Some(Batch {
        first,
        last,
        events,
    })
}

/// Whether an `INFO cluster` answer comes from a node of a cluster.
pub fn cluster_enabled(info: &str) -> bool {
    info.lines().any(|l| l.trim() == "cluster_enabled:1")
}

/// Slots `first..=last` are served by the master at `host:port`.
#[derive(Debug, PartialEq)]
struct SlotRange {
    first: u16,
    last: u16,
    host: String,
    port: u16,
}

/// The masters' slot ranges in a `CLUSTER SLOTS` answer.
fn slot_ranges(reply: &Value) -> Option<Vec<SlotRange>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    ranges
        .iter()
        .map(|range| {
            let Value::Array(range) = range else {
                return None;
            };
            let [Value::Int(first), Value::Int(last), Value::Array(master), ..] = range.as_slice()
            else {
                return None;
            };
            let [host, Value::Int(port), ..] = master.as_slice() else {
                return None;
            };
            Some(SlotRange {
                first: u16::try_from(*first).ok()?,
                last: u16::try_from(*last).ok()?,
                host: redis::from_redis_value(host).ok()?,
                port: u16::try_from(*port).ok()?,
            })
        })
        .collect()
}

/// `channels` grouped by the master (`host`, `port`) that serves each one's slot; none if a slot
/// has no master (the cluster is not whole).
fn by_master<'a>(
    ranges: &[SlotRange],
    channels: &'a [String],
) -> Option<BTreeMap<(String, u16), Vec<&'a str>>> {
    let mut groups: BTreeMap<(String, u16), Vec<&str>> = BTreeMap::new();
    for channel in channels {
        let slot = redis::cluster_routing::get_slot(channel.as_bytes());
        let master = ranges.iter().find(|r| (r.first..=r.last).contains(&slot))?;
        groups
            .entry((master.host.clone(), master.port))
            .or_default()
            .push(channel);
    }
    Some(groups)
}

/// How to reach the node `host:port`: as `seed` was reached (credentials, TLS), speaking RESP3,
/// which lets one connection carry pushes.
fn node_info(seed: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let mut info = seed.clone();
    match &mut info.addr {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            *h = host.to_owned();
            *p = port;
        }
        ConnectionAddr::Unix(_) => info.addr = ConnectionAddr::Tcp(host.to_owned(), port),
    }
    info.redis.protocol = ProtocolVersion::RESP3;
    info
}

fn unexpected(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::ResponseError, what))
}

/// Subscribes every one of `channels` on the master serving it, one connection per master, each
/// sending what it hears (and its disconnection) to `pushes`. The connections listen while they
/// are held; dropping them closes them.
pub async fn subscribe(
    cluster: &mut ClusterConnection,
    seed: &ConnectionInfo,
    channels: &[String],
    pushes: &mpsc::UnboundedSender<PushInfo>,
) -> RedisResult<Vec<MultiplexedConnection>> {
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(cluster)
        .await?;
    let ranges = slot_ranges(&reply).ok_or_else(|| unexpected("unreadable CLUSTER SLOTS"))?;
    let groups = by_master(&ranges, channels)
        .ok_or_else(|| unexpected("a shard channel's slot has no master"))?;
    let mut connections = Vec::with_capacity(groups.len());
    for ((host, port), channels) in groups {
        let client = redis::Client::open(node_info(seed, &host, port))?;
        let config = AsyncConnectionConfig::new().set_push_sender(pushes.clone());
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // One channel per command: the connection pairs each confirmation with one request.
        for channel in channels {
            redis::cmd("SSUBSCRIBE")
                .arg(channel)
                .exec_async(&mut connection)
                .await?;
        }
        connections.push(connection);
    }
    Ok(connections)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::TopicKey;

    fn published(key: TopicKey, seq: i64, conflate: Option<i64>, frame: &str) -> Published {
        Published {
            key,
            seq,
            conflate_vehicle: conflate,
            frame: Utf8Bytes::from(frame.to_owned()),
        }
    }

    #[test]
    fn a_batch_survives_encoding_whatever_its_frames_hold() {
        let batch = Batch {
            first: 41,
            last: 45,
            events: vec![
                published(
                    TopicKey::Vehicle(7),
                    41,
                    Some(7),
                    r#"{"a":"line\nbreak 3 4"}"#,
                ),
                published(TopicKey::Fleet { organisation_id: 2 }, 41, None, "ünï 😀\n"),
                published(TopicKey::Alerts { organisation_id: 2 }, 43, None, ""),
                published(TopicKey::Chat(9), 45, None, "b x 1 2\n- 3 4"),
                published(TopicKey::Shipment(3), 45, None, "x"),
            ],
        };
        let encoded = encode_batch("inst", &batch);
        let Some(("inst", Message::Batch(back))) = decode(&encoded) else {
            panic!("not decoded: {encoded:?}");
        };
        assert_eq!((back.first, back.last), (41, 45));
        assert_eq!(back.events.len(), batch.events.len());
        for (a, b) in back.events.iter().zip(&batch.events) {
            assert_eq!(
                (a.key, a.seq, a.conflate_vehicle, a.frame.as_str()),
                (b.key, b.seq, b.conflate_vehicle, b.frame.as_str())
            );
        }
        let empty = Batch {
            first: 5,
            last: 6,
            events: vec![],
        };
        let Some((_, Message::Batch(back))) = decode(&encode_batch("i", &empty)) else {
            panic!("an empty batch is a batch");
        };
        assert_eq!((back.first, back.last, back.events.len()), (5, 6, 0));
    }

    #[test]
    fn ephemeral_frames_and_revocations_survive_encoding() {
        let Some(("i", Message::Ephemeral { shipment, frame })) =
            decode(&encode_ephemeral("i", 12, "{\"type\":\"typing\"}\n"))
        else {
            panic!("not decoded");
        };
        assert_eq!((shipment, frame.as_str()), (12, "{\"type\":\"typing\"}\n"));
        for revoked in [Revoked::Share(3), Revoked::Session(-4), Revoked::User(1)] {
            let Some(("i", Message::Revoked(back))) = decode(&encode_revoked("i", revoked)) else {
                panic!("not decoded");
            };
            assert_eq!(back, revoked);
        }
    }

    #[test]
    fn a_truncated_or_foreign_message_is_refused() {
        let batch = Batch {
            first: 1,
            last: 1,
            events: vec![published(TopicKey::Vehicle(1), 1, None, "{\"x\":1}")],
        };
        let encoded = encode_batch("i", &batch);
        for cut in 0..encoded.len() {
            assert!(decode(&encoded[..cut]).is_none(), "{:?}", &encoded[..cut]);
        }
        for foreign in [
            "",
            "hello",
            "b i x 2 0",
            "e i nine\n{}",
            "r i nobody 1",
            "z i 1",
        ] {
            assert!(decode(foreign).is_none(), "{foreign:?}");
        }
        let extra = format!("{encoded}\nvehicle:1 2 - 2\n{{}}");
        assert!(decode(&extra).is_none(), "more events than counted");
        assert!(
            decode("b i 1 1 1\nvehicle:1 1 - 99\n{}").is_none(),
            "length past the end"
        );
        assert!(
            decode("b i 1 1 1\nplanet:1 1 - 2\n{}").is_none(),
            "unknown topic"
        );
    }

    #[test]
    fn batches_and_conversations_spread_over_every_shard_channel() {
        let shards: std::collections::BTreeSet<i64> =
            (100..100 + SHARD_CHANNELS).map(shard_of).collect();
        assert_eq!(
            shards.len() as i64,
            SHARD_CHANNELS,
            "consecutive seqs, distinct channels"
        );
        assert!((-40..40)
            .map(shard_of)
            .all(|s| (0..SHARD_CHANNELS).contains(&s)));
        assert_eq!(shard_channel("waymark", 3), "waymark:{e3}");
        // Only the hash tag decides the slot: every deployment's channel n shares one.
        assert_eq!(
            redis::cluster_routing::get_slot(shard_channel("a", 3).as_bytes()),
            redis::cluster_routing::get_slot(shard_channel("other", 3).as_bytes())
        );
    }

    #[test]
    fn the_channels_land_on_every_master_of_an_evenly_split_cluster() {
        // The slots `redis-cli --cluster create` gives three masters.
        let thirds = [(0, 5460), (5461, 10922), (10923, 16383)];
        let ranges: Vec<SlotRange> = thirds
            .iter()
            .zip(7001..)
            .map(|(&(first, last), port)| SlotRange {
                first,
                last,
                host: "127.0.0.1".into(),
                port,
            })
            .collect();
        let channels: Vec<String> = (0..SHARD_CHANNELS)
            .map(|n| shard_channel("waymark", n))
            .collect();
        let groups = by_master(&ranges, &channels).unwrap();
        assert_eq!(groups.len(), 3, "{groups:?}");
        assert_eq!(groups.values().map(Vec::len).sum::<usize>(), channels.len());
        assert!(
            by_master(&ranges[..2], &channels).is_none(),
            "a slot without a master"
        );
    }

    #[test]
    fn cluster_slots_answers_are_read_for_their_masters() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.into()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
                Value::Array(vec![]),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8191),
                node("10.0.0.1", 6379),
                node("10.0.0.4", 6379),
            ]),
            Value::Array(vec![
                Value::Int(8192),
                Value::Int(16383),
                node("10.0.0.2", 6380),
            ]),
        ]);
        assert_eq!(
            slot_ranges(&reply).unwrap(),
            [
                SlotRange {
                    first: 0,
                    last: 8191,
                    host: "10.0.0.1".into(),
                    port: 6379
                },
                SlotRange {
                    first: 8192,
                    last: 16383,
                    host: "10.0.0.2".into(),
                    port: 6380
                },
            ]
        );
        assert!(slot_ranges(&Value::Array(vec![Value::Int(1)])).is_none());
        assert!(slot_ranges(&Value::Nil).is_none());
    }

    #[test]
    fn a_node_is_reached_like_the_seed_but_over_resp3() {
        let seed: ConnectionInfo = "redis://user:secret@seed:7000/0".parse().unwrap();
        let node = node_info(&seed, "10.0.0.2", 7002);
        assert_eq!(node.addr, ConnectionAddr::Tcp("10.0.0.2".into(), 7002));
        assert_eq!(node.redis.password.as_deref(), Some("secret"));
        assert_eq!(node.redis.username.as_deref(), Some("user"));
        assert_eq!(node.redis.protocol, ProtocolVersion::RESP3);
    }

    #[test]
    fn info_tells_a_cluster_node_from_a_single_server() {
        assert!(cluster_enabled("# Cluster\r\ncluster_enabled:1\r\n"));
        assert!(!cluster_enabled("# Cluster\r\ncluster_enabled:0\r\n"));
        assert!(!cluster_enabled(""));
    }
}
