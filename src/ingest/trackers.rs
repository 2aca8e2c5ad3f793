//! Tracker apps' own wire formats, so phones post without a custom client: the OsmAnd protocol
//! (query string or form, also spoken by the legacy Traccar Client), Traccar Client's JSON, and
//! OwnTracks in HTTP mode. Each is parsed into [`NewPosition`]s and written through the same
//! writer as native ingest, so duplicates, late points and filtering behave the same.
use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{header, HeaderMap, Method, StatusCode, Uri},
    routing::{get, post},
    Json, Router,
};
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::{json, Map, Number, Value};

use super::MAX_BODY;
use crate::{
    auth::SpeedUnit,
    error::openapi::{BadRequest, CommonErrors, Gone, RateLimited, TooLarge},
    error::{AppError, AppResult},
    ingest::openapi::{NothingToSend, OsmandForm, OsmandParams, OwnTracksMessage, TraccarPosition},
    security::admit_ingest,
    tracking::position::{number_field, to_micros, NewPosition},
    AppState,
};

/// OsmAnd timestamps below this are epoch seconds, at or above it epoch milliseconds.
const EPOCH_MS_FROM: f64 = 2_147_483_647.0;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/osmand", get(osmand).post(osmand))
        .route("/owntracks", post(owntracks))
}

/// The OsmAnd protocol, or Traccar Client's JSON when the body is JSON. Both apps expect `200`
/// with an empty body.
#[utoipa::path(
    get,
    path = "/osmand",
    operation_id = "osmandGet",
    summary = "Post a position (OsmAnd protocol)",
    description = OSMAND,
    tag = "ingest",
    params(OsmandParams),
    responses(
        (status = 200, description = "Stored (empty body)."),
        (status = 400, response = BadRequest),
        (status = 410, response = Gone),
        (status = 413, response = TooLarge),
        (status = 429, response = RateLimited),
        CommonErrors,
    ),
    security(),
)]
#[utoipa::path(
    post,
    path = "/osmand",
    impl_for = OsmandPost,
    operation_id = "osmandPost",
    summary = "Post a position (OsmAnd protocol, form, or Traccar Client JSON)",
    description = OSMAND,
    tag = "ingest",
    params(OsmandParams),
    request_body(
        content(
            (inline(OsmandForm) = "application/x-www-form-urlencoded"),
            (inline(TraccarPosition) = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "Stored (empty body)."),
        (status = 400, response = BadRequest),
        (status = 410, response = Gone),
        (status = 413, response = TooLarge),
        (status = 429, response = RateLimited),
        CommonErrors,
    ),
    security(),
)]
async fn osmand(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<StatusCode> {
    let body = body.map_err(|_| too_large())?;
    let now = to_micros(Utc::now());
    let json_body = method == Method::POST
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
    let (device, position) = if json_body {
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| AppError::Malformed(format!("the body is not valid JSON: {e}")))?;
        let token = traccar_device_id(&value)?;
        let device = state.devices.authenticate(&state.db, &token).await?;
        admit_ingest(&state, device.vehicle_id)?;
        match parse_traccar(value, now)? {
            Some(position) => (device, position),
            // A heartbeat: the app is alive but has no new fix. Traccar would repeat the last
            // position at the new time; Waymark stores only what a device actually measured.
            None => return Ok(StatusCode::OK),
        }
    } else {
        let params = match uri.query().filter(|q| !q.is_empty()) {
            Some(query) => parse_form(query),
            None => parse_form(
                std::str::from_utf8(&body)
                    .map_err(|_| AppError::Malformed("the form body is not valid UTF-8".into()))?,
            ),
        };
        let token = param(&params, "id")
            .or_else(|| param(&params, "deviceid"))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AppError::validation(
                    "id",
                    "id (or deviceid) must carry the vehicle's ingest token",
                )
            })?;
        let device = state.devices.authenticate(&state.db, token).await?;
        admit_ingest(&state, device.vehicle_id)?;
        let position = parse_osmand(&params, device.speed_unit, now)?;
        (device, position)
    };
    write_one(&state, device, position).await?;
    Ok(StatusCode::OK)
}

/// The OsmAnd route's description, the same for both methods.
const OSMAND: &str = "OsmAnd protocol (any method): the token is the `id` or `deviceid` parameter, in the query string or, when the URL has no query, in a form body; other keys are kept as attributes. A POST with `Content-Type: application/json` is Traccar Client JSON, with the token as `device_id`. Replies `200` with an empty body. See docs/API.md#tracker-apps-device.";

/// The POST operation of [`osmand`]: the same handler, documented apart because its body differs
/// and the apps (and the API fuzzer) tell the two operations apart by id.
pub struct OsmandPost;

/// OwnTracks HTTP mode. Every accepted message answers `[]`, so the app does not queue it again.
#[utoipa::path(
    post,
    path = "/owntracks",
    operation_id = "owntracks",
    summary = "Post an OwnTracks message (HTTP mode)",
    description = "The ingest token is the Basic password (any user name) or `Authorization: Bearer`. A `location` message gives `lat`, `lon`, `tst` (epoch s), `acc`, `alt`, `vel` (km/h), `cog` and `batt`; other fields are kept as attributes.",
    tag = "ingest",
    request_body(content = inline(OwnTracksMessage), content_type = "application/json"),
    responses(
        (status = 200, body = inline(NothingToSend), description = "Stored, or nothing to store (every `_type` but `location`, or an empty body)."),
        (status = 400, response = BadRequest),
        (status = 410, response = Gone),
        (status = 413, response = TooLarge),
        (status = 429, response = RateLimited),
        CommonErrors,
    ),
    security(("basic" = []), ("bearer" = [])),
)]
async fn owntracks(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Json<Value>> {
    let token = owntracks_token(&headers).ok_or(AppError::Unauthorized(
        "send the vehicle's ingest token as the Basic password or as Authorization: Bearer <token>",
    ))?;
    let device = state.devices.authenticate(&state.db, &token).await?;
    admit_ingest(&state, device.vehicle_id)?;
    let body = body.map_err(|_| too_large())?;
    // The app posts an empty body when a friend is deleted; there is nothing to store.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Json(json!([])));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| AppError::Malformed(format!("the body is not valid JSON: {e}")))?;
    if let Some(position) = parse_owntracks(value, to_micros(Utc::now()))? {
        write_one(&state, device, position).await?;
    }
    Ok(Json(json!([])))
}

async fn write_one(
    state: &AppState,
    device: crate::auth::Device,
    position: NewPosition,
) -> AppResult<()> {
    state.writer.write(device, vec![position]).await?;
    Ok(())
}

fn too_large() -> AppError {
    AppError::TooLarge(format!("the body is larger than {MAX_BODY} bytes"))
}

/// The token from `Authorization: Basic` (the password; any user name) or `Bearer`.
fn owntracks_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        decoded.split_once(':')?.1.to_owned()
    } else {
        return None;
    };
    (!token.is_empty()).then_some(token)
}

/// Decodes `application/x-www-form-urlencoded` text (also a query string) into its pairs.
pub fn parse_form(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match hex_pair(bytes[i + 1], bytes[i + 2]) {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    Some(digit(hi)? * 16 + digit(lo)?)
}

/// The last value of `key` (keys such as `cell` may repeat; the position keeps the last).
fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// An OsmAnd-protocol timestamp: epoch seconds (below 2147483647) or milliseconds, ISO 8601, or
/// `yyyy-MM-dd HH:mm:ss`, which carries no zone and is read as UTC.
pub fn parse_osmand_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        if !n.is_finite() || n < 0.0 {
            return None;
        }
        let ms = if n < EPOCH_MS_FROM { n * 1000.0 } else { n };
        return Utc.timestamp_millis_opt(ms.round() as i64).single();
    }
    if s.contains('T') {
        // A `+` of an unescaped offset arrives as a space.
        let s = s.replace(' ', "+");
        if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
            return Some(t.with_timezone(&Utc));
        }
        return NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|t| t.and_utc());
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

fn number_param(field: &str, value: &str) -> AppResult<f64> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| AppError::validation(field, format!("{field} must be a number")))
}

/// A free-form value as its type: a number, `true`/`false`, or else the text.
fn typed(value: &str) -> Value {
    if let Ok(i) = value.parse::<i64>() {
        return Value::from(i);
    }
    if let Some(n) = value.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    match value {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(value.to_owned()),
    }
}

/// Renames the field of a validation error from the native name to the one this format uses.
fn rename_field(err: AppError, names: &[(&str, &str)]) -> AppError {
    match err {
        AppError::Validation {
            field,
            message,
            index,
        } => match names.iter().find(|(native, _)| *native == field) {
            Some((native, wire)) => AppError::Validation {
                field: (*wire).to_owned(),
                message: message.replace(native, wire),
                index,
            },
            None => AppError::Validation {
                field,
                message,
                index,
            },
        },
        other => other,
    }
}

/// One OsmAnd-protocol request's parameters as a position; `speed` is in `speed_unit`.
pub fn parse_osmand(
    params: &[(String, String)],
    speed_unit: SpeedUnit,
    now: DateTime<Utc>,
) -> AppResult<NewPosition> {
    let number = |key: &str| param(params, key).map(|v| number_param(key, v)).transpose();
    let (mut lat, mut lon) = (number("lat")?, number("lon")?);
    if let (None, None, Some(location)) = (lat, lon, param(params, "location")) {
        let bad = || AppError::validation("location", "location must be lat,lon");
        let (la, lo) = location.split_once(',').ok_or_else(bad)?;
        lat = Some(number_param("location", la)?);
        lon = Some(number_param("location", lo)?);
    }
    let lat = lat.ok_or_else(|| AppError::validation("lat", "lat is required"))?;
    let lon = lon.ok_or_else(|| AppError::validation("lon", "lon is required"))?;
    let recorded_at = match param(params, "timestamp").filter(|t| !t.trim().is_empty()) {
        None => now,
        Some(t) => parse_osmand_time(t).ok_or_else(|| {
            AppError::validation(
                "timestamp",
                "timestamp must be epoch seconds or ms, ISO 8601, or yyyy-MM-dd HH:mm:ss (UTC)",
            )
        })?,
    };
    let heading = match number("bearing")? {
        Some(h) => Some(h),
        None => number("heading")?,
    };
    const KNOWN: &[&str] = &[
        "id",
        "deviceid",
        "lat",
        "lon",
        "location",
        "timestamp",
        "speed",
        "bearing",
        "heading",
        "altitude",
        "accuracy",
        "batt",
    ];
    let mut attributes = Map::new();
    for (k, v) in params {
        if !KNOWN.contains(&k.as_str()) {
            attributes.insert(k.clone(), typed(v));
        }
    }
    let position = NewPosition {
        lat,
        lon,
        recorded_at: to_micros(recorded_at),
        accuracy: number("accuracy")?,
        speed: number("speed")?.map(|s| speed_unit.to_mps(s)),
        heading,
        altitude: number("altitude")?,
        battery: number("batt")?,
        attributes: (!attributes.is_empty()).then_some(attributes),
    };
    let heading_name = if param(params, "bearing").is_some() {
        "bearing"
    } else {
        "heading"
    };
    position.validate(now).map_err(|e| {
        rename_field(
            e,
            &[
                ("recorded_at", "timestamp"),
                ("battery", "batt"),
                ("heading", heading_name),
            ],
        )
    })?;
    Ok(position)
}

/// The ingest token of a Traccar Client JSON body (`device_id`).
fn traccar_device_id(value: &Value) -> AppResult<String> {
    match value.get("device_id") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(AppError::validation(
            "device_id",
            "device_id must carry the vehicle's ingest token",
        )),
    }
}

fn json_number(obj: &Map<String, Value>, key: &str, field: &str) -> AppResult<Option<f64>> {
    number_field(obj.get(key), field)
}

/// A Traccar Client JSON body (the background-geolocation location format) as a position, or
/// none for a heartbeat (a `location` without `coords`). Speed is already m/s; a negative speed,
/// heading or battery level means unknown.
pub fn parse_traccar(value: Value, now: DateTime<Utc>) -> AppResult<Option<NewPosition>> {
    let Value::Object(mut top) = value else {
        return Err(AppError::validation("", "the body must be a JSON object"));
    };
    top.remove("device_id");
    let Some(Value::Object(mut location)) = top.remove("location") else {
        return Err(AppError::validation(
            "location",
            "location must be an object",
        ));
    };
    let mut coords = match location.remove("coords") {
        None => return Ok(None),
        Some(Value::Object(coords)) => coords,
        Some(_) => {
            return Err(AppError::validation(
                "location.coords",
                "location.coords must be an object",
            ))
        }
    };
    let lat = json_number(&coords, "latitude", "location.coords.latitude")?.ok_or_else(|| {
        AppError::validation(
            "location.coords.latitude",
            "location.coords.latitude is required",
        )
    })?;
    let lon = json_number(&coords, "longitude", "location.coords.longitude")?.ok_or_else(|| {
        AppError::validation(
            "location.coords.longitude",
            "location.coords.longitude is required",
        )
    })?;
    let known = |key: &str| json_number(&coords, key, &format!("location.coords.{key}"));
    let unknown_if_negative = |v: Option<f64>| v.filter(|v| *v >= 0.0);
    let accuracy = known("accuracy")?;
    let speed = unknown_if_negative(known("speed")?);
    let heading = unknown_if_negative(known("heading")?);
    let altitude = known("altitude")?;
    for key in [
        "latitude",
        "longitude",
        "accuracy",
        "speed",
        "heading",
        "altitude",
    ] {
        coords.remove(key);
    }
    let recorded_at = match location.remove("timestamp") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                AppError::validation(
                    "location.timestamp",
                    "location.timestamp must be an ISO 8601 time such as 2026-01-31T12:00:00Z",
                )
            })?,
        Some(_) => {
            return Err(AppError::validation(
                "location.timestamp",
                "location.timestamp must be an ISO 8601 string",
            ))
        }
    };
    let mut attributes = Map::new();
    let mut battery = None;
    if let Some(Value::Object(mut b)) = location.remove("battery") {
        battery = unknown_if_negative(json_number(&b, "level", "location.battery.level")?)
            .map(|level| (level * 100.0).round());
        if let Some(charging) = b.remove("is_charging") {
            attributes.insert("charge".into(), charging);
        }
    }
    if let Some(moving) = location.remove("is_moving") {
        attributes.insert("motion".into(), moving);
    }
    if let Some(Value::Object(mut activity)) = location.remove("activity") {
        if let Some(kind) = activity.remove("type") {
            attributes.insert("activity".into(), kind);
        }
    }
    if let Some(Value::Object(extras)) = location.remove("extras") {
        attributes.extend(extras);
    }
    // `_` echoes the legacy query string, ingest token included: never keep it.
    location.remove("_");
    attributes.extend(location.into_iter().filter(|(_, v)| !v.is_null()));
    attributes.extend(coords.into_iter().filter(|(_, v)| !v.is_null()));
    attributes.extend(top.into_iter().filter(|(_, v)| !v.is_null()));
    let position = NewPosition {
        lat,
        lon,
        recorded_at: to_micros(recorded_at),
        accuracy,
        speed,
        heading,
        altitude,
        battery,
        attributes: (!attributes.is_empty()).then_some(attributes),
    };
    position.validate(now).map_err(|e| {
        rename_field(
            e,
            &[
                ("lat", "location.coords.latitude"),
                ("lon", "location.coords.longitude"),
                ("accuracy", "location.coords.accuracy"),
                ("heading", "location.coords.heading"),
                ("altitude", "location.coords.altitude"),
                ("battery", "location.battery.level"),
                ("recorded_at", "location.timestamp"),
            ],
        )
    })?;
    Ok(Some(position))
}

/// An OwnTracks message: a position for `_type: "location"`, nothing for every other type.
pub fn parse_owntracks(value: Value, now: DateTime<Utc>) -> AppResult<Option<NewPosition>> {
    let Value::Object(mut obj) = value else {
        return Err(AppError::Malformed(
            "an OwnTracks message must be a JSON object".into(),
        ));
    };
    if obj.get("_type").and_then(Value::as_str) != Some("location") {
        return Ok(None);
    }
    obj.remove("_type");
    let lat = json_number(&obj, "lat", "lat")?
        .ok_or_else(|| AppError::validation("lat", "lat is required"))?;
    let lon = json_number(&obj, "lon", "lon")?
        .ok_or_else(|| AppError::validation("lon", "lon is required"))?;
    let recorded_at = match json_number(&obj, "tst", "tst")? {
        None => now,
        Some(tst) => Utc
            .timestamp_millis_opt((tst * 1000.0).round() as i64)
            .single()
            .ok_or_else(|| AppError::validation("tst", "tst must be epoch seconds"))?,
    };
    let position = NewPosition {
        lat,
        lon,
        recorded_at: to_micros(recorded_at),
        accuracy: json_number(&obj, "acc", "acc")?,
        speed: json_number(&obj, "vel", "vel")?.map(|kmh| kmh / 3.6),
        heading: json_number(&obj, "cog", "cog")?,
        altitude: json_number(&obj, "alt", "alt")?,
        battery: json_number(&obj, "batt", "batt")?,
        attributes: None,
    };
    for key in ["lat", "lon", "tst", "acc", "vel", "cog", "alt", "batt"] {
        obj.remove(key);
    }
    obj.retain(|_, v| !v.is_null());
    let position = NewPosition {
        attributes: (!obj.is_empty()).then_some(obj),
        ..position
    };
    position.validate(now).map_err(|e| {
        rename_field(
            e,
            &[
                ("recorded_at", "tst"),
                ("accuracy", "acc"),
                ("speed", "vel"),
                ("heading", "cog"),
                ("altitude", "alt"),
                ("battery", "batt"),
            ],
        )
    })?;
    Ok(Some(position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn osmand(query: &str, unit: &str, now: DateTime<Utc>) -> AppResult<NewPosition> {
        let unit = SpeedUnit::parse(unit).expect("a speed unit");
        parse_osmand(&parse_form(query), unit, now)
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn form_decoding_handles_plus_percent_and_bare_keys() {
        let pairs = parse_form("a=1+2&b=2016-01-27T18%3A55%3A47Z&c&d=%zz&e=%C3%A9");
        assert_eq!(
            pairs,
            [
                ("a", "1 2"),
                ("b", "2016-01-27T18:55:47Z"),
                ("c", ""),
                ("d", "%zz"),
                ("e", "é")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn every_osmand_timestamp_form_reads_the_same_instant() {
        let want = at("2023-09-12T14:38:06Z");
        for form in [
            "1694529486",
            "1694529486000",
            "2023-09-12T14:38:06Z",
            "2023-09-12T16:38:06+02:00",
            "2023-09-12T16:38:06 02:00",
            "2023-09-12T14:38:06",
            "2023-09-12 14:38:06",
        ] {
            assert_eq!(parse_osmand_time(form), Some(want), "{form}");
        }
        assert_eq!(
            parse_osmand_time("1442068686579"),
            Some(at("2015-09-12T14:38:06.579Z"))
        );
        for bad in ["yesterday", "2023-13-01 00:00:00", "-5", "NaN", "12:00"] {
            assert_eq!(parse_osmand_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_missing_timestamp_means_now() {
        let now = to_micros(Utc::now());
        let p = osmand("id=t&lat=1&lon=2", "knots", now).unwrap();
        assert_eq!(p.recorded_at, now);
    }

    #[test]
    fn speed_units_read_as_the_api_and_the_database_spell_them() {
        for unit in SpeedUnit::ALL {
            assert_eq!(serde_json::to_value(unit).unwrap(), unit.as_str());
            assert_eq!(SpeedUnit::parse(unit.as_str()), Some(unit));
        }
        assert_eq!(SpeedUnit::parse("furlongs_per_fortnight"), None);
    }

    #[test]
    fn speed_is_converted_from_each_unit_to_mps() {
        let now = Utc::now();
        let cases = [
            ("knots", "10", 5.14444),
            ("mps", "5.14444", 5.14444),
            ("kmh", "18.519984", 5.14444),
            ("mph", "11.507829", 5.14444),
            ("kmh", "36", 10.0),
            ("mph", "10", 4.4704),
        ];
        for (unit, speed, mps) in cases {
            let p = osmand(&format!("lat=1&lon=2&speed={speed}"), unit, now).unwrap();
            let got = p.speed.unwrap();
            assert!((got - mps).abs() < 1e-4, "{unit} {speed}: {got}");
        }
    }

    #[test]
    fn osmand_fields_map_and_the_rest_become_typed_attributes() {
        let now = Utc::now();
        let p = osmand(
            "id=tok&lat=60.0&lon=30.0&timestamp=1694529486&speed=0.0&bearing=12.5&altitude=7\
             &accuracy=8&batt=87&hdop=6.0&charge=true&ignition=false&rpm=933&driver=ab+c",
            "knots",
            now,
        )
        .unwrap();
        assert_eq!((p.lat, p.lon), (60.0, 30.0));
        assert_eq!(p.recorded_at, at("2023-09-12T14:38:06Z"));
        assert_eq!(
            (p.speed, p.heading, p.altitude, p.accuracy, p.battery),
            (Some(0.0), Some(12.5), Some(7.0), Some(8.0), Some(87.0))
        );
        let attrs = Value::Object(p.attributes.unwrap());
        assert_eq!(
            attrs,
            json!({"hdop": 6.0, "charge": true, "ignition": false, "rpm": 933, "driver": "ab c"})
        );
        let p = osmand("location=48.1,11.5&heading=90", "knots", now).unwrap();
        assert_eq!((p.lat, p.lon, p.heading), (48.1, 11.5, Some(90.0)));
    }

    #[test]
    fn osmand_errors_name_the_wire_field() {
        let now = Utc::now();
        let ahead = (now + Duration::hours(30)).timestamp().to_string();
        let cases = [
            ("lon=1".to_owned(), "lat"),
            ("lat=1".to_owned(), "lon"),
            ("lat=91&lon=1".to_owned(), "lat"),
            ("lat=north&lon=1".to_owned(), "lat"),
            ("location=1;2".to_owned(), "location"),
            ("lat=1&lon=1&speed=fast".to_owned(), "speed"),
            ("lat=1&lon=1&speed=-2".to_owned(), "speed"),
            ("lat=1&lon=1&timestamp=soon".to_owned(), "timestamp"),
            (format!("lat=1&lon=1&timestamp={ahead}"), "timestamp"),
            ("lat=1&lon=1&batt=150".to_owned(), "batt"),
            ("lat=1&lon=1&bearing=400".to_owned(), "bearing"),
            ("lat=1&lon=1&driver=a%00b".to_owned(), "attributes"),
        ];
        for (query, field) in cases {
            let err = osmand(&query, "knots", now).unwrap_err();
            assert_eq!(err.field().expect("a validation error"), field, "{query}");
        }
    }

    #[test]
    fn traccar_json_reads_the_client_template() {
        let now = Utc::now();
        let body = json!({
            "location": {
                "timestamp": "2025-06-15T13:45:12.862Z",
                "coords": { "latitude": 37.4219983, "longitude": -122.084, "accuracy": 5,
                            "speed": 3.5, "heading": -1, "altitude": 5, "speed_accuracy": 1 },
                "is_moving": false, "odometer": 0, "event": "motionchange",
                "battery": { "level": 0.79, "is_charging": false },
                "activity": { "type": "still" },
                "extras": {"heartbeat": true},
                "_": "&id=48241179&lat=37.4219983&lon=-122.084&timestamp=2025-06-15T13:45:12.862Z&"
            },
            "device_id": "48241179"
        });
        let p = parse_traccar(body, now).unwrap().expect("a location");
        assert_eq!((p.lat, p.lon), (37.4219983, -122.084));
        assert_eq!(p.recorded_at, at("2025-06-15T13:45:12.862Z"));
        assert_eq!(
            (p.speed, p.heading, p.accuracy, p.altitude, p.battery),
            (Some(3.5), None, Some(5.0), Some(5.0), Some(79.0))
        );
        assert_eq!(
            Value::Object(p.attributes.unwrap()),
            json!({"charge": false, "motion": false, "odometer": 0, "event": "motionchange",
                   "activity": "still", "heartbeat": true, "speed_accuracy": 1})
        );
    }

    #[test]
    fn traccar_json_errors_name_the_field() {
        let now = Utc::now();
        let with = |coords: Value, ts: Value| json!({"location": {"timestamp": ts, "coords": coords}, "device_id": "x"});
        let t = json!("2025-06-15T13:45:12Z");
        let cases = [
            (
                with(json!({"longitude": 1}), t.clone()),
                "location.coords.latitude",
            ),
            (
                with(json!({"latitude": 95, "longitude": 1}), t.clone()),
                "location.coords.latitude",
            ),
            (
                with(
                    json!({"latitude": 1, "longitude": 1, "speed": "x"}),
                    t.clone(),
                ),
                "location.coords.speed",
            ),
            (
                with(json!({"latitude": 1, "longitude": 1}), json!("soon")),
                "location.timestamp",
            ),
            (json!({"device_id": "x"}), "location"),
            (json!({"location": {"coords": [1, 2]}}), "location.coords"),
        ];
        for (body, field) in cases {
            let err = parse_traccar(body.clone(), now).unwrap_err();
            assert_eq!(err.field().expect("a validation error"), field, "{body}");
        }
    }

    #[test]
    fn a_traccar_location_without_coords_is_a_heartbeat() {
        let body = json!({"location": {"timestamp": "2025-06-15T13:45:12Z",
            "extras": {"heartbeat": true}}, "device_id": "x"});
        assert_eq!(parse_traccar(body, Utc::now()).unwrap(), None);
    }

    #[test]
    fn owntracks_location_converts_kmh_and_keeps_the_rest() {
        let now = Utc::now();
        let body = json!({
            "_type": "location", "tid": "JJ", "topic": "owntracks/jane/phone",
            "lat": 48.85833, "lon": 2.29513, "tst": 1497508651, "created_at": 1497508652,
            "acc": 5, "alt": 167, "vac": 21, "vel": 61, "cog": 271,
            "batt": 41, "bs": 1, "t": "u", "m": 1, "conn": "m",
            "inregions": ["Home"], "_id": "a1b2c3d4"
        });
        let p = parse_owntracks(body, now).unwrap().unwrap();
        assert_eq!((p.lat, p.lon), (48.85833, 2.29513));
        assert_eq!(p.recorded_at, at("2017-06-15T06:37:31Z"));
        assert!((p.speed.unwrap() - 61.0 / 3.6).abs() < 1e-9);
        assert_eq!(
            (p.heading, p.accuracy, p.altitude, p.battery),
            (Some(271.0), Some(5.0), Some(167.0), Some(41.0))
        );
        let attrs = p.attributes.unwrap();
        for key in [
            "tid",
            "topic",
            "created_at",
            "vac",
            "bs",
            "t",
            "m",
            "conn",
            "inregions",
            "_id",
        ] {
            assert!(attrs.contains_key(key), "{key}");
        }
        assert!(!attrs.contains_key("_type"));
    }

    #[test]
    fn owntracks_other_types_are_ignored_and_errors_name_the_field() {
        let now = Utc::now();
        for kind in ["transition", "waypoint", "status", "card"] {
            assert_eq!(
                parse_owntracks(json!({"_type": kind, "lat": 1}), now).unwrap(),
                None
            );
        }
        let cases = [
            (json!({"_type": "location", "lon": 1}), "lat"),
            (json!({"_type": "location", "lat": -91, "lon": 1}), "lat"),
            (
                json!({"_type": "location", "lat": 1, "lon": 1, "tst": "x"}),
                "tst",
            ),
            (
                json!({"_type": "location", "lat": 1, "lon": 1, "tst": 1}),
                "tst",
            ),
            (
                json!({"_type": "location", "lat": 1, "lon": 1, "vel": -3}),
                "vel",
            ),
            (
                json!({"_type": "location", "lat": 1, "lon": 1, "cog": 500}),
                "cog",
            ),
        ];
        for (body, field) in cases {
            let err = parse_owntracks(body.clone(), now).unwrap_err();
            assert_eq!(err.field().expect("a validation error"), field, "{body}");
        }
    }

    #[test]
    fn owntracks_credentials_come_from_basic_or_bearer() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            owntracks_token(&h)
        };
        let basic = base64::engine::general_purpose::STANDARD.encode("jane:s3cret:x");
        assert_eq!(with(&format!("Basic {basic}")).as_deref(), Some("s3cret:x"));
        assert_eq!(with("Bearer tok").as_deref(), Some("tok"));
        let empty = base64::engine::general_purpose::STANDARD.encode("jane:");
        assert_eq!(with(&format!("Basic {empty}")), None);
        assert_eq!(with("Digest abc"), None);
        assert_eq!(owntracks_token(&HeaderMap::new()), None);
    }
}
