//! The four ways a simulated vehicle can talk to Waymark, encoded exactly as the real senders
//! do: Waymark's native JSON, the OsmAnd protocol (as the legacy Traccar Client or the OsmAnd
//! app sends it), Traccar Client's JSON and OwnTracks in HTTP mode.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::ValueEnum;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::{positions_body, NewPosition, MAX_BATCH, NATIVE_INGEST};

/// m/s to knots, as the legacy Traccar Client converts `Location.getSpeed()`.
pub const KNOTS_PER_MPS: f64 = 1.943844;
pub const KMH_PER_MPS: f64 = 3.6;
pub const MPH_PER_MPS: f64 = 2.236936;
/// Below this a phone's activity recognition calls the vehicle still.
const MOVING_MPS: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Protocol {
    /// `POST /api/v1/positions`, m/s, batches as arrays.
    Native,
    /// `/api/v1/osmand?id=…&lat=…` in the vehicle's speed unit: knots as the legacy Traccar
    /// Client posts it, or m/s with epoch milliseconds as the OsmAnd app's GET template.
    Osmand,
    /// Traccar Client's JSON body at `/api/v1/osmand`, m/s.
    Traccar,
    /// OwnTracks HTTP mode at `/api/v1/owntracks`, km/h, the token as the Basic password.
    Owntracks,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Native,
        Protocol::Osmand,
        Protocol::Traccar,
        Protocol::Owntracks,
    ];

    /// Only the native format takes several positions per request; the apps send one at a time.
    pub fn batch_limit(self) -> usize {
        match self {
            Protocol::Native => MAX_BATCH,
            _ => 1,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Native => "native",
            Protocol::Osmand => "osmand",
            Protocol::Traccar => "traccar",
            Protocol::Owntracks => "owntracks",
        })
    }
}

/// A vehicle's OsmAnd-protocol speed unit, as the server stores it (`speed_unit`): a name the
/// simulator does not know is an error, never a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeedUnit {
    Knots,
    Mps,
    Kmh,
    Mph,
}

impl SpeedUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Knots => "knots",
            Self::Mps => "mps",
            Self::Kmh => "kmh",
            Self::Mph => "mph",
        }
    }

    pub fn from_mps(self, mps: f64) -> f64 {
        match self {
            Self::Knots => mps * KNOTS_PER_MPS,
            Self::Mps => mps,
            Self::Kmh => mps * KMH_PER_MPS,
            Self::Mph => mps * MPH_PER_MPS,
        }
    }
}

/// One fix as the phone has it, ready to be encoded in any protocol.
#[derive(Debug, Clone)]
pub struct Reading {
    pub position: NewPosition,
    /// Metres driven since the app started, for Traccar Client's `odometer`.
    pub odometer_m: f64,
    /// The vehicle started or stopped moving at this fix (Traccar Client's `motionchange`).
    pub motion_changed: bool,
}

impl Reading {
    fn is_moving(&self) -> bool {
        self.position.speed.is_some_and(|s| s >= MOVING_MPS)
    }
}

/// How a request proves which vehicle it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The token travels in the URL or the body.
    None,
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
}

/// One HTTP request, built without a client so that it can be checked byte for byte.
#[derive(Debug, Clone)]
pub struct WireRequest {
    pub method: Method,
    /// Relative to the server's base URL.
    pub path: &'static str,
    /// Already encoded query string, without `?`.
    pub query: Option<String>,
    pub headers: Vec<(&'static str, String)>,
    pub auth: Auth,
    pub body: Option<(&'static str, Vec<u8>)>,
}

/// What a simulated phone needs to address the server: its protocol, ingest token and, for
/// the OsmAnd protocol, the vehicle's speed unit.
#[derive(Debug, Clone)]
pub struct Device {
    pub protocol: Protocol,
    pub token: String,
    pub speed_unit: SpeedUnit,
    /// OwnTracks user and device (`X-Limit-U`, `X-Limit-D`, the topic) and two-letter `tid`.
    pub owntracks_user: String,
    pub owntracks_device: String,
    pub tid: String,
}

impl Device {
    pub fn new(protocol: Protocol, token: String, speed_unit: SpeedUnit, name: &str) -> Self {
        Self {
            protocol,
            token,
            speed_unit,
            owntracks_user: "waymark".into(),
            owntracks_device: slug(name),
            tid: tid(name),
        }
    }

    /// How precisely the sender writes times: OwnTracks and the legacy Traccar Client send
    /// whole epoch seconds, the others milliseconds.
    pub fn time_resolution_ms(&self) -> i64 {
        match (self.protocol, self.speed_unit) {
            (Protocol::Owntracks, _) => 1000,
            (Protocol::Osmand, unit) if unit != SpeedUnit::Mps => 1000,
            _ => 1,
        }
    }

    /// The shortest time between two fixes: the apps' own minimum interval is a second (which
    /// also keeps one-fix-per-request senders under the server's 10 requests a second); the
    /// native client takes every fix.
    pub fn min_fix_interval_ms(&self) -> i64 {
        match self.protocol {
            Protocol::Native => 1,
            _ => 1000,
        }
    }

    /// The request that carries `readings` (at most [`Protocol::batch_limit`] of them).
    pub fn encode(&self, readings: &[Reading]) -> Result<WireRequest, serde_json::Error> {
        match self.protocol {
            Protocol::Native => {
                let positions: Vec<NewPosition> =
                    readings.iter().map(|r| r.position.clone()).collect();
                Ok(WireRequest {
                    method: Method::POST,
                    path: NATIVE_INGEST,
                    query: None,
                    headers: Vec::new(),
                    auth: Auth::Bearer(self.token.clone()),
                    body: Some(("application/json", positions_body(&positions)?)),
                })
            }
            Protocol::Osmand => {
                let reading = single(readings);
                let (method, pairs) = if self.speed_unit == SpeedUnit::Mps {
                    (Method::GET, osmand_app_query(&self.token, reading))
                } else {
                    (
                        Method::POST,
                        traccar_client_query(&self.token, reading, self.speed_unit),
                    )
                };
                Ok(WireRequest {
                    method,
                    path: "api/v1/osmand",
                    query: Some(encode_query(&pairs)),
                    headers: Vec::new(),
                    auth: Auth::None,
                    body: None,
                })
            }
            Protocol::Traccar => Ok(WireRequest {
                method: Method::POST,
                path: "api/v1/osmand",
                query: None,
                headers: Vec::new(),
                auth: Auth::None,
                body: Some((
                    "application/json",
                    serde_json::to_vec(&traccar_json(&self.token, single(readings)))?,
                )),
            }),
            Protocol::Owntracks => Ok(WireRequest {
                method: Method::POST,
                path: "api/v1/owntracks",
                query: None,
                headers: vec![
                    ("X-Limit-U", self.owntracks_user.clone()),
                    ("X-Limit-D", self.owntracks_device.clone()),
                ],
                auth: Auth::Basic {
                    user: self.owntracks_user.clone(),
                    password: self.token.clone(),
                },
                body: Some((
                    "application/json; charset=utf-8",
                    serde_json::to_vec(&owntracks_json(self, single(readings)))?,
                )),
            }),
        }
    }
}

/// The apps post one position per request; the outbox never hands them more.
fn single(readings: &[Reading]) -> &Reading {
    &readings[0]
}

fn epoch_s(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn iso_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The legacy Traccar Client's query (`ProtocolFormatter.kt`): epoch seconds, speed in the
/// vehicle's unit (the app's own is knots), posted with an empty body.
pub fn traccar_client_query(
    token: &str,
    reading: &Reading,
    unit: SpeedUnit,
) -> Vec<(&'static str, String)> {
    let p = &reading.position;
    let mut pairs = vec![
        ("id", token.to_owned()),
        ("timestamp", epoch_s(p.recorded_at).to_string()),
        ("lat", p.lat.to_string()),
        ("lon", p.lon.to_string()),
        (
            "speed",
            round(unit.from_mps(p.speed.unwrap_or(0.0)), 2).to_string(),
        ),
        ("bearing", p.heading.unwrap_or(0.0).to_string()),
        ("altitude", p.altitude.unwrap_or(0.0).to_string()),
        ("accuracy", p.accuracy.unwrap_or(0.0).to_string()),
    ];
    if let Some(b) = p.battery {
        pairs.push(("batt", b.to_string()));
    }
    pairs
}

/// The OsmAnd app's online-tracking URL as Traccar documents it
/// (`?id=…&lat={0}&lon={1}&timestamp={2}&hdop={3}&altitude={4}&speed={5}&bearing={6}`): epoch
/// milliseconds, raw m/s, and the accuracy in `hdop`. Fields the phone lacks are left out.
pub fn osmand_app_query(token: &str, reading: &Reading) -> Vec<(&'static str, String)> {
    let p = &reading.position;
    let mut pairs = vec![
        ("id", token.to_owned()),
        ("lat", p.lat.to_string()),
        ("lon", p.lon.to_string()),
        ("timestamp", p.recorded_at.timestamp_millis().to_string()),
    ];
    let optional = [
        ("hdop", p.accuracy),
        ("altitude", p.altitude),
        ("speed", p.speed),
        ("bearing", p.heading),
        ("batt", p.battery),
    ];
    pairs.extend(
        optional
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v.to_string()))),
    );
    pairs
}

/// Traccar Client's body (the background-geolocation location with `device_id`): m/s, `-1` for
/// an unknown speed or heading, the battery as a fraction, and the legacy query echo in `_`.
pub fn traccar_json(token: &str, reading: &Reading) -> Value {
    let p = &reading.position;
    let timestamp = iso_millis(p.recorded_at);
    let moving = reading.is_moving();
    let mut location = Map::new();
    location.insert("timestamp".into(), json!(timestamp));
    location.insert(
        "coords".into(),
        json!({
            "latitude": p.lat,
            "longitude": p.lon,
            "accuracy": p.accuracy.unwrap_or(0.0),
            "speed": p.speed.unwrap_or(-1.0),
            "heading": p.heading.unwrap_or(-1.0),
            // Android reports 0 when it has no altitude.
            "altitude": p.altitude.unwrap_or(0.0),
        }),
    );
    location.insert("is_moving".into(), json!(moving));
    location.insert("odometer".into(), json!(round(reading.odometer_m, 1)));
    if reading.motion_changed {
        location.insert("event".into(), json!("motionchange"));
    }
    location.insert(
        "battery".into(),
        json!({
            "level": p.battery.map_or(-1.0, |b| round(b / 100.0, 2)),
            "is_charging": false,
        }),
    );
    location.insert(
        "activity".into(),
        json!({ "type": if moving { "in_vehicle" } else { "still" } }),
    );
    location.insert("extras".into(), json!({}));
    location.insert(
        "_".into(),
        json!(format!(
            "&id={token}&lat={}&lon={}&timestamp={timestamp}&",
            p.lat, p.lon
        )),
    );
    json!({ "location": Value::Object(location), "device_id": token })
}

/// An OwnTracks `location` message as the Android app writes it: integer metres, km/h truncated
/// (`(speed * 3.6).toInt()`), zero `acc`/`alt`/`cog`/`vel` left out, move mode, mobile data.
pub fn owntracks_json(device: &Device, reading: &Reading) -> Value {
    let p = &reading.position;
    let tst = epoch_s(p.recorded_at);
    let mut m = Map::new();
    m.insert("_type".into(), json!("location"));
    m.insert("tid".into(), json!(device.tid));
    m.insert(
        "topic".into(),
        json!(format!(
            "owntracks/{}/{}",
            device.owntracks_user, device.owntracks_device
        )),
    );
    m.insert("lat".into(), json!(p.lat));
    m.insert("lon".into(), json!(p.lon));
    m.insert("tst".into(), json!(tst));
    m.insert("created_at".into(), json!(tst));
    let integers = [
        ("acc", p.accuracy.map(|a| a.round() as i64)),
        ("alt", p.altitude.map(|a| a.round() as i64)),
        ("vel", p.speed.map(|s| (s * KMH_PER_MPS) as i64)),
        ("cog", p.heading.map(|h| h.round() as i64 % 360)),
    ];
    for (key, value) in integers {
        if let Some(v) = value.filter(|&v| v != 0) {
            m.insert(key.into(), json!(v));
        }
    }
    if let Some(b) = p.battery {
        m.insert("batt".into(), json!(b.round() as i64));
        // 1: unplugged.
        m.insert("bs".into(), json!(1));
    }
    m.insert("m".into(), json!(2));
    m.insert("conn".into(), json!("m"));
    Value::Object(m)
}

/// `application/x-www-form-urlencoded`, as a browser or the apps' HTTP stacks write it.
pub fn encode_query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// A lowercase ASCII name for URLs and topics: "Bus 4716 (Liverpool 14)" → "bus-4716-liverpool-14".
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "vehicle".into()
    } else {
        trimmed.to_owned()
    }
}

/// OwnTracks' two-character tracker id, from the name's first letters ("Car Munich" → "CM").
fn tid(name: &str) -> String {
    let initials: String = name
        .split_whitespace()
        .filter_map(|w| w.chars().find(char::is_ascii_alphanumeric))
        .take(2)
        .collect::<String>()
        .to_ascii_uppercase();
    match initials.len() {
        2 => initials,
        1 => format!("{initials}X"),
        _ => "WM".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accuracy, speed, heading, altitude and battery.
    type Fields = (
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    );

    fn reading(
        lat: f64,
        lon: f64,
        t: &str,
        (accuracy, speed, heading, altitude, battery): Fields,
    ) -> Reading {
        Reading {
            position: NewPosition {
                lat,
                lon,
                recorded_at: DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc),
                accuracy,
                speed,
                heading,
                altitude,
                battery,
            },
            odometer_m: 0.0,
            motion_changed: false,
        }
    }

    fn device(protocol: Protocol, token: &str, unit: SpeedUnit) -> Device {
        Device::new(protocol, token.into(), unit, "Car Munich")
    }

    fn pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.replace("%3A", ":"))
            })
            .collect()
    }

    /// Compares two query strings key by key, numbers by value ("60.0" equals "60").
    fn assert_same_fields(got: &str, reference: &str) {
        let (got, want) = (pairs(got), pairs(reference));
        let keys = |p: &[(String, String)]| p.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&got), keys(&want), "{got:?}");
        for ((k, g), (_, w)) in got.iter().zip(&want) {
            match (g.parse::<f64>(), w.parse::<f64>()) {
                (Ok(g), Ok(w)) => assert!((g - w).abs() < 1e-9, "{k}: {g} != {w}"),
                _ => assert_eq!(g, w, "{k}"),
            }
        }
    }

    #[test]
    fn the_legacy_traccar_client_query_matches_the_reference_ping() {
        // trackers.md: ?id=123456&lat=60.0&lon=30.0&timestamp=1377177267&speed=0.0&bearing=0.0
        //              &altitude=0&accuracy=8&batt=87 (here in the app's own order).
        let r = reading(
            60.0,
            30.0,
            "2013-08-22T13:14:27Z",
            (Some(8.0), Some(0.0), Some(0.0), Some(0.0), Some(87.0)),
        );
        let request = device(Protocol::Osmand, "123456", SpeedUnit::Knots)
            .encode(&[r])
            .unwrap();
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "api/v1/osmand");
        assert!(request.body.is_none() && request.auth == Auth::None);
        assert_same_fields(
            request.query.as_deref().unwrap(),
            "id=123456&timestamp=1377177267&lat=60.0&lon=30.0&speed=0.0&bearing=0.0\
             &altitude=0&accuracy=8&batt=87",
        );
    }

    #[test]
    fn the_osmand_app_sends_epoch_milliseconds_and_mps_by_get() {
        // trackers.md: timestamp=1442068686579 (epoch ms); {3} is the accuracy, sent as hdop.
        let r = reading(
            60.0,
            30.0,
            "2015-09-12T14:38:06.579Z",
            (Some(6.0), Some(13.9), Some(271.0), Some(224.0), None),
        );
        let request = device(Protocol::Osmand, "123456", SpeedUnit::Mps)
            .encode(&[r])
            .unwrap();
        assert_eq!(request.method, Method::GET);
        assert_same_fields(
            request.query.as_deref().unwrap(),
            "id=123456&lat=60.0&lon=30.0&timestamp=1442068686579&hdop=6.0&altitude=224.0\
             &speed=13.9&bearing=271",
        );
    }

    #[test]
    fn the_traccar_client_body_is_the_reference_template() {
        let mut r = reading(
            37.4219983,
            -122.084,
            "2025-06-15T13:45:12.862Z",
            (Some(5.0), Some(0.0), None, Some(5.0), Some(79.0)),
        );
        r.motion_changed = true;
        let request = device(Protocol::Traccar, "48241179", SpeedUnit::Knots)
            .encode(&[r])
            .unwrap();
        assert_eq!(
            (request.method, request.path),
            (Method::POST, "api/v1/osmand")
        );
        let (content_type, body) = request.body.unwrap();
        assert_eq!(content_type, "application/json");
        let got: Value = serde_json::from_slice(&body).unwrap();
        // The example in trackers.md, field for field.
        let reference = json!({
          "location": {
            "timestamp": "2025-06-15T13:45:12.862Z",
            "coords": { "latitude": 37.4219983, "longitude": -122.084, "accuracy": 5,
                        "speed": 0, "heading": -1, "altitude": 5 },
            "is_moving": false,
            "odometer": 0,
            "event": "motionchange",
            "battery": { "level": 0.79, "is_charging": false },
            "activity": { "type": "still" },
            "extras": {},
            "_": "&id=48241179&lat=37.4219983&lon=-122.084&timestamp=2025-06-15T13:45:12.862Z&"
          },
          "device_id": "48241179"
        });
        assert_same_json(&got, &reference, "");
    }

    /// Equal structure and values, with numbers compared as numbers (5 equals 5.0).
    fn assert_same_json(got: &Value, want: &Value, at: &str) {
        match (got, want) {
            (Value::Object(g), Value::Object(w)) => {
                let mut gk: Vec<_> = g.keys().collect();
                let mut wk: Vec<_> = w.keys().collect();
                gk.sort();
                wk.sort();
                assert_eq!(gk, wk, "keys at {at}");
                for (k, v) in w {
                    assert_same_json(&g[k], v, &format!("{at}.{k}"));
                }
            }
            (Value::Number(g), Value::Number(w)) => {
                assert!(
                    (g.as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-9,
                    "{at}: {g} != {w}"
                )
            }
            _ => assert_eq!(got, want, "{at}"),
        }
    }

    #[test]
    fn the_owntracks_message_is_the_reference_location() {
        // trackers.md's example, minus what a tracker without regions or a vertical accuracy
        // sends: `inregions`, `_id`, `vac`, and `t` (regular move-mode fixes carry no trigger).
        let r = reading(
            48.85833,
            2.29513,
            "2017-06-15T06:37:31Z",
            // 61 km/h is 16.94 m/s; the app truncates.
            (Some(5.0), Some(16.95), Some(271.0), Some(167.0), Some(41.0)),
        );
        let mut d = device(Protocol::Owntracks, "secret-token", SpeedUnit::Knots);
        d.owntracks_user = "jane".into();
        d.owntracks_device = "phone".into();
        d.tid = "JJ".into();
        let request = d.encode(&[r]).unwrap();
        assert_eq!(
            (request.method.clone(), request.path),
            (Method::POST, "api/v1/owntracks")
        );
        assert_eq!(
            request.auth,
            Auth::Basic {
                user: "jane".into(),
                password: "secret-token".into()
            }
        );
        assert_eq!(
            request.headers,
            vec![("X-Limit-U", "jane".into()), ("X-Limit-D", "phone".into())]
        );
        let (content_type, body) = request.body.unwrap();
        assert_eq!(content_type, "application/json; charset=utf-8");
        let got: Value = serde_json::from_slice(&body).unwrap();
        let mut reference = json!({
          "_type": "location", "tid": "JJ", "topic": "owntracks/jane/phone",
          "lat": 48.85833, "lon": 2.29513, "tst": 1497508651, "created_at": 1497508652,
          "acc": 5, "alt": 167, "vac": 21, "vel": 61, "cog": 271,
          "batt": 41, "bs": 1, "t": "u", "m": 1, "conn": "m",
          "inregions": ["Home"], "_id": "a1b2c3d4"
        });
        let obj = reference.as_object_mut().unwrap();
        for absent in ["inregions", "_id", "vac", "t"] {
            obj.remove(absent);
        }
        // The message is written at the fix; a tracker in move mode (m = 2), not significant.
        obj.insert("created_at".into(), json!(1497508651));
        obj.insert("m".into(), json!(2));
        assert_eq!(got, reference);
        for key in ["acc", "alt", "vel", "cog", "batt", "tst"] {
            assert!(got[key].is_i64(), "{key} is an integer");
        }
    }

    #[test]
    fn owntracks_leaves_out_zero_fields_and_rounds_like_the_app() {
        let r = reading(
            1.0,
            2.0,
            "2024-01-01T00:00:00.900Z",
            (Some(0.2), Some(0.0), Some(359.6), None, None),
        );
        let got = owntracks_json(&device(Protocol::Owntracks, "t", SpeedUnit::Knots), &r);
        for absent in ["acc", "vel", "cog", "alt", "batt", "bs"] {
            assert!(got.get(absent).is_none(), "{absent} in {got}");
        }
        assert_eq!(got["tst"], 1_704_067_200, "epoch seconds, truncated");
    }

    #[test]
    fn speeds_convert_to_each_unit() {
        let mps = 10.0;
        assert!((SpeedUnit::Knots.from_mps(mps) - 19.43844).abs() < 1e-9);
        assert!((SpeedUnit::Kmh.from_mps(mps) - 36.0).abs() < 1e-9);
        assert!((SpeedUnit::Mph.from_mps(mps) - 22.36936).abs() < 1e-9);
        assert_eq!(SpeedUnit::Mps.from_mps(mps), mps);
        // The server divides by the same factors (0.514444 m/s per knot, 0.44704 per mph).
        assert!((SpeedUnit::Knots.from_mps(mps) * 0.514444 - mps).abs() < 1e-4);
        assert!((SpeedUnit::Mph.from_mps(mps) * 0.44704 - mps).abs() < 1e-4);
        for unit in ["knots", "mps", "kmh", "mph"] {
            let parsed: SpeedUnit = serde_json::from_value(json!(unit)).unwrap();
            assert_eq!(parsed.as_str(), unit);
        }
        assert!(serde_json::from_value::<SpeedUnit>(json!("furlongs")).is_err());

        let r = reading(
            1.0,
            2.0,
            "2024-01-01T00:00:00Z",
            (None, Some(mps), None, None, None),
        );
        let speed = |unit| {
            pairs(&encode_query(&traccar_client_query("t", &r, unit)))
                .into_iter()
                .find(|(k, _)| k == "speed")
                .map(|(_, v)| v)
                .unwrap()
        };
        assert_eq!(speed(SpeedUnit::Knots), "19.44");
        assert_eq!(speed(SpeedUnit::Kmh), "36");
        assert_eq!(
            owntracks_json(&device(Protocol::Owntracks, "t", SpeedUnit::Knots), &r)["vel"],
            36
        );
        assert_eq!(traccar_json("t", &r)["location"]["coords"]["speed"], 10.0);
    }

    #[test]
    fn native_batches_and_the_apps_send_one_at_a_time() {
        let r = reading(
            1.0,
            2.0,
            "2024-01-01T00:00:00.250Z",
            (Some(5.0), None, None, None, None),
        );
        let request = device(Protocol::Native, "tok", SpeedUnit::Knots)
            .encode(&[r.clone(), r.clone()])
            .unwrap();
        assert_eq!(request.auth, Auth::Bearer("tok".into()));
        let body: Value = serde_json::from_slice(&request.body.unwrap().1).unwrap();
        assert_eq!(body.as_array().map(Vec::len), Some(2));
        assert_eq!(Protocol::Native.batch_limit(), MAX_BATCH);
        for p in [Protocol::Osmand, Protocol::Traccar, Protocol::Owntracks] {
            assert_eq!(p.batch_limit(), 1, "{p}");
        }
        for p in [Protocol::Osmand, Protocol::Traccar, Protocol::Owntracks] {
            assert_eq!(device(p, "t", SpeedUnit::Mps).min_fix_interval_ms(), 1000);
        }
        assert_eq!(
            device(Protocol::Native, "t", SpeedUnit::Knots).min_fix_interval_ms(),
            1
        );
        let d = |p, u| device(p, "t", u).time_resolution_ms();
        assert_eq!(d(Protocol::Native, SpeedUnit::Knots), 1);
        assert_eq!(d(Protocol::Traccar, SpeedUnit::Knots), 1);
        assert_eq!(d(Protocol::Osmand, SpeedUnit::Mps), 1);
        assert_eq!(d(Protocol::Osmand, SpeedUnit::Knots), 1000);
        assert_eq!(d(Protocol::Owntracks, SpeedUnit::Mps), 1000);
    }

    #[test]
    fn tokens_are_escaped_and_names_become_ids() {
        assert_eq!(
            encode_query(&[("id", "a b&c=d/é".into())]),
            "id=a%20b%26c%3Dd%2F%C3%A9"
        );
        assert_eq!(
            slug("Bus 4716 (Liverpool 14) #2"),
            "bus-4716-liverpool-14-2"
        );
        assert_eq!(slug("Car Višnjan"), "car-vi-njan");
        assert_eq!(tid("Car Munich"), "CM");
        assert_eq!(tid("Bus 4716 (Liverpool 14)"), "B4");
        assert_eq!(tid("Van"), "VX");
    }
}
