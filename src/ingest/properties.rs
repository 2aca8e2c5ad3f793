//! Property tests of the ingest parsers: whatever bytes a device sends, parsing never panics,
//! and a position that parses is inside every range the rest of the server relies on. Unit
//! conversions agree with each other.
use chrono::Utc;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::{
    parse_native,
    trackers::{parse_form, parse_osmand, parse_owntracks, parse_traccar},
};
use crate::{
    auth::SpeedUnit,
    tracking::position::{to_micros, NewPosition},
};

/// JSON values of the shapes devices send, with numbers, strings and nesting of every kind.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(|f| json!(f)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        any::<i64>().prop_map(|i| json!(i)),
        ".{0,24}".prop_map(Value::String),
        Just(json!("2026-11-30T12:00:00Z")),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        let keys = prop_oneof![
            Just("lat".to_owned()),
            Just("lon".to_owned()),
            Just("lng".to_owned()),
            Just("recorded_at".to_owned()),
            Just("speed".to_owned()),
            Just("heading".to_owned()),
            Just("accuracy".to_owned()),
            Just("battery".to_owned()),
            Just("location".to_owned()),
            Just("coords".to_owned()),
            Just("latitude".to_owned()),
            Just("longitude".to_owned()),
            Just("timestamp".to_owned()),
            Just("_type".to_owned()),
            Just("tst".to_owned()),
            Just("vel".to_owned()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn native_json_never_panics_and_accepts_only_ranges(value in any_json()) {
        if let Ok(positions) = parse_native(value) {
            positions.iter().for_each(NewPosition::assert_in_range);
        }
    }

    #[test]
    fn traccar_json_never_panics_and_accepts_only_ranges(value in any_json()) {
        let now = to_micros(Utc::now());
        if let Ok(Some(p)) = parse_traccar(json!({"location": value.clone(), "device_id": "x"}), now) {
            p.assert_in_range();
        }
        if let Ok(Some(p)) = parse_traccar(value, now) {
            p.assert_in_range();
        }
    }

    #[test]
    fn owntracks_never_panics_and_accepts_only_ranges(value in any_json()) {
        let now = to_micros(Utc::now());
        let mut typed = value.clone();
        if let Value::Object(m) = &mut typed {
            m.insert("_type".into(), json!("location"));
        }
        for v in [value, typed] {
            if let Ok(Some(p)) = parse_owntracks(v, now) {
                p.assert_in_range();
            }
        }
    }

    #[test]
    fn osmand_queries_never_panic_and_accept_only_ranges(
        query in "([a-z]{1,9}=[-+0-9.eE:TZ ,%a-z]{0,16}&){0,8}",
        lat in -100.0f64..100.0,
        lon in -200.0f64..200.0,
    ) {
        let now = to_micros(Utc::now());
        for q in [query.clone(), format!("{query}lat={lat}&lon={lon}")] {
            for unit in SpeedUnit::ALL {
                if let Ok(p) = parse_osmand(&parse_form(&q), unit, now) {
                    p.assert_in_range();
                }
            }
        }
    }

    #[test]
    fn every_unit_stores_the_same_speed_for_the_same_movement(mps in 0.0f64..120.0) {
        let now = to_micros(Utc::now());
        let sent = [
            (SpeedUnit::Mps, mps),
            (SpeedUnit::Knots, mps / 0.514_444),
            (SpeedUnit::Kmh, mps * 3.6),
            (SpeedUnit::Mph, mps / 0.447_04),
        ];
        for (unit, value) in sent {
            let q = format!("lat=48.1&lon=11.5&speed={value}");
            let p = parse_osmand(&parse_form(&q), unit, now).unwrap();
            let got = p.speed.unwrap();
            prop_assert!((got - mps).abs() < 1e-6 * mps.max(1.0), "{:?} {}: {}", unit, value, got);
        }
        let owntracks = json!({"_type": "location", "lat": 48.1, "lon": 11.5,
            "tst": now.timestamp(), "vel": mps * 3.6});
        let p = parse_owntracks(owntracks, now).unwrap().unwrap();
        prop_assert!((p.speed.unwrap() - mps).abs() < 1e-6 * mps.max(1.0));
    }
}
