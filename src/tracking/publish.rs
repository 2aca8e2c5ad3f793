//! The frames a committed position is published as: one per topic it belongs to, each built once
//! and shared by every subscriber of that topic, on this instance and (through Redis) on others.
use axum::extract::ws::Utf8Bytes;

use super::{Published, TopicKey};
use crate::tracking::position::{position_frame, Position};

/// The events of one position on the topics `wanted` keeps, out of its organisation's `fleet`, its
/// `vehicle:{id}` and, when it belongs to one, its `shipment:{id}`. Nothing is serialised for a
/// position no one wants.
pub fn frames(
    seq: i64,
    organisation_id: i64,
    p: &Position,
    wanted: impl Fn(TopicKey) -> bool,
) -> Vec<Published> {
    // Late points fill in tracks and must all arrive; current ones may be conflated.
    let conflate_vehicle = (!p.late).then_some(p.vehicle_id);
    let mut keys = vec![
        TopicKey::Fleet { organisation_id },
        TopicKey::Vehicle(p.vehicle_id),
    ];
    if let Some(s) = p.shipment_id {
        keys.push(TopicKey::Shipment(s));
    }
    keys.retain(|k| wanted(*k));
    if keys.is_empty() {
        return Vec::new();
    }
    let data = serde_json::to_string(p).expect("positions serialise");
    keys.into_iter()
        .map(|key| Published {
            key,
            seq,
            conflate_vehicle,
            frame: Utf8Bytes::from(position_frame(&key.topic(), seq, &data)),
        })
        .collect()
}
