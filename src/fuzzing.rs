//! Fuzzing entry points: one function per untrusted-input parser, taking raw bytes as a device or
//! browser sends them, and panicking when the parser panics or breaks one of its promises. The
//! cargo-fuzz targets in `fuzz/` call them, and so does a unit test that replays the committed
//! seeds and every input a fuzzer has found (`fuzz/seeds/`, `fuzz/regressions/`).
//!
//! The promises, for every position a parser accepts ([`NewPosition::assert_in_range`]):
//! latitude, longitude and every optional number are finite and inside their ranges, also as the
//! 4-byte floats the database keeps; the time is between 2000 and a day ahead, and is stored
//! exactly as accepted; the attributes fit, and PostgreSQL's `jsonb` can store them. Everything refused is a client
//! error (`4xx`), never an internal one.
use axum::{
    body::Bytes,
    http::{header, HeaderMap, HeaderValue},
    response::IntoResponse,
};
use chrono::Utc;
use serde_json::Value;

use crate::{
    auth::SpeedUnit,
    error::AppError,
    ingest::{
        read_native,
        trackers::{parse_form, parse_osmand, parse_owntracks, parse_traccar},
        MAX_BATCH,
    },
    socket::frame::{decode, frame_types},
    tracking::position::{to_micros, NewPosition},
};

/// A fuzz target: takes any bytes, panics on a failure.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/` and the seed folders name them.
pub const TARGETS: [(&str, Target); 5] = [
    ("native", native),
    ("osmand", osmand),
    ("traccar", traccar),
    ("owntracks", owntracks),
    ("ws_frame", ws_frame),
];

/// A native-format body (`POST /api/v1/positions`, JSON): read and parsed as the endpoint does.
pub fn native(data: &[u8]) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    match read_native(&headers, Ok(Bytes::copy_from_slice(data))) {
        Ok(positions) => {
            assert!((1..=MAX_BATCH).contains(&positions.len()));
            positions.iter().for_each(NewPosition::assert_in_range);
        }
        Err(e) => assert_refused(e),
    }
}

/// An OsmAnd-protocol query string or form body, read with each speed unit: the unit changes
/// the speed and nothing else.
pub fn osmand(data: &[u8]) {
    // The server refuses a form body that is not UTF-8, and a query string is ASCII.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let params = parse_form(text);
    let now = to_micros(Utc::now());
    let mut accepted: Vec<NewPosition> = Vec::new();
    for unit in SpeedUnit::ALL {
        match parse_osmand(&params, unit, now) {
            Ok(p) => {
                p.assert_in_range();
                accepted.push(p);
            }
            Err(e) => assert_refused(e),
        }
    }
    if let Some(first) = accepted.first() {
        for p in &accepted {
            assert_eq!(p.speed.is_some(), first.speed.is_some(), "{p:?}");
            let same = |p: &NewPosition| NewPosition {
                speed: None,
                ..p.clone()
            };
            assert_eq!(same(p), same(first));
        }
    }
}

/// A Traccar Client JSON body.
pub fn traccar(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match parse_traccar(value, to_micros(Utc::now())) {
        Ok(Some(p)) => p.assert_in_range(),
        Ok(None) => {}
        Err(e) => assert_refused(e),
    }
}

/// An OwnTracks HTTP-mode body.
pub fn owntracks(data: &[u8]) {
    // As the endpoint does: an empty body is no message.
    if data.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match parse_owntracks(value, to_micros(Utc::now())) {
        Ok(Some(p)) => p.assert_in_range(),
        Ok(None) => {}
        Err(e) => assert_refused(e),
    }
}

/// A WebSocket text frame from a client: decoded, or refused with `bad_frame` (not JSON, or a
/// known type with bad fields) or `unknown_type`, echoing the frame's `ref`.
pub fn ws_frame(data: &[u8]) {
    // WebSocket text frames are UTF-8; the socket refuses others before the session sees them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let json = serde_json::from_str::<Value>(text).ok();
    let kind = json
        .as_ref()
        .and_then(|v| v.get("type"))
        .and_then(Value::as_str);
    let known = kind.is_some_and(|t| frame_types().contains(&t));
    match (decode(text), &json) {
        (Ok(frame), Some(v)) => {
            assert!(known, "decoded a frame of type {kind:?}");
            // A `ref` of null is no ref.
            let sent = v.get("ref").filter(|r| !r.is_null());
            assert_eq!(frame.reference.as_ref(), sent);
        }
        (Ok(frame), None) => panic!("decoded text that is not JSON: {frame:?}"),
        (Err(e), None) => {
            assert_eq!((e.code, e.reference), ("bad_frame", None));
            assert_eq!(e.message, "a frame must be a JSON object");
        }
        (Err(e), Some(v)) => {
            let code = if known { "bad_frame" } else { "unknown_type" };
            assert_eq!(e.code, code, "{e:?}");
            assert!(!e.message.is_empty());
            assert_eq!(e.reference.as_ref(), v.get("ref"));
        }
    }
}

/// A refusal is the client's fault (`4xx`), and renders as the API's error answer.
fn assert_refused(e: AppError) {
    assert!(e.status().is_client_error(), "{e:?}");
    let _ = e.into_response();
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, fs, panic, path::Path};

    use super::TARGETS;

    /// Replays every seed and every input a fuzzer found through its target, so each finding
    /// stays a regression test. Fails if any panics, or if a target has no seed at all.
    #[test]
    fn every_seed_and_regression_input_passes_its_target() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut seeds = BTreeMap::new();
        let mut failed = Vec::new();
        for (name, target) in TARGETS {
            for folder in ["seeds", "regressions"] {
                let dir = root.join(folder).join(name);
                let Ok(entries) = fs::read_dir(&dir) else {
                    assert!(folder == "regressions", "no seed folder {}", dir.display());
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    if !path.is_file() {
                        continue;
                    }
                    let data = fs::read(&path).unwrap();
                    if panic::catch_unwind(|| target(&data)).is_err() {
                        failed.push(path.display().to_string());
                    }
                    if folder == "seeds" {
                        *seeds.entry(name).or_insert(0) += 1;
                    }
                }
            }
        }
        assert!(
            failed.is_empty(),
            "these inputs fail their target: {failed:#?}"
        );
        for (name, _) in TARGETS {
            assert!(
                seeds.get(name).copied().unwrap_or(0) > 0,
                "no seeds for {name}"
            );
        }
    }
}
