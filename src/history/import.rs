//! History brought in from files: a vehicle's fixes from GPX or GeoJSON (a phone's log, another
//! tracker, an export of Waymark's own), stored as its history and never as live events.
//!
//! Every point is checked as live ingest checks it; one invalid point rejects the whole file,
//! naming every invalid point by its position, and nothing is stored. Implausible points are
//! stored marked, as live ones are, except that being old is what history is (no `outdated`),
//! and a jump is judged against the file's previous good point. Imported fixes carry seq 0
//! (sockets resuming after seq N never replay them), are late (never current), belong to no
//! shipment and are never published; a fix the vehicle already has at that time is kept as it
//! is. Trips and stops are detected again from the earliest new fix on.
use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, DefaultBodyLimit, State},
    http::{header, HeaderMap, StatusCode},
    routing::post,
    Json, Router,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use quick_xml::{events::Event, Reader};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::segmenter;
use crate::{
    auth::CurrentUser,
    error::openapi::{BadRequest, CommonErrors, Forbidden, Id, NotFound, UnsupportedMediaType},
    error::{ApiPath, AppError, AppResult, PointError},
    ingest::{judge, FilterSettings},
    settings,
    tracking::position::{number_field, to_micros, FilterReason, LastFix, NewPosition},
    AppState,
};

/// Largest file imported, in bytes.
pub const MAX_IMPORT_BODY: usize = 32 * 1024 * 1024;
/// Invalid points listed in a refusal; the message counts them all.
const MAX_LISTED: usize = 1000;
/// Fixes written per statement.
const INSERT_CHUNK: usize = 5_000;

pub(super) fn router() -> Router<AppState> {
    Router::new().route(
        "/vehicles/{id}/import",
        post(import).layer(DefaultBodyLimit::max(MAX_IMPORT_BODY)),
    )
}

/// What an import stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportReply {
    /// Fixes stored (including those marked implausible).
    pub imported: usize,
    /// Points not stored because the vehicle already had a fix at that time (or the file had
    /// the time twice).
    pub duplicates: usize,
    /// Fixes stored but marked implausible (`filter_reason`): never part of exports, trips or
    /// tracks.
    pub filtered: usize,
    /// The file's earliest time.
    pub from: DateTime<Utc>,
    /// The file's latest time.
    pub to: DateTime<Utc>,
}

#[utoipa::path(
    post,
    path = "/vehicles/{id}/import",
    operation_id = "importVehicleHistory",
    summary = "Import a vehicle's history",
    description = "Dispatchers and admins; retired vehicles too. The body is a GPX file (`application/gpx+xml` or `application/xml`; track points with `time`, and `ele`, speed and course from Garmin's `TrackPointExtension`, `accuracy` and `battery` from Waymark's export) or GeoJSON (`application/geo+json` or `application/json`; Point features with a `time` property, or LineString features with `times` or `coordTimes`), at most 32 MiB. Every point is checked as live ingest checks it: any invalid point answers `400` listing every one by `index` (from 0, in file order) in `points`, and nothing is stored. Implausible points are stored marked (`filter_reason`), except that age is no fault here. Fixes are stored once: a time the vehicle already has is counted in `duplicates`. Imported fixes are history only: never published, never the current position, in no shipment. Trips and stops are detected again from the earliest new fix.",
    tag = "vehicles",
    params(Id),
    request_body(content(
        (String = "application/gpx+xml"),
        (Object = "application/geo+json"),
    )),
    responses(
        (status = 200, body = ImportReply, description = "The file's points are stored."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, description = "`too_large`: the file is over 32 MiB.", body = crate::error::openapi::Error),
        (status = 415, response = UnsupportedMediaType),
        CommonErrors,
    ),
)]
async fn import(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Json<ImportReply>> {
    user.require_dispatcher()?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM vehicles WHERE id = $1 AND organisation_id = $2)",
    )
    .bind(id)
    .bind(user.organisation_id)
    .fetch_one(&state.db)
    .await?;
    if !exists {
        return Err(AppError::NotFound("vehicle"));
    }
    let kind = FileKind::of(&headers)?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::TooLarge(format!(
                "an imported file is at most {} MiB",
                MAX_IMPORT_BODY / (1024 * 1024)
            ))
        } else {
            AppError::Malformed(r.body_text())
        }
    })?;
    let now = Utc::now();
    let points = match kind {
        FileKind::Gpx => parse_gpx(&body, now)?,
        FileKind::GeoJson => parse_geojson(&body, now)?,
    };
    let settings = settings::load(&state.db, user.organisation_id).await?;
    let reply = store(
        &state,
        user.organisation_id,
        id,
        points,
        &settings.filter,
        now,
    )
    .await?;
    state.segmenter.now();
    Ok(Json(reply))
}

#[derive(Clone, Copy)]
enum FileKind {
    Gpx,
    GeoJson,
}

impl FileKind {
    fn of(headers: &HeaderMap) -> AppResult<FileKind> {
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        match media.as_deref() {
            Some("application/gpx+xml" | "application/xml" | "text/xml") => Ok(FileKind::Gpx),
            Some("application/geo+json" | "application/json") => Ok(FileKind::GeoJson),
            _ => Err(AppError::UnsupportedMediaType(
                "expected Content-Type: application/gpx+xml, application/xml, application/geo+json or application/json",
            )),
        }
    }
}

/// The points of a file, valid, in file order; or every invalid one, by position.
fn collect(items: Vec<Result<NewPosition, String>>) -> AppResult<Vec<NewPosition>> {
    let total = items.iter().filter(|r| r.is_err()).count();
    if total > 0 {
        let listed = items
            .into_iter()
            .enumerate()
            .filter_map(|(index, r)| r.err().map(|message| PointError { index, message }))
            .take(MAX_LISTED)
            .collect();
        return Err(AppError::Points { total, listed });
    }
    if items.is_empty() {
        return Err(AppError::validation("", "the file holds no points"));
    }
    Ok(items.into_iter().flatten().collect())
}

/// A point's values as read, checked as live ingest checks them.
#[derive(Default)]
struct Fields {
    lat: Option<f64>,
    lon: Option<f64>,
    time: Option<DateTime<Utc>>,
    altitude: Option<f64>,
    speed: Option<f64>,
    heading: Option<f64>,
    accuracy: Option<f64>,
    battery: Option<f64>,
}

impl Fields {
    fn check(self, now: DateTime<Utc>) -> Result<NewPosition, String> {
        let p = NewPosition {
            lat: self.lat.ok_or("lat is missing")?,
            lon: self.lon.ok_or("lon is missing")?,
            recorded_at: to_micros(self.time.ok_or("time is missing")?),
            accuracy: self.accuracy,
            speed: self.speed,
            heading: self.heading,
            altitude: self.altitude,
            battery: self.battery,
            attributes: None,
        };
        p.validate(now).map_err(|e| e.to_string())?;
        Ok(p)
    }
}

/// An XML Schema `dateTime`: RFC 3339, or without a zone (GPX times are UTC).
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc()))
        .map_err(|_| format!("time {s:?} is not an RFC 3339 time such as 2026-01-31T12:00:00Z"))
}

fn parse_number(s: &str, name: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{name} {:?} is not a finite number", s.trim()))
}

/// A GPX track point's text as read.
#[derive(Default)]
struct GpxPoint {
    lat: Option<String>,
    lon: Option<String>,
    texts: HashMap<&'static str, String>,
}

/// The children of a track point (anywhere inside it, so in any extension) that are read.
const GPX_FIELDS: [&str; 6] = ["ele", "time", "speed", "course", "accuracy", "battery"];

impl GpxPoint {
    fn check(self, now: DateTime<Utc>) -> Result<NewPosition, String> {
        let number = |name: &str, v: Option<&String>| v.map(|v| parse_number(v, name)).transpose();
        let mut fields = Fields {
            lat: number("lat", self.lat.as_ref())?,
            lon: number("lon", self.lon.as_ref())?,
            altitude: number("ele", self.texts.get("ele"))?,
            speed: number("speed", self.texts.get("speed"))?,
            heading: number("course", self.texts.get("course"))?,
            accuracy: number("accuracy", self.texts.get("accuracy"))?,
            battery: number("battery", self.texts.get("battery"))?,
            ..Fields::default()
        };
        fields.time = self.texts.get("time").map(|t| parse_time(t)).transpose()?;
        fields.check(now)
    }
}

/// The track points of a GPX document, in document order.
fn parse_gpx(body: &[u8], now: DateTime<Utc>) -> AppResult<Vec<NewPosition>> {
    let text = std::str::from_utf8(body)
        .map_err(|e| AppError::Malformed(format!("the file is not UTF-8: {e}")))?;
    let mut reader = Reader::from_str(text);
    let mut items = Vec::new();
    let mut rooted = false;
    let mut point: Option<GpxPoint> = None;
    let mut field: Option<&'static str> = None;
    let mut depth = 0usize;
    let bad = |reader: &Reader<&[u8]>, e: &dyn std::fmt::Display| {
        AppError::Malformed(format!(
            "the file is not well-formed XML (at byte {}): {e}",
            reader.error_position()
        ))
    };
    loop {
        let event = reader.read_event().map_err(|e| bad(&reader, &e))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                depth += usize::from(!empty);
                let name = e.local_name();
                if !rooted {
                    if name.as_ref() != b"gpx" {
                        return Err(AppError::Malformed(
                            "the file is not GPX: its root element is not gpx".into(),
                        ));
                    }
                    rooted = true;
                    continue;
                }
                if name.as_ref() == b"trkpt" && point.is_none() {
                    let mut p = GpxPoint::default();
                    for attr in e.attributes() {
                        let attr = attr.map_err(|e| bad(&reader, &e))?;
                        let value = attr.unescape_value().map_err(|e| bad(&reader, &e))?;
                        match attr.key.local_name().as_ref() {
                            b"lat" => p.lat = Some(value.into_owned()),
                            b"lon" => p.lon = Some(value.into_owned()),
                            _ => {}
                        }
                    }
                    if empty {
                        items.push(p.check(now));
                    } else {
                        point = Some(p);
                    }
                } else if point.is_some() && !empty {
                    field = GPX_FIELDS
                        .into_iter()
                        .find(|f| f.as_bytes() == name.as_ref());
                }
            }
            Event::Text(ref t) => {
                if let (Some(p), Some(f)) = (point.as_mut(), field) {
                    let text = t.unescape().map_err(|e| bad(&reader, &e))?;
                    p.texts.entry(f).or_default().push_str(&text);
                }
            }
            Event::CData(ref t) => {
                if let (Some(p), Some(f)) = (point.as_mut(), field) {
                    let text = std::str::from_utf8(t).map_err(|e| bad(&reader, &e))?;
                    p.texts.entry(f).or_default().push_str(text);
                }
            }
            Event::End(ref e) => {
                depth = depth.saturating_sub(1);
                field = None;
                if e.local_name().as_ref() == b"trkpt" {
                    if let Some(p) = point.take() {
                        items.push(p.check(now));
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !rooted {
        return Err(AppError::Malformed("the file is empty".into()));
    }
    if depth > 0 {
        return Err(AppError::Malformed(
            "the file is not well-formed XML: it ends inside an element".into(),
        ));
    }
    collect(items)
}

/// What a GeoJSON file is read as: a FeatureCollection, or one Feature.
#[derive(Deserialize)]
struct GeoJsonFile {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    features: Vec<Feature>,
    geometry: Option<Geometry>,
    #[serde(default)]
    properties: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct Feature {
    geometry: Option<Geometry>,
    #[serde(default)]
    properties: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct Geometry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    coordinates: Value,
}

/// The points of a GeoJSON file: each Point feature is one (its time in `time`, `recorded_at`
/// or `timestamp`), each LineString (or MultiLineString) vertex one (its time in `times` or
/// `coordTimes`), in file order.
fn parse_geojson(body: &[u8], now: DateTime<Utc>) -> AppResult<Vec<NewPosition>> {
    let file: GeoJsonFile = serde_json::from_slice(body)
        .map_err(|e| AppError::Malformed(format!("the file is not GeoJSON: {e}")))?;
    let features = match file.kind.as_str() {
        "FeatureCollection" => file.features,
        "Feature" => vec![Feature {
            geometry: file.geometry,
            properties: file.properties,
        }],
        other => {
            return Err(AppError::Malformed(format!(
                "a GeoJSON file to import is a FeatureCollection or a Feature, not {other:?}"
            )))
        }
    };
    let empty = serde_json::Map::new();
    let mut items = Vec::new();
    for feature in features {
        let props = feature.properties.as_ref().unwrap_or(&empty);
        let Some(geometry) = feature.geometry else {
            items.push(Err("the feature has no geometry".to_owned()));
            continue;
        };
        match geometry.kind.as_str() {
            "Point" => items.push(json_point(&geometry.coordinates, props, now)),
            "LineString" => {
                let times = props.get("times").or_else(|| props.get("coordTimes"));
                line_points(&geometry.coordinates, times, now, &mut items);
            }
            "MultiLineString" => {
                let lines = geometry.coordinates.as_array().map(Vec::as_slice);
                let times = props.get("times").or_else(|| props.get("coordTimes"));
                match lines {
                    Some(lines) => {
                        for (i, line) in lines.iter().enumerate() {
                            let times = times.and_then(|t| t.get(i));
                            line_points(line, times, now, &mut items);
                        }
                    }
                    None => items.push(Err("coordinates must be an array of lines".into())),
                }
            }
            other => items.push(Err(format!(
                "a {other} has no times: import Points with a time, or LineStrings with times"
            ))),
        }
    }
    collect(items)
}

/// Longitude, latitude and (if given) altitude of a GeoJSON position.
fn position(coords: &Value) -> Result<(f64, f64, Option<f64>), String> {
    let Some(c) = coords.as_array().filter(|c| (2..=3).contains(&c.len())) else {
        return Err("coordinates must be [lon, lat] or [lon, lat, altitude]".into());
    };
    let n = |i: usize, name: &str| {
        number_field(c.get(i), name)
            .map_err(|e| e.to_string())
            .and_then(|v| v.ok_or_else(|| format!("{name} must be a number")))
    };
    let altitude = match c.get(2) {
        Some(_) => Some(n(2, "altitude")?),
        None => None,
    };
    Ok((n(0, "lon")?, n(1, "lat")?, altitude))
}

fn json_time(v: Option<&Value>) -> Result<Option<DateTime<Utc>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_time(s).map(Some),
        Some(_) => Err("time must be an RFC 3339 string".into()),
    }
}

fn json_point(
    coords: &Value,
    props: &serde_json::Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<NewPosition, String> {
    let (lon, lat, altitude) = position(coords)?;
    let number = |key: &str| number_field(props.get(key), key).map_err(|e| e.to_string());
    let time = ["time", "recorded_at", "timestamp"]
        .into_iter()
        .find_map(|k| props.get(k).filter(|v| !v.is_null()));
    Fields {
        lat: Some(lat),
        lon: Some(lon),
        time: json_time(time)?,
        altitude: match number("altitude")? {
            Some(a) => Some(a),
            None => altitude,
        },
        speed: number("speed")?,
        heading: match number("heading")? {
            Some(h) => Some(h),
            None => number("course")?,
        },
        accuracy: number("accuracy")?,
        battery: number("battery")?,
    }
    .check(now)
}

/// One point per vertex of a line, the time of each from the parallel `times` array.
fn line_points(
    coords: &Value,
    times: Option<&Value>,
    now: DateTime<Utc>,
    items: &mut Vec<Result<NewPosition, String>>,
) {
    let Some(vertices) = coords.as_array() else {
        items.push(Err("coordinates must be an array of positions".into()));
        return;
    };
    let times = times.and_then(Value::as_array);
    for (i, vertex) in vertices.iter().enumerate() {
        let point = position(vertex).and_then(|(lon, lat, altitude)| {
            let time = match times {
                None => return Err("the line has no times (properties.times or coordTimes)".into()),
                Some(t) => json_time(t.get(i))?,
            };
            Fields {
                lat: Some(lat),
                lon: Some(lon),
                time,
                altitude,
                ..Fields::default()
            }
            .check(now)
        });
        items.push(point);
    }
}

/// Judges the points (sorted by time, the file's repeated times dropped) and stores them, in one
/// transaction that also has the vehicle's trips and stops detected again.
async fn store(
    state: &AppState,
    organisation_id: i64,
    vehicle_id: i64,
    mut points: Vec<NewPosition>,
    filter: &FilterSettings,
    now: DateTime<Utc>,
) -> AppResult<ImportReply> {
    let total = points.len();
    points.sort_by_key(|p| p.recorded_at);
    points.dedup_by_key(|p| p.recorded_at);
    let from = points.first().expect("a file has points").recorded_at;
    let to = points.last().expect("a file has points").recorded_at;
    // History is old by nature; everything else is judged as live ingest judges it.
    let filter = FilterSettings {
        max_age_h: None,
        ..*filter
    };
    let mut last: Option<LastFix> = None;
    let reasons: Vec<Option<FilterReason>> = points
        .iter()
        .map(|p| {
            let reason = judge(p, last.as_ref(), now, &filter);
            if reason.is_none() {
                last = Some(LastFix {
                    recorded_at: p.recorded_at,
                    lat: p.lat,
                    lon: p.lon,
                });
            }
            reason
        })
        .collect();
    let mut tx = state.db.begin().await?;
    let (mut imported, mut filtered) = (0usize, 0usize);
    let mut earliest: Option<DateTime<Utc>> = None;
    for (chunk, reasons) in points
        .chunks(INSERT_CHUNK)
        .zip(reasons.chunks(INSERT_CHUNK))
    {
        let column = |f: fn(&NewPosition) -> Option<f64>| -> Vec<Option<f32>> {
            chunk.iter().map(|p| f(p).map(|v| v as f32)).collect()
        };
        let (stored, marked, first): (i64, i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "WITH inserted AS (
                 INSERT INTO positions (organisation_id, vehicle_id, shipment_id, seq, recorded_at,
                     received_at, point, accuracy, speed, heading, altitude, battery, late,
                     filter_reason)
                 SELECT $1, $2, NULL, 0, r, now(), ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography,
                     acc, spd, hdg, alt, bat, true, reason
                 FROM UNNEST($3::timestamptz[], $4::float8[], $5::float8[], $6::float4[],
                     $7::float4[], $8::float4[], $9::float4[], $10::float4[], $11::text[])
                     AS t(r, lat, lon, acc, spd, hdg, alt, bat, reason)
                 ON CONFLICT DO NOTHING
                 RETURNING recorded_at, filter_reason
             )
             SELECT count(*), count(filter_reason),
                    min(recorded_at) FILTER (WHERE filter_reason IS NULL)
             FROM inserted",
        )
        .bind(organisation_id)
        .bind(vehicle_id)
        .bind(chunk.iter().map(|p| p.recorded_at).collect::<Vec<_>>())
        .bind(chunk.iter().map(|p| p.lat).collect::<Vec<_>>())
        .bind(chunk.iter().map(|p| p.lon).collect::<Vec<_>>())
        .bind(column(|p| p.accuracy))
        .bind(column(|p| p.speed))
        .bind(column(|p| p.heading))
        .bind(column(|p| p.altitude))
        .bind(column(|p| p.battery))
        .bind(reasons.to_vec())
        .fetch_one(&mut *tx)
        .await?;
        imported += stored as usize;
        filtered += marked as usize;
        earliest = match (earliest, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    if let Some(earliest) = earliest {
        segmenter::mark(&mut tx, organisation_id, vehicle_id, earliest).await?;
    }
    tx.commit().await?;
    Ok(ImportReply {
        imported,
        duplicates: total - imported,
        filtered,
        from,
        to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    #[test]
    fn gpx_points_are_read_with_their_extensions() {
        let gpx = br#"<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"
            xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v2" xmlns:wm="urn:waymark:gpx:1">
            <trk><name>x &amp; y</name><trkseg>
            <trkpt lat="48.1" lon="11.5"><ele>520.5</ele><time>2024-05-01T10:00:00.250Z</time>
              <extensions><gpxtpx:TrackPointExtension><gpxtpx:speed>8.5</gpxtpx:speed><gpxtpx:course>90</gpxtpx:course></gpxtpx:TrackPointExtension><wm:accuracy>5</wm:accuracy><wm:battery>80</wm:battery></extensions></trkpt>
            <trkpt lat="48.2" lon="11.6"><time>2024-05-01T10:00:01</time></trkpt>
            </trkseg></trk></gpx>"#;
        let points = parse_gpx(gpx, now()).unwrap();
        assert_eq!(points.len(), 2);
        let p = &points[0];
        assert_eq!((p.lat, p.lon, p.altitude), (48.1, 11.5, Some(520.5)));
        assert_eq!((p.speed, p.heading), (Some(8.5), Some(90.0)));
        assert_eq!((p.accuracy, p.battery), (Some(5.0), Some(80.0)));
        assert_eq!(p.recorded_at.to_rfc3339(), "2024-05-01T10:00:00.250+00:00");
        assert_eq!(
            points[1].recorded_at.to_rfc3339(),
            "2024-05-01T10:00:01+00:00"
        );
    }

    #[test]
    fn every_bad_point_is_named_by_its_index() {
        let gpx = br#"<gpx><trk><trkseg>
            <trkpt lat="48.1" lon="11.5"><time>2024-05-01T10:00:00Z</time></trkpt>
            <trkpt lat="95" lon="11.5"><time>2024-05-01T10:00:01Z</time></trkpt>
            <trkpt lat="48.1" lon="11.5"/>
            <trkpt lat="x" lon="11.5"><time>2024-05-01T10:00:03Z</time></trkpt>
            </trkseg></trk></gpx>"#;
        let Err(AppError::Points { total, listed }) = parse_gpx(gpx, now()) else {
            panic!("bad points are refused");
        };
        assert_eq!(total, 3);
        let indices: Vec<usize> = listed.iter().map(|p| p.index).collect();
        assert_eq!(indices, [1, 2, 3]);
        assert!(listed[0].message.contains("lat"), "{}", listed[0].message);
        assert!(listed[1].message.contains("time"), "{}", listed[1].message);
    }

    #[test]
    fn broken_xml_and_other_documents_are_malformed() {
        for bad in [
            &b"<gpx><trk>"[..],
            b"<kml></kml>",
            b"",
            b"<gpx><trkpt lat='1' lon='2'><time>&bogus;</time></trkpt></gpx>",
        ] {
            let e = parse_gpx(bad, now()).unwrap_err();
            assert!(matches!(e, AppError::Malformed(_)), "{e:?}");
        }
    }

    #[test]
    fn geojson_points_and_lines_are_read() {
        let file = br#"{"type":"FeatureCollection","features":[
            {"type":"Feature","geometry":{"type":"Point","coordinates":[11.5,48.1,500]},
             "properties":{"time":"2024-05-01T10:00:00Z","speed":3.5,"heading":null,"battery":50}},
            {"type":"Feature","geometry":{"type":"LineString","coordinates":[[11.6,48.2],[11.7,48.3]]},
             "properties":{"coordTimes":["2024-05-01T10:00:01Z","2024-05-01T10:00:02Z"]}}]}"#;
        let points = parse_geojson(file, now()).unwrap();
        assert_eq!(points.len(), 3);
        assert_eq!(
            (points[0].lon, points[0].lat, points[0].altitude),
            (11.5, 48.1, Some(500.0))
        );
        assert_eq!(
            (points[0].speed, points[0].battery),
            (Some(3.5), Some(50.0))
        );
        assert_eq!(points[2].lon, 11.7);
        let untimed = br#"{"type":"Feature","geometry":{"type":"LineString","coordinates":[[11.6,48.2]]},"properties":{}}"#;
        assert!(matches!(
            parse_geojson(untimed, now()),
            Err(AppError::Points { total: 1, .. })
        ));
    }
}
