//! The frames a committed event is published as: one per topic it is on, each built once and
//! shared by every subscriber of that topic, on this instance and (through Redis) on others. Every
//! kind of event is framed here, in one envelope, `{"type","topic","seq","data"}` (an alert's with
//! its `event` before `data`): the same bytes live and on replay.
use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};

use super::{
    event::{Event, EventKind},
    Published, Topic, TopicKey,
};

/// An event's frame on one topic. `data` is serialised once for all the event's topics.
#[derive(Serialize)]
struct EventFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    topic: Topic,
    seq: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    data: &'a RawValue,
}

/// A `chat_read` event's `data`.
#[derive(Serialize)]
struct ReadData<'a> {
    participant: &'a str,
    read_seq: i64,
}

/// The frames of `event` on the topics `wanted` keeps. Nothing is serialised for an event no one
/// wants.
pub fn frames(event: &Event, wanted: impl Fn(TopicKey) -> bool) -> Vec<Published> {
    let mut keys = event.keys();
    keys.retain(|k| wanted(*k));
    if keys.is_empty() {
        return Vec::new();
    }
    let (kind, name, data) = match &event.kind {
        EventKind::Position { position, .. } => ("position", None, to_raw_value(position)),
        EventKind::Alert { event, alert } => ("alert", Some(event.as_str()), to_raw_value(alert)),
        EventKind::Chat(message) => ("chat", None, to_raw_value(message)),
        EventKind::ChatRead(mark) => (
            "chat_read",
            None,
            to_raw_value(&ReadData {
                participant: &mark.participant,
                read_seq: mark.read_seq,
            }),
        ),
    };
    let data = data.expect("events serialise");
    let conflate_vehicle = event.conflate_vehicle();
    keys.into_iter()
        .map(|key| {
            let frame = EventFrame {
                kind,
                topic: key.topic(),
                seq: event.seq,
                event: name,
                data: &data,
            };
            Published {
                key,
                seq: event.seq,
                conflate_vehicle,
                frame: Utf8Bytes::from(serde_json::to_string(&frame).expect("frames serialise")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::{
        alerts::Alert,
        chat::{Author, Message, ReadMark},
        tracking::position::Position,
    };

    fn at() -> DateTime<Utc> {
        "2026-01-02T03:04:05Z".parse().unwrap()
    }

    fn texts(published: &[Published]) -> Vec<String> {
        published.iter().map(|p| p.frame.to_string()).collect()
    }

    fn position(late: bool) -> Position {
        Position {
            vehicle_id: 7,
            shipment_id: Some(9),
            lat: 52.5,
            lon: 13.25,
            recorded_at: at(),
            received_at: at(),
            accuracy: Some(4.5),
            speed: None,
            heading: None,
            altitude: None,
            battery: Some(80.0),
            late,
            eta: None,
        }
    }

    #[test]
    fn a_position_is_framed_once_per_wanted_topic() {
        let p = position(false);
        let data = serde_json::to_string(&p).unwrap();
        let event = Event::position(42, 3, p);
        let published = frames(&event, |k| k != TopicKey::Vehicle(7));
        assert_eq!(
            texts(&published),
            [
                format!(r#"{{"type":"position","topic":"fleet","seq":42,"data":{data}}}"#),
                format!(r#"{{"type":"position","topic":"shipment:9","seq":42,"data":{data}}}"#),
            ]
        );
        let keys: Vec<TopicKey> = published.iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                TopicKey::Fleet { organisation_id: 3 },
                TopicKey::Shipment(9)
            ]
        );
        assert!(published
            .iter()
            .all(|p| p.seq == 42 && p.conflate_vehicle == Some(7)));
        let late = frames(&Event::position(43, 3, position(true)), |_| true);
        assert_eq!(late.len(), 3);
        assert!(
            late.iter().all(|p| p.conflate_vehicle.is_none()),
            "late points are never conflated"
        );
        assert!(frames(&event, |_| false).is_empty());
    }

    #[test]
    fn an_alert_frame_names_its_event_before_the_data() {
        let alert = Alert {
            id: 5,
            organisation_id: 3,
            rule: "silent".into(),
            vehicle_id: Some(7),
            shipment_id: None,
            geofence_id: None,
            position_at: None,
            lat: None,
            lon: None,
            raised_at: at(),
            details: json!({"minutes": 12}),
            cleared_at: Some(at()),
            acknowledged_at: None,
            acknowledged_by: None,
            updated_seq: Some(8),
            last_event: "cleared".into(),
        };
        let data = serde_json::to_string(&alert).unwrap();
        let published = frames(&Event::alert(8, "cleared", alert), |_| true);
        assert_eq!(
            texts(&published),
            [format!(
                r#"{{"type":"alert","topic":"alerts","seq":8,"event":"cleared","data":{data}}}"#
            )]
        );
        assert_eq!(published[0].key, TopicKey::Alerts { organisation_id: 3 });
    }

    #[test]
    fn chat_frames_go_on_the_conversation_at_the_latest_change() {
        let message = Message {
            id: 1,
            shipment_id: 9,
            client_id: "c1".into(),
            author: Author {
                key: "user:1".into(),
                name: "Ann".into(),
                role: "dispatcher".into(),
            },
            body: Some("hi \"there\"".into()),
            deleted: false,
            reactions: json!({}),
            seq: 10,
            updated_seq: 12,
            created_at: at(),
            edited_at: Some(at()),
        };
        let data = serde_json::to_string(&message).unwrap();
        let published = frames(&Event::chat(message), |_| true);
        assert_eq!(
            texts(&published),
            [format!(
                r#"{{"type":"chat","topic":"chat:9","seq":12,"data":{data}}}"#
            )]
        );
        let mark = ReadMark {
            shipment_id: 9,
            participant: "user:1".into(),
            read_seq: 12,
            seq: 13,
        };
        assert_eq!(
            texts(&frames(&Event::chat_read(mark), |_| true)),
            [
                r#"{"type":"chat_read","topic":"chat:9","seq":13,"data":{"participant":"user:1","read_seq":12}}"#
            ]
        );
    }
}
