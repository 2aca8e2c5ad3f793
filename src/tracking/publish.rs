//! The frames a committed event is published as: one per topic it is on, each built once and
//! shared by every subscriber of that topic, on this instance and (through Redis) on others. Every
//! kind of event is framed here, in one envelope, `{"type","topic","seq","data"}` (an alert's with
//! its `event` before `data`): the same bytes live and on replay.
use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Event, Published, Topic, TopicKey};

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

/// The frames of `event` on the topics `wanted` keeps. Nothing is serialised for an event no one
/// wants.
pub fn frames(event: &Event, wanted: impl Fn(TopicKey) -> bool) -> Vec<Published> {
    let what = &event.data;
    let mut keys = what.keys();
    keys.retain(|k| wanted(*k));
    if keys.is_empty() {
        return Vec::new();
    }
    let data = what.data().expect("events serialise");
    let conflate_vehicle = what.conflate_vehicle();
    keys.into_iter()
        .map(|key| {
            let frame = EventFrame {
                kind: what.kind(),
                topic: key.topic(),
                seq: event.seq,
                event: what.event(),
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

    use super::*;
    use crate::tracking::position::{Position, PositionEvent};

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
        let event = Event::new(
            42,
            PositionEvent {
                organisation_id: 3,
                position: p,
            },
        );
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
        let late = frames(
            &Event::new(
                43,
                PositionEvent {
                    organisation_id: 3,
                    position: position(true),
                },
            ),
            |_| true,
        );
        assert_eq!(late.len(), 3);
        assert!(
            late.iter().all(|p| p.conflate_vehicle.is_none()),
            "late points are never conflated"
        );
        assert!(frames(&event, |_| false).is_empty());
    }
}
