//! A vehicle's history for other tools: its fixes between two times as GPX, GeoJSON, KML or CSV,
//! written to the response as they are read, so that a year of fixes (millions) takes no more
//! memory than a few chunks. Fixes the filter marked are never part of it.
//!
//! The fixes are read once, in a read-only snapshot. KML, which lists a track's times, places and
//! values apart, holds a few thousand fixes at a time and writes them as one `gx:Track` of a
//! `gx:MultiTrack`.
pub mod gpx;

use std::fmt::Write;

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use chrono::{DateTime, Datelike, Duration, SecondsFormat, Utc};
use futures_util::{stream, TryStreamExt};
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

use self::gpx::TrackPoint;
use crate::{
    auth::CurrentUser,
    error::openapi::{BadRequest, CommonErrors, Forbidden, Id, NotFound},
    error::{ApiPath, ApiQuery, AppError, AppResult},
    settings, AppState,
};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/vehicles/{id}/export", get(export))
}

/// The longest time range one export covers.
pub const MAX_RANGE_DAYS: i64 = 366;
/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 64 * 1024;
/// Chunks waiting for a slow client before reading pauses.
const CHUNKS_AHEAD: usize = 4;

/// The formats a history is exported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// GPX 1.1: one track, a new segment after each gap in the data longer than the
    /// organisation's `trips.max_gap_s`; speed and course in Garmin's `TrackPointExtension`,
    /// accuracy and battery in Waymark's own extension elements.
    Gpx,
    /// A FeatureCollection of Point features, each with `time`, `speed`, `heading`, `altitude`,
    /// `accuracy` and `battery` properties.
    Geojson,
    /// KML 2.2: one placemark with a `gx:MultiTrack` of `gx:Track`s of up to 1000 fixes each
    /// (times, places, and speed, heading, accuracy and battery as `gx:SimpleArrayData`).
    Kml,
    /// CSV with a header row; times in UTC (`recorded_at`) and in the organisation's time zone
    /// (`local_time`).
    Csv,
}

impl ExportFormat {
    fn parse(s: &str) -> Option<ExportFormat> {
        Some(match s {
            "gpx" => ExportFormat::Gpx,
            "geojson" => ExportFormat::Geojson,
            "kml" => ExportFormat::Kml,
            "csv" => ExportFormat::Csv,
            _ => return None,
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Gpx => gpx::CONTENT_TYPE,
            ExportFormat::Geojson => "application/geo+json",
            ExportFormat::Kml => "application/vnd.google-earth.kml+xml",
            // Times and numbers only: plain ASCII, as `text/csv` is by default.
            ExportFormat::Csv => "text/csv",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Gpx => "gpx",
            ExportFormat::Geojson => "geojson",
            ExportFormat::Kml => "kml",
            ExportFormat::Csv => "csv",
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// Fixes recorded at or after this time (RFC 3339).
    from: DateTime<Utc>,
    /// Fixes recorded before this time (RFC 3339); at most 366 days after `from`.
    to: DateTime<Utc>,
    /// The file format.
    #[param(value_type = Option<ExportFormat>, inline, default = "gpx")]
    format: Option<String>,
}

/// The header of the CSV export.
pub const CSV_HEADER: &str =
    "recorded_at,lat,lon,speed_mps,heading,altitude_m,accuracy_m,battery,local_time\n";

#[utoipa::path(
    get,
    path = "/vehicles/{id}/export",
    operation_id = "exportVehicleHistory",
    summary = "Export a vehicle's history",
    description = "Dispatchers and admins. The vehicle's fixes recorded in `[from, to)` (at most 366 days), oldest first, as a file download (`Content-Disposition: attachment`), streamed as it is read. Fixes the filter marked are left out. Times are RFC 3339 in UTC with every stored digit; the CSV adds each time in the organisation's time zone (`reports.time_zone`).",
    tag = "vehicles",
    params(Id, ExportQuery),
    responses(
        (status = 200, description = "The history in the format asked for.", headers(
            ("Content-Disposition" = String, description = "`attachment; filename=\"<vehicle name>-<from>-<to>.<ext>\"`"),
        ), content(
            (String = "application/gpx+xml"),
            (String = "application/geo+json"),
            (String = "application/vnd.google-earth.kml+xml"),
            (String = "text/csv"),
        )),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
)]
async fn export(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> AppResult<Response> {
    user.require_dispatcher()?;
    let format = match q.format.as_deref() {
        None => ExportFormat::Gpx,
        Some(f) => ExportFormat::parse(f).ok_or_else(|| {
            AppError::validation("format", "format must be gpx, geojson, kml or csv")
        })?,
    };
    for (field, t) in [("from", q.from), ("to", q.to)] {
        if !(1..=9999).contains(&t.year()) {
            return Err(AppError::validation(
                field,
                format!("{field} must be a time in the years 1 to 9999"),
            ));
        }
    }
    if q.from >= q.to {
        return Err(AppError::validation("to", "to must be after from"));
    }
    if q.to - q.from > Duration::days(MAX_RANGE_DAYS) {
        return Err(AppError::validation(
            "to",
            format!("an export covers at most {MAX_RANGE_DAYS} days"),
        ));
    }
    let name: String =
        sqlx::query_scalar("SELECT name FROM vehicles WHERE id = $1 AND organisation_id = $2")
            .bind(id)
            .bind(user.organisation_id)
            .fetch_optional(&state.db)
            .await?
            .ok_or(AppError::NotFound("vehicle"))?;
    let settings = settings::load(&state.db, user.organisation_id).await?;
    let filename = filename(&name, q.from, q.to, format);
    let job = Job {
        organisation_id: user.organisation_id,
        vehicle_id: id,
        name,
        from: q.from,
        to: q.to,
        format,
        max_gap: Duration::seconds(settings.trips.max_gap_s.into()),
        tz: settings.reports.tz(),
    };
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    state
        .tracker
        .spawn(produce(state.db.clone(), job, tx, state.cancel.clone()));
    let body = Body::from_stream(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response())
}

/// `<vehicle name>-<from>-<to>.<ext>`, of characters safe in any file system and header: the
/// name's letters, digits, `-`, `_` and `.`, anything else as `_`.
fn filename(name: &str, from: DateTime<Utc>, to: DateTime<Utc>, format: ExportFormat) -> String {
    let mut safe: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    safe = safe.trim_matches(|c| c == '.' || c == '_').to_owned();
    if safe.is_empty() {
        safe = "vehicle".into();
    }
    let stamp = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ");
    format!(
        "{safe}-{}-{}.{}",
        stamp(from),
        stamp(to),
        format.extension()
    )
}

/// What one export writes.
struct Job {
    organisation_id: i64,
    vehicle_id: i64,
    name: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    format: ExportFormat,
    max_gap: Duration,
    tz: chrono_tz::Tz,
}

/// Why writing stopped early.
enum Stop {
    /// The client went away: nothing more to do.
    Gone,
    /// The server is shutting down.
    Shutdown,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Stop::Database(e)
    }
}

/// Text gathered into chunks and handed to the response body.
struct Sink {
    buf: String,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Sink {
    /// Sends the text gathered once it makes a chunk; waits while the client is behind.
    async fn flush_full(&mut self) -> Result<(), Stop> {
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            String::with_capacity(CHUNK + 1024),
        ));
        self.tx.send(Ok(chunk)).await.map_err(|_| Stop::Gone)
    }
}

async fn produce(
    db: PgPool,
    job: Job,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    cancel: CancellationToken,
) {
    let mut sink = Sink {
        buf: String::with_capacity(CHUNK + 1024),
        tx,
    };
    let result = tokio::select! {
        r = write(&db, &job, &mut sink) => r,
        _ = cancel.cancelled() => Err(Stop::Shutdown),
    };
    let reason = match result {
        Ok(()) | Err(Stop::Gone) => return,
        Err(Stop::Shutdown) => "the server is shutting down",
        Err(Stop::Database(e)) => {
            tracing::error!(error = %e, vehicle_id = job.vehicle_id, "exporting a vehicle's history");
            "the export failed"
        }
    };
    // The response is cut short: the client sees a broken download, never a file that looks
    // complete.
    let _ = sink.tx.send(Err(std::io::Error::other(reason))).await;
}

async fn write(db: &PgPool, job: &Job, sink: &mut Sink) -> Result<(), Stop> {
    let mut tx = db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    match job.format {
        ExportFormat::Gpx => {
            gpx::begin(&mut sink.buf, &job.name);
            gpx::open_segment(&mut sink.buf);
            let mut last: Option<DateTime<Utc>> = None;
            pass(&mut tx, job, sink, |out, p| {
                if last.is_some_and(|l| p.recorded_at - l > job.max_gap) {
                    gpx::close_segment(out);
                    gpx::open_segment(out);
                }
                last = Some(p.recorded_at);
                gpx::point(out, p);
            })
            .await?;
            gpx::close_segment(&mut sink.buf);
            gpx::end(&mut sink.buf);
        }
        ExportFormat::Geojson => {
            sink.buf
                .push_str("{\"type\":\"FeatureCollection\",\"features\":[\n");
            let mut first = true;
            pass(&mut tx, job, sink, |out, p| {
                if !std::mem::take(&mut first) {
                    out.push_str(",\n");
                }
                geojson_feature(out, p);
            })
            .await?;
            sink.buf.push_str("\n]}\n");
        }
        ExportFormat::Kml => {
            let name = gpx::escape(&job.name);
            let _ = write!(
                sink.buf,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                 <kml xmlns=\"http://www.opengis.net/kml/2.2\" xmlns:gx=\"http://www.google.com/kml/ext/2.2\">\n\
                 <Document><name>{name}</name>\n<Schema id=\"fix\">"
            );
            for (field, _) in KML_VALUES {
                let _ = write!(
                    sink.buf,
                    "<gx:SimpleArrayField name=\"{field}\" type=\"float\"/>"
                );
            }
            // One pass: the fixes go out in tracks of a few thousand, each with its times, places
            // and values listed apart as `gx:Track` wants them, joined into one line.
            let _ = write!(
                sink.buf,
                "</Schema>\n<Placemark><name>{name}</name><gx:MultiTrack>\n\
                 <gx:interpolate>1</gx:interpolate>\n"
            );
            let mut track: Vec<TrackPoint> = Vec::with_capacity(KML_TRACK);
            pass(&mut tx, job, sink, |out, p| {
                track.push(*p);
                if track.len() == KML_TRACK {
                    kml_track(out, &track);
                    track.clear();
                }
            })
            .await?;
            if !track.is_empty() {
                kml_track(&mut sink.buf, &track);
            }
            sink.buf
                .push_str("</gx:MultiTrack></Placemark></Document>\n</kml>\n");
        }
        ExportFormat::Csv => {
            sink.buf.push_str(CSV_HEADER);
            pass(&mut tx, job, sink, |out, p| {
                let _ = write!(out, "{},{},{},", gpx::time(p.recorded_at), p.lat, p.lon);
                for v in [p.speed, p.heading, p.altitude, p.accuracy, p.battery] {
                    if let Some(v) = v {
                        let _ = write!(out, "{v}");
                    }
                    out.push(',');
                }
                let local = p.recorded_at.with_timezone(&job.tz);
                let _ = writeln!(
                    out,
                    "{}",
                    local.to_rfc3339_opts(SecondsFormat::AutoSi, false)
                );
            })
            .await?;
        }
    }
    tx.commit().await?;
    sink.flush().await
}

/// Fixes per `gx:Track` of a KML export: what it holds in memory at once.
const KML_TRACK: usize = 1000;

/// One `gx:Track`: its times, then its places, then each value's list.
fn kml_track(out: &mut String, track: &[TrackPoint]) {
    out.push_str("<gx:Track>\n");
    for p in track {
        let _ = writeln!(out, "<when>{}</when>", gpx::time(p.recorded_at));
    }
    for p in track {
        let _ = writeln!(
            out,
            "<gx:coord>{} {} {}</gx:coord>",
            p.lon,
            p.lat,
            p.altitude.unwrap_or(0.0)
        );
    }
    out.push_str("<ExtendedData><SchemaData schemaUrl=\"#fix\">\n");
    for (field, value) in KML_VALUES {
        let _ = writeln!(out, "<gx:SimpleArrayData name=\"{field}\">");
        for p in track {
            match value(p) {
                Some(v) => {
                    let _ = writeln!(out, "<gx:value>{v}</gx:value>");
                }
                None => out.push_str("<gx:value/>\n"),
            }
        }
        out.push_str("</gx:SimpleArrayData>\n");
    }
    out.push_str("</SchemaData></ExtendedData>\n</gx:Track>\n");
}

/// The values a KML export keeps besides time and place.
type KmlValue = fn(&TrackPoint) -> Option<f32>;
const KML_VALUES: [(&str, KmlValue); 4] = [
    ("speed", |p| p.speed),
    ("heading", |p| p.heading),
    ("accuracy", |p| p.accuracy),
    ("battery", |p| p.battery),
];

/// One GeoJSON Point feature, with every value as a property (null when unknown).
fn geojson_feature(out: &mut String, p: &TrackPoint) {
    let _ = write!(
        out,
        "{{\"type\":\"Feature\",\"geometry\":{{\"type\":\"Point\",\"coordinates\":[{},{}]}},\"properties\":{{\"time\":\"{}\"",
        p.lon,
        p.lat,
        gpx::time(p.recorded_at)
    );
    for (key, v) in [
        ("speed", p.speed),
        ("heading", p.heading),
        ("altitude", p.altitude),
        ("accuracy", p.accuracy),
        ("battery", p.battery),
    ] {
        match v {
            Some(v) => {
                let _ = write!(out, ",\"{key}\":{v}");
            }
            None => {
                let _ = write!(out, ",\"{key}\":null");
            }
        }
    }
    out.push_str("}}");
}

/// Goes over the job's fixes once, oldest first, writing each with `f` and sending full chunks.
async fn pass(
    conn: &mut PgConnection,
    job: &Job,
    sink: &mut Sink,
    mut f: impl FnMut(&mut String, &TrackPoint),
) -> Result<(), Stop> {
    let mut rows = sqlx::query_as::<_, TrackPoint>(
        "SELECT recorded_at, ST_Y(point::geometry) AS lat, ST_X(point::geometry) AS lon,
                altitude, speed, heading, accuracy, battery
         FROM positions
         WHERE vehicle_id = $1 AND organisation_id = $2 AND recorded_at >= $3 AND recorded_at < $4
           AND filter_reason IS NULL
         ORDER BY recorded_at",
    )
    .bind(job.vehicle_id)
    .bind(job.organisation_id)
    .bind(job.from)
    .bind(job.to)
    .fetch(&mut *conn);
    while let Some(p) = rows.try_next().await? {
        f(&mut sink.buf, &p);
        sink.flush_full().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_only_safe_characters() {
        let from = DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let to = DateTime::parse_from_rfc3339("2026-03-02T12:30:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            filename("Van 1 \"Süd\"/../x", from, to, ExportFormat::Csv),
            "Van_1__S_d__.._x-20260301T000000Z-20260302T123000Z.csv"
        );
        assert_eq!(
            filename("..", from, to, ExportFormat::Gpx),
            "vehicle-20260301T000000Z-20260302T123000Z.gpx"
        );
    }
}
