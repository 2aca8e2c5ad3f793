//! Reports over a range of time: trips, stops, daily totals per vehicle, geofence visits and
//! arrived shipments, as JSON (raw SI values and UTC instants) or CSV (the organisation's time
//! zone and distance unit, for a spreadsheet).
//!
//! Trips, stops and the daily totals read the `segments` the segmenter keeps and the `alerts`,
//! never the positions log, so a month of a whole fleet is a few thousand rows: a vehicle's
//! segments follow one another without overlapping, so those overlapping the range are the ones
//! starting in it and at most one starting before it (read by index, newest first). Daily totals
//! are computed in SQL: a segment spanning the organisation's midnight counts toward each day in
//! proportion to its time there, distance too.
use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{DistanceUnit, ReportSettings, OVERLAPPING};
use crate::{
    auth::CurrentUser,
    error::openapi::{BadRequest, CommonErrors, Forbidden},
    error::{ApiQuery, AppError, AppResult},
    settings, AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/reports/trips", get(trips))
        .route("/reports/stops", get(stops))
        .route("/reports/daily", get(daily))
        .route("/reports/geofence-visits", get(geofence_visits))
        .route("/reports/shipments", get(shipments))
}

/// The longest range one report covers.
const MAX_RANGE_DAYS: i64 = 366;
/// The most vehicles one report names.
const MAX_VEHICLES: usize = 1000;
/// The most rows one report holds: more would be a download nobody reads; narrow it instead.
const MAX_ROWS: i64 = 100_000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// Comma-separated ids of the organisation's vehicles (`3,7`); absent: every vehicle of the
    /// organisation, retired ones included.
    #[param(example = "3,7")]
    vehicle_ids: Option<String>,
    /// Start of the range: an RFC 3339 instant, or a date `YYYY-MM-DD` (its midnight in the
    /// organisation's time zone).
    #[param(example = "2026-03-01")]
    from: String,
    /// End of the range: an RFC 3339 instant (not included), or a date `YYYY-MM-DD` (included:
    /// the range ends at the next midnight in the organisation's time zone). At most 366 days
    /// after `from`.
    #[param(example = "2026-03-07")]
    to: String,
    /// `json` (default) or `csv`: a download with a header row, times in the organisation's time
    /// zone and distances in its unit.
    #[param(value_type = Option<schema::ReportFormat>, inline, default = "json")]
    format: Option<String>,
}

/// A vehicle a report covers.
struct Vehicle {
    id: i64,
    name: String,
}

/// A report request, checked: the organisation's vehicles it covers, its range, and how it
/// speaks.
struct Request {
    organisation_id: i64,
    vehicles: Vec<Vehicle>,
    /// The ids asked for; none: the whole organisation (shipments without a vehicle included).
    asked: Option<Vec<i64>>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    settings: ReportSettings,
    csv: bool,
}

impl Request {
    async fn check(state: &AppState, user: &CurrentUser, q: ReportQuery) -> AppResult<Request> {
        user.require_dispatcher()?;
        let csv = match q.format.as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(_) => return Err(AppError::validation("format", "format must be json or csv")),
        };
        let asked = q.vehicle_ids.as_deref().map(vehicle_ids).transpose()?;
        let settings = settings::load(&state.db, user.organisation_id)
            .await?
            .reports;
        let tz = settings.tz();
        let from = instant("from", &q.from, tz, false)?;
        let to = instant("to", &q.to, tz, true)?;
        if to <= from {
            return Err(AppError::validation("to", "to must be after from"));
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(AppError::validation(
                "to",
                "a report covers at most 366 days",
            ));
        }
        let vehicles: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, name FROM vehicles
             WHERE organisation_id = $1 AND ($2::bigint[] IS NULL OR id = ANY($2))
             ORDER BY name, id",
        )
        .bind(user.organisation_id)
        .bind(&asked)
        .fetch_all(&state.db)
        .await?;
        if let Some(asked) = &asked {
            // Another organisation's vehicle is as unknown as one that never was.
            if let Some(missing) = asked
                .iter()
                .find(|id| !vehicles.iter().any(|v| v.0 == **id))
            {
                return Err(AppError::validation(
                    "vehicle_ids",
                    format!("vehicle {missing} is not one of the organisation's"),
                ));
            }
        }
        Ok(Request {
            organisation_id: user.organisation_id,
            vehicles: vehicles
                .into_iter()
                .map(|(id, name)| Vehicle { id, name })
                .collect(),
            asked,
            from,
            to,
            settings,
            csv,
        })
    }

    fn ids(&self) -> Vec<i64> {
        self.vehicles.iter().map(|v| v.id).collect()
    }

    fn name(&self, id: i64) -> String {
        self.vehicles
            .iter()
            .find(|v| v.id == id)
            .map(|v| v.name.clone())
            .unwrap_or_default()
    }

    /// The place of `id` in the report's order of vehicles (by name).
    fn rank(&self, id: i64) -> usize {
        self.vehicles
            .iter()
            .position(|v| v.id == id)
            .unwrap_or(usize::MAX)
    }

    /// The answer: JSON with `rows` and `totals`, or the CSV `table` as a download named after
    /// the report and its range.
    fn answer<R: Serialize, T: Serialize>(
        &self,
        report: &str,
        rows: Vec<R>,
        totals: T,
        table: impl FnOnce(&[R], &Units) -> Table,
    ) -> AppResult<Response> {
        if !self.csv {
            return Ok(Json(Report {
                time_zone: self.settings.time_zone.clone(),
                distance_unit: self.settings.distance_unit,
                from: self.from,
                to: self.to,
                rows,
                totals,
            })
            .into_response());
        }
        let units = Units::of(&self.settings);
        let body = table(&rows, &units).write()?;
        let tz = self.settings.tz();
        let last_day = (self.to - Duration::milliseconds(1)).with_timezone(&tz);
        let filename = format!(
            "{report}-{}-{}.csv",
            self.from.with_timezone(&tz).format("%Y-%m-%d"),
            last_day.format("%Y-%m-%d")
        );
        Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{filename}\""),
                ),
            ],
            body,
        )
            .into_response())
    }
}

/// `vehicle_ids` as ids, each once.
fn vehicle_ids(list: &str) -> AppResult<Vec<i64>> {
    let bad = || {
        AppError::validation(
            "vehicle_ids",
            "vehicle_ids must be vehicle ids separated by commas, such as 3,7",
        )
    };
    let mut ids = Vec::new();
    for part in list.split(',') {
        let id: i64 = part.trim().parse().map_err(|_| bad())?;
        if id < 1 {
            return Err(bad());
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.len() > MAX_VEHICLES {
        return Err(AppError::validation(
            "vehicle_ids",
            "a report names at most 1000 vehicles",
        ));
    }
    Ok(ids)
}

/// `value` as an instant: RFC 3339, or a date's midnight in `tz` (the next day's for the end of
/// a range, so that the date is included).
fn instant(field: &str, value: &str, tz: chrono_tz::Tz, end: bool) -> AppResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| if end { d.succ_opt() } else { Some(d) })
        .ok_or_else(|| {
            AppError::validation(
                field,
                format!("{field} must be an RFC 3339 instant or a date YYYY-MM-DD"),
            )
        })?;
    Ok(midnight(date, tz))
}

/// When `date` begins in `tz`: its midnight, or where a clock change skips midnight, the first
/// moment of the day.
fn midnight(date: NaiveDate, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let local = date.and_time(NaiveTime::MIN);
    (0..=3)
        .find_map(|h| {
            tz.from_local_datetime(&(local + Duration::hours(h)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| local.and_utc())
}

/// Every report's JSON: the range and settings it was made with, its rows and their totals.
#[derive(Serialize)]
struct Report<R, T> {
    time_zone: String,
    distance_unit: DistanceUnit,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rows: Vec<R>,
    totals: T,
}

/// A place, in degrees (WGS 84).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
struct LatLon {
    lat: f64,
    lon: f64,
}

/// How the CSV speaks: times in the organisation's zone, distances and speeds in its unit.
struct Units {
    tz: chrono_tz::Tz,
    metres: f64,
    distance: &'static str,
    speed: &'static str,
}

impl Units {
    fn of(settings: &ReportSettings) -> Units {
        let (distance, speed) = match settings.distance_unit {
            DistanceUnit::Km => ("km", "kmh"),
            DistanceUnit::Mi => ("mi", "mph"),
        };
        Units {
            tz: settings.tz(),
            metres: settings.distance_unit.metres(),
            distance,
            speed,
        }
    }

    fn time(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }

    fn maybe_time(&self, t: Option<DateTime<Utc>>) -> String {
        t.map(|t| self.time(t)).unwrap_or_default()
    }

    fn distance(&self, metres: f64) -> String {
        format!("{:.3}", metres / self.metres)
    }

    fn speed(&self, mps: Option<f64>) -> String {
        mps.map(|s| format!("{:.1}", s * 3600.0 / self.metres))
            .unwrap_or_default()
    }

    /// `distance_km`, `max_speed_mph`: a column named with its unit.
    fn distance_column(&self, name: &str) -> String {
        format!("{name}_{}", self.distance)
    }

    fn speed_column(&self, name: &str) -> String {
        format!("{name}_{}", self.speed)
    }
}

fn seconds(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.0}")).unwrap_or_default()
}

fn coordinate(degrees: f64) -> String {
    format!("{degrees:.6}")
}

/// A CSV download: a header row and the rows, written by the `csv` crate (quoting, escaping).
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    fn write(self) -> AppResult<Vec<u8>> {
        let mut out = csv::Writer::from_writer(Vec::new());
        let written: Result<(), csv::Error> = std::iter::once(&self.header)
            .chain(&self.rows)
            .try_for_each(|r| out.write_record(r));
        written.map_err(|e| anyhow::anyhow!("writing a CSV report: {e}"))?;
        out.into_inner()
            .map_err(|e| anyhow::anyhow!("writing a CSV report: {e}").into())
    }
}

fn too_many() -> AppError {
    AppError::validation(
        "to",
        format!(
            "the report would hold more than {MAX_ROWS} rows: choose fewer vehicles or a shorter range"
        ),
    )
}

/// A read-only transaction for one report query, without JIT compilation: PostgreSQL takes the
/// day-splitting for an expensive query (it cannot know that most segments lie within one day)
/// and would spend a second compiling a plan that runs in a fraction of that.
async fn reading(db: &sqlx::PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = db.begin().await?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    Ok(tx)
}

/// A trip or stop as reports read it.
#[derive(sqlx::FromRow)]
struct SegmentRow {
    id: i64,
    vehicle_id: i64,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    closed: bool,
    start_lat: f64,
    start_lon: f64,
    end_lat: f64,
    end_lon: f64,
    distance_m: f64,
    max_speed_mps: f32,
}

impl SegmentRow {
    fn duration_s(&self) -> f64 {
        (self.ended_at - self.started_at).num_milliseconds() as f64 / 1000.0
    }
}

async fn segments(state: &AppState, r: &Request, kind: &str) -> AppResult<Vec<SegmentRow>> {
    let mut rows: Vec<SegmentRow> = sqlx::query_as(&format!(
        "SELECT id, vehicle_id, started_at, ended_at, closed,
                ST_Y(start_point::geometry) AS start_lat, ST_X(start_point::geometry) AS start_lon,
                ST_Y(end_point::geometry) AS end_lat, ST_X(end_point::geometry) AS end_lon,
                distance_m, max_speed_mps
         FROM ({OVERLAPPING}) s
         WHERE kind = $5
         ORDER BY started_at, vehicle_id LIMIT $6"
    ))
    .bind(r.organisation_id)
    .bind(r.ids())
    .bind(r.from)
    .bind(r.to)
    .bind(kind)
    .bind(MAX_ROWS + 1)
    .fetch_all(&mut *reading(&state.db).await?)
    .await?;
    if rows.len() as i64 > MAX_ROWS {
        return Err(too_many());
    }
    rows.sort_by_key(|s| (r.rank(s.vehicle_id), s.started_at));
    Ok(rows)
}

/// A trip: from the fix where the vehicle set off to the one where it came to a stop.
#[derive(Serialize, ToSchema)]
struct TripRow {
    /// The trip's id (stable until the history is detected again).
    id: i64,
    vehicle_id: i64,
    vehicle_name: String,
    started_at: DateTime<Utc>,
    start: LatLon,
    /// For the trip going on now, its latest fix so far.
    ended_at: DateTime<Utc>,
    end: LatLon,
    /// Metres driven.
    distance_m: f64,
    duration_s: f64,
    /// `distance_m / duration_s`, m/s; null for a trip of no duration.
    #[schema(required = true)]
    average_speed_mps: Option<f64>,
    /// The highest speed reported (or, where the device reports none, between fixes), m/s.
    max_speed_mps: f64,
    /// The trip going on now: it may still grow.
    in_progress: bool,
}

#[derive(Serialize, ToSchema)]
struct TripTotals {
    trips: i64,
    distance_m: f64,
    duration_s: f64,
    /// Total distance over total duration, m/s; null with no trips.
    #[schema(required = true)]
    average_speed_mps: Option<f64>,
    /// The highest of the trips', m/s; null with no trips.
    #[schema(required = true)]
    max_speed_mps: Option<f64>,
}

#[utoipa::path(
    get,
    path = "/reports/trips",
    operation_id = "reportTrips",
    summary = "Trips of vehicles over a range",
    description = "Dispatchers and admins, their organisation's vehicles. Every trip overlapping the range, whole, by vehicle (by name) and time; the trip going on now is included with `in_progress: true`. JSON carries metres, seconds, m/s and UTC instants; `format=csv` the organisation's time zone and unit.",
    tag = "reports",
    params(ReportQuery),
    responses(
        (status = 200, description = "The trips and their totals.", content(
            (schema::TripsReport = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
)]
async fn trips(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> AppResult<Response> {
    let r = Request::check(&state, &user, q).await?;
    let rows: Vec<TripRow> = segments(&state, &r, "trip")
        .await?
        .into_iter()
        .map(|s| {
            let duration_s = s.duration_s();
            TripRow {
                id: s.id,
                vehicle_id: s.vehicle_id,
                vehicle_name: r.name(s.vehicle_id),
                started_at: s.started_at,
                start: LatLon {
                    lat: s.start_lat,
                    lon: s.start_lon,
                },
                ended_at: s.ended_at,
                end: LatLon {
                    lat: s.end_lat,
                    lon: s.end_lon,
                },
                distance_m: s.distance_m,
                duration_s,
                average_speed_mps: (duration_s > 0.0).then(|| s.distance_m / duration_s),
                max_speed_mps: f64::from(s.max_speed_mps),
                in_progress: !s.closed,
            }
        })
        .collect();
    let distance_m: f64 = rows.iter().map(|t| t.distance_m).sum();
    let duration_s: f64 = rows.iter().map(|t| t.duration_s).sum();
    let totals = TripTotals {
        trips: rows.len() as i64,
        distance_m,
        duration_s,
        average_speed_mps: (duration_s > 0.0).then(|| distance_m / duration_s),
        max_speed_mps: rows.iter().map(|t| t.max_speed_mps).reduce(f64::max),
    };
    r.answer("trips", rows, totals, |rows, u| {
        let mut t = Table::new([
            "vehicle_id",
            "vehicle",
            "trip_id",
            "started_at",
            "start_lat",
            "start_lon",
            "ended_at",
            "end_lat",
            "end_lon",
            &u.distance_column("distance"),
            "duration_s",
            &u.speed_column("average_speed"),
            &u.speed_column("max_speed"),
            "in_progress",
        ]);
        t.rows = rows
            .iter()
            .map(|x| {
                vec![
                    x.vehicle_id.to_string(),
                    x.vehicle_name.clone(),
                    x.id.to_string(),
                    u.time(x.started_at),
                    coordinate(x.start.lat),
                    coordinate(x.start.lon),
                    u.time(x.ended_at),
                    coordinate(x.end.lat),
                    coordinate(x.end.lon),
                    u.distance(x.distance_m),
                    seconds(Some(x.duration_s)),
                    u.speed(x.average_speed_mps),
                    u.speed(Some(x.max_speed_mps)),
                    x.in_progress.to_string(),
                ]
            })
            .collect();
        t
    })
}

/// A stop: the vehicle staying in one place.
#[derive(Serialize, ToSchema)]
struct StopRow {
    /// The stop's id (stable until the history is detected again).
    id: i64,
    vehicle_id: i64,
    vehicle_name: String,
    /// Where it stopped (its first fix there).
    place: LatLon,
    arrived_at: DateTime<Utc>,
    /// Its last fix in the place; for the stop going on now, the latest so far.
    departed_at: DateTime<Utc>,
    duration_s: f64,
    /// The stop going on now: the vehicle is still there.
    in_progress: bool,
}

#[derive(Serialize, ToSchema)]
struct StopTotals {
    stops: i64,
    duration_s: f64,
}

#[utoipa::path(
    get,
    path = "/reports/stops",
    operation_id = "reportStops",
    summary = "Stops of vehicles over a range",
    description = "Dispatchers and admins. Every stop overlapping the range, whole, by vehicle and time; the stop going on now with `in_progress: true`.",
    tag = "reports",
    params(ReportQuery),
    responses(
        (status = 200, description = "The stops and their totals.", content(
            (schema::StopsReport = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
)]
async fn stops(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> AppResult<Response> {
    let r = Request::check(&state, &user, q).await?;
    let rows: Vec<StopRow> = segments(&state, &r, "stop")
        .await?
        .into_iter()
        .map(|s| StopRow {
            id: s.id,
            vehicle_id: s.vehicle_id,
            vehicle_name: r.name(s.vehicle_id),
            place: LatLon {
                lat: s.start_lat,
                lon: s.start_lon,
            },
            arrived_at: s.started_at,
            departed_at: s.ended_at,
            duration_s: s.duration_s(),
            in_progress: !s.closed,
        })
        .collect();
    let totals = StopTotals {
        stops: rows.len() as i64,
        duration_s: rows.iter().map(|s| s.duration_s).sum(),
    };
    r.answer("stops", rows, totals, |rows, u| {
        let mut t = Table::new([
            "vehicle_id",
            "vehicle",
            "stop_id",
            "lat",
            "lon",
            "arrived_at",
            "departed_at",
            "duration_s",
            "in_progress",
        ]);
        t.rows = rows
            .iter()
            .map(|x| {
                vec![
                    x.vehicle_id.to_string(),
                    x.vehicle_name.clone(),
                    x.id.to_string(),
                    coordinate(x.place.lat),
                    coordinate(x.place.lon),
                    u.time(x.arrived_at),
                    u.time(x.departed_at),
                    seconds(Some(x.duration_s)),
                    x.in_progress.to_string(),
                ]
            })
            .collect();
        t
    })
}

/// One vehicle's local day.
#[derive(Serialize, ToSchema, sqlx::FromRow)]
struct DailyRow {
    vehicle_id: i64,
    #[sqlx(skip)]
    vehicle_name: String,
    /// The day, in the organisation's time zone.
    date: NaiveDate,
    /// Metres driven that day: each trip's distance in proportion to its time in the day.
    distance_m: f64,
    /// Seconds on trips that day.
    driving_s: f64,
    /// Seconds stopped that day.
    stopped_s: f64,
    /// The highest speed of the trips driven that day, m/s; null with none.
    #[schema(required = true)]
    max_speed_mps: Option<f64>,
    /// Trips begun that day.
    trips: i64,
    /// Alerts raised that day (at the time of the fix that raised them, or the clock's).
    alerts: i64,
    /// The trip or stop going on now counts toward this day.
    in_progress: bool,
}

#[derive(Serialize, ToSchema)]
struct DailyTotals {
    /// Vehicle-days listed.
    days: i64,
    distance_m: f64,
    driving_s: f64,
    stopped_s: f64,
    #[schema(required = true)]
    max_speed_mps: Option<f64>,
    trips: i64,
    alerts: i64,
}

#[utoipa::path(
    get,
    path = "/reports/daily",
    operation_id = "reportDaily",
    summary = "Distance, driving and stopped time, top speed and alerts per vehicle and day",
    description = "Dispatchers and admins. Days are the organisation's (its time zone's midnights), clipped to the range; a trip or stop spanning midnight counts toward each day in proportion to its time there (its distance too). Days on which a vehicle has nothing recorded are left out.",
    tag = "reports",
    params(ReportQuery),
    responses(
        (status = 200, description = "The vehicle-days and their totals.", content(
            (schema::DailyReport = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
)]
async fn daily(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> AppResult<Response> {
    let r = Request::check(&state, &user, q).await?;
    // Each segment is clipped to the range and cut at the local midnights it spans (the days
    // from generate_series in the organisation's zone; most segments lie within one day and skip
    // it); each piece carries its share of the segment's time and distance.
    let mut rows: Vec<DailyRow> = sqlx::query_as(&format!(
        "WITH clipped AS (
             SELECT vehicle_id, kind, closed, started_at, distance_m, max_speed_mps,
                    GREATEST(started_at, $3) AS a, LEAST(ended_at, $4) AS b,
                    (GREATEST(started_at, $3) AT TIME ZONE $5)::date AS first_day,
                    (LEAST(ended_at, $4) AT TIME ZONE $5)::date AS last_day,
                    date_part('epoch', ended_at - started_at) AS whole_s
             FROM ({OVERLAPPING}) s
         ), pieces AS (
             SELECT vehicle_id, kind, closed, started_at, distance_m, max_speed_mps, whole_s,
                    first_day AS day, a, b
             FROM clipped WHERE first_day = last_day
             UNION ALL
             SELECT vehicle_id, kind, closed, started_at, distance_m, max_speed_mps, whole_s,
                    d.day::date, GREATEST(a, d.day AT TIME ZONE $5),
                    LEAST(b, (d.day + interval '1 day') AT TIME ZONE $5)
             FROM clipped
             CROSS JOIN LATERAL generate_series(first_day::timestamp, last_day::timestamp,
                                                interval '1 day') AS d(day)
             WHERE first_day < last_day
         ), days AS (
             SELECT vehicle_id, day,
                    sum(CASE WHEN whole_s > 0 THEN distance_m * date_part('epoch', b - a) / whole_s
                             ELSE distance_m END) FILTER (WHERE kind = 'trip') AS distance_m,
                    sum(date_part('epoch', b - a)) FILTER (WHERE kind = 'trip') AS driving_s,
                    sum(date_part('epoch', b - a)) FILTER (WHERE kind = 'stop') AS stopped_s,
                    max(max_speed_mps) FILTER (WHERE kind = 'trip') AS max_speed_mps,
                    count(*) FILTER (WHERE kind = 'trip' AND started_at = a) AS trips,
                    bool_or(NOT closed) AS in_progress
             FROM pieces
             WHERE b > a OR (whole_s = 0 AND started_at = a)
             GROUP BY vehicle_id, day
         ), alerted AS (
             SELECT vehicle_id, (COALESCE(position_at, raised_at) AT TIME ZONE $5)::date AS day,
                    count(*) AS alerts
             FROM alerts
             WHERE organisation_id = $1 AND vehicle_id = ANY($2)
               AND COALESCE(position_at, raised_at) >= $3 AND COALESCE(position_at, raised_at) < $4
             GROUP BY 1, 2
         )
         SELECT vehicle_id, day AS date,
                COALESCE(distance_m, 0)::float8 AS distance_m,
                COALESCE(driving_s, 0)::float8 AS driving_s,
                COALESCE(stopped_s, 0)::float8 AS stopped_s,
                max_speed_mps::float8 AS max_speed_mps,
                COALESCE(trips, 0) AS trips,
                COALESCE(alerts, 0) AS alerts,
                COALESCE(in_progress, false) AS in_progress
         FROM days FULL JOIN alerted USING (vehicle_id, day)
         ORDER BY vehicle_id, day
         LIMIT $6"
    ))
    .bind(r.organisation_id)
    .bind(r.ids())
    .bind(r.from)
    .bind(r.to)
    .bind(&r.settings.time_zone)
    .bind(MAX_ROWS + 1)
    .fetch_all(&mut *reading(&state.db).await?)
    .await?;
    if rows.len() as i64 > MAX_ROWS {
        return Err(too_many());
    }
    for row in &mut rows {
        row.vehicle_name = r.name(row.vehicle_id);
    }
    rows.sort_by_key(|d| (r.rank(d.vehicle_id), d.date));
    let totals = DailyTotals {
        days: rows.len() as i64,
        distance_m: rows.iter().map(|d| d.distance_m).sum(),
        driving_s: rows.iter().map(|d| d.driving_s).sum(),
        stopped_s: rows.iter().map(|d| d.stopped_s).sum(),
        max_speed_mps: rows.iter().filter_map(|d| d.max_speed_mps).reduce(f64::max),
        trips: rows.iter().map(|d| d.trips).sum(),
        alerts: rows.iter().map(|d| d.alerts).sum(),
    };
    r.answer("daily", rows, totals, |rows, u| {
        let mut t = Table::new([
            "date",
            "vehicle_id",
            "vehicle",
            &u.distance_column("distance"),
            "driving_s",
            "stopped_s",
            &u.speed_column("max_speed"),
            "trips",
            "alerts",
            "in_progress",
        ]);
        t.rows = rows
            .iter()
            .map(|x| {
                vec![
                    x.date.to_string(),
                    x.vehicle_id.to_string(),
                    x.vehicle_name.clone(),
                    u.distance(x.distance_m),
                    seconds(Some(x.driving_s)),
                    seconds(Some(x.stopped_s)),
                    u.speed(x.max_speed_mps),
                    x.trips.to_string(),
                    x.alerts.to_string(),
                    x.in_progress.to_string(),
                ]
            })
            .collect();
        t
    })
}

/// A vehicle's visit to a geofence: its enter alert and the exit alert after it.
#[derive(Serialize, ToSchema, sqlx::FromRow)]
struct VisitRow {
    vehicle_id: i64,
    #[sqlx(skip)]
    vehicle_name: String,
    geofence_id: i64,
    /// Its name now, or the name it had then if it was deleted since.
    geofence_name: String,
    geofence_deleted: bool,
    /// When it was first seen inside (the enter's `crossed_at`); null for a visit whose enter
    /// was never raised (the vehicle was inside when the geofence was drawn).
    #[schema(required = true)]
    entered_at: Option<DateTime<Utc>>,
    /// When it was first seen outside again (the exit's `crossed_at`); null while it is inside,
    /// or when no exit followed the enter.
    #[schema(required = true)]
    exited_at: Option<DateTime<Utc>>,
    /// Seconds inside: to the exit, or to now while still inside; null when either end is
    /// unknown.
    #[schema(required = true)]
    dwell_s: Option<f64>,
    /// Still inside: no alert has followed its enter.
    inside: bool,
}

#[derive(Serialize, ToSchema)]
struct VisitTotals {
    visits: i64,
    /// The sum of the visits' known dwell.
    dwell_s: f64,
}

#[utoipa::path(
    get,
    path = "/reports/geofence-visits",
    operation_id = "reportGeofenceVisits",
    summary = "Geofence visits over a range",
    description = "Dispatchers and admins. Each `geofence_enter` alert paired with the `geofence_exit` after it for the same vehicle and geofence, in time order; every visit overlapping the range. A vehicle still inside has `exited_at: null` and `inside: true`.",
    tag = "reports",
    params(ReportQuery),
    responses(
        (status = 200, description = "The visits and their totals.", content(
            (schema::VisitsReport = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
)]
async fn geofence_visits(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> AppResult<Response> {
    let r = Request::check(&state, &user, q).await?;
    let mut rows: Vec<VisitRow> = sqlx::query_as(
        "WITH crossings AS (
             SELECT id, vehicle_id, geofence_id, rule, position_at, details->>'geofence' AS name,
                    COALESCE((details->>'crossed_at')::timestamptz, position_at) AS at
             FROM alerts
             WHERE organisation_id = $1 AND vehicle_id = ANY($2) AND geofence_id IS NOT NULL
               AND rule IN ('geofence_enter', 'geofence_exit') AND position_at IS NOT NULL
         ), paired AS (
             SELECT *, lead(rule) OVER w AS next_rule, lead(at) OVER w AS next_at,
                    lag(rule) OVER w AS previous_rule
             FROM crossings
             WINDOW w AS (PARTITION BY vehicle_id, geofence_id ORDER BY position_at, id)
         ), visits AS (
             SELECT vehicle_id, geofence_id, name,
                    CASE WHEN rule = 'geofence_enter' THEN at END AS entered_at,
                    CASE WHEN rule = 'geofence_exit' THEN at
                         WHEN next_rule = 'geofence_exit' THEN next_at END AS exited_at,
                    rule = 'geofence_enter' AND next_rule IS NULL AS inside
             FROM paired
             WHERE rule = 'geofence_enter' OR previous_rule IS DISTINCT FROM 'geofence_enter'
         )
         SELECT v.vehicle_id, v.geofence_id,
                COALESCE(g.name, v.name, '') AS geofence_name, g.id IS NULL AS geofence_deleted,
                v.entered_at, v.exited_at,
                extract(epoch FROM COALESCE(v.exited_at, CASE WHEN v.inside THEN now() END)
                    - v.entered_at)::float8 AS dwell_s,
                v.inside
         FROM visits v
         LEFT JOIN geofences g ON g.id = v.geofence_id AND g.organisation_id = $1
         WHERE COALESCE(v.entered_at, v.exited_at) < $4
           AND (v.inside OR COALESCE(v.exited_at, v.entered_at) >= $3)
         ORDER BY COALESCE(v.entered_at, v.exited_at), v.vehicle_id, v.geofence_id
         LIMIT $5",
    )
    .bind(r.organisation_id)
    .bind(r.ids())
    .bind(r.from)
    .bind(r.to)
    .bind(MAX_ROWS + 1)
    .fetch_all(&mut *reading(&state.db).await?)
    .await?;
    if rows.len() as i64 > MAX_ROWS {
        return Err(too_many());
    }
    for row in &mut rows {
        row.vehicle_name = r.name(row.vehicle_id);
    }
    rows.sort_by_key(|v| (r.rank(v.vehicle_id), v.entered_at.or(v.exited_at)));
    let totals = VisitTotals {
        visits: rows.len() as i64,
        dwell_s: rows.iter().filter_map(|v| v.dwell_s).sum(),
    };
    r.answer("geofence-visits", rows, totals, |rows, u| {
        let mut t = Table::new([
            "vehicle_id",
            "vehicle",
            "geofence_id",
            "geofence",
            "entered_at",
            "exited_at",
            "dwell_s",
            "inside",
        ]);
        t.rows = rows
            .iter()
            .map(|x| {
                vec![
                    x.vehicle_id.to_string(),
                    x.vehicle_name.clone(),
                    x.geofence_id.to_string(),
                    x.geofence_name.clone(),
                    u.maybe_time(x.entered_at),
                    u.maybe_time(x.exited_at),
                    seconds(x.dwell_s),
                    x.inside.to_string(),
                ]
            })
            .collect();
        t
    })
}

/// A shipment that arrived in the range, against its due time and the ETAs it showed.
#[derive(Serialize, ToSchema, sqlx::FromRow)]
struct ShipmentRow {
    id: i64,
    reference: String,
    /// `arrived` or `delivered`.
    status: String,
    #[schema(required = true)]
    vehicle_id: Option<i64>,
    #[schema(required = true)]
    vehicle_name: Option<String>,
    #[schema(required = true)]
    due_at: Option<DateTime<Utc>>,
    /// When it arrived: the fix that brought its vehicle to the destination, or when it was set
    /// `arrived` or `delivered` by hand if it never arrived by itself (the shipment's
    /// `ended_at`).
    arrived_at: DateTime<Utc>,
    /// Arrived at or before `due_at`; null without a due time.
    #[schema(required = true)]
    on_time: Option<bool>,
    /// Seconds after `due_at` it arrived, 0 when on time; null without a due time.
    #[schema(required = true)]
    late_by_s: Option<f64>,
    /// ETA − arrival of the ETA it showed 30 minutes before arriving, seconds (positive: it said
    /// later); null when none was measured (see `/eta/accuracy`).
    #[schema(required = true)]
    eta_error_30min_s: Option<f64>,
    #[schema(required = true)]
    eta_error_20min_s: Option<f64>,
    #[schema(required = true)]
    eta_error_10min_s: Option<f64>,
    #[schema(required = true)]
    eta_error_5min_s: Option<f64>,
}

#[derive(Serialize, ToSchema)]
struct ShipmentTotals {
    shipments: i64,
    on_time: i64,
    late: i64,
    without_due_at: i64,
    /// The sum of `late_by_s`.
    late_by_s: f64,
}

#[utoipa::path(
    get,
    path = "/reports/shipments",
    operation_id = "reportShipments",
    summary = "Shipments that arrived over a range: on time or late, and how far off their ETAs were",
    description = "Dispatchers and admins. Shipments now `arrived` or `delivered` whose arrival (`ended_at`) lies in the range, carried by the vehicles named (absent: all of the organisation's, with or without a vehicle), in arrival order; each with its lateness against `due_at` and the ETA errors the product measured for it at 30, 20, 10 and 5 minutes before arrival.",
    tag = "reports",
    params(ReportQuery),
    responses(
        (status = 200, description = "The shipments and their totals.", content(
            (schema::ShipmentsReport = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
)]
async fn shipments(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> AppResult<Response> {
    let r = Request::check(&state, &user, q).await?;
    let rows: Vec<ShipmentRow> = sqlx::query_as(
        "SELECT s.id, s.reference, s.status, s.vehicle_id, v.name AS vehicle_name, s.due_at,
                s.ended_at AS arrived_at,
                CASE WHEN s.due_at IS NOT NULL THEN s.ended_at <= s.due_at END AS on_time,
                GREATEST(extract(epoch FROM s.ended_at - s.due_at), 0)::float8 AS late_by_s,
                e.e30 AS eta_error_30min_s, e.e20 AS eta_error_20min_s,
                e.e10 AS eta_error_10min_s, e.e5 AS eta_error_5min_s
         FROM shipments s
         LEFT JOIN vehicles v ON v.id = s.vehicle_id
         LEFT JOIN LATERAL (
             SELECT max(error_s) FILTER (WHERE horizon_min = 30) AS e30,
                    max(error_s) FILTER (WHERE horizon_min = 20) AS e20,
                    max(error_s) FILTER (WHERE horizon_min = 10) AS e10,
                    max(error_s) FILTER (WHERE horizon_min = 5) AS e5
             FROM eta_errors WHERE shipment_id = s.id AND organisation_id = $1
         ) e ON true
         WHERE s.organisation_id = $1 AND s.status IN ('arrived', 'delivered')
           AND s.ended_at >= $3 AND s.ended_at < $4
           AND ($2::bigint[] IS NULL OR s.vehicle_id = ANY($2))
         ORDER BY s.ended_at, s.id
         LIMIT $5",
    )
    .bind(r.organisation_id)
    .bind(&r.asked)
    .bind(r.from)
    .bind(r.to)
    .bind(MAX_ROWS + 1)
    .fetch_all(&mut *reading(&state.db).await?)
    .await?;
    if rows.len() as i64 > MAX_ROWS {
        return Err(too_many());
    }
    let totals = ShipmentTotals {
        shipments: rows.len() as i64,
        on_time: rows.iter().filter(|s| s.on_time == Some(true)).count() as i64,
        late: rows.iter().filter(|s| s.on_time == Some(false)).count() as i64,
        without_due_at: rows.iter().filter(|s| s.on_time.is_none()).count() as i64,
        late_by_s: rows.iter().filter_map(|s| s.late_by_s).sum(),
    };
    r.answer("shipments", rows, totals, |rows, u| {
        let mut t = Table::new([
            "shipment_id",
            "reference",
            "status",
            "vehicle_id",
            "vehicle",
            "due_at",
            "arrived_at",
            "on_time",
            "late_by_s",
            "eta_error_30min_s",
            "eta_error_20min_s",
            "eta_error_10min_s",
            "eta_error_5min_s",
        ]);
        t.rows = rows
            .iter()
            .map(|x| {
                vec![
                    x.id.to_string(),
                    x.reference.clone(),
                    x.status.clone(),
                    x.vehicle_id.map(|v| v.to_string()).unwrap_or_default(),
                    x.vehicle_name.clone().unwrap_or_default(),
                    u.maybe_time(x.due_at),
                    u.time(x.arrived_at),
                    x.on_time.map(|o| o.to_string()).unwrap_or_default(),
                    seconds(x.late_by_s),
                    seconds(x.eta_error_30min_s),
                    seconds(x.eta_error_20min_s),
                    seconds(x.eta_error_10min_s),
                    seconds(x.eta_error_5min_s),
                ]
            })
            .collect();
        t
    })
}

/// The reports' JSON as the OpenAPI document names it: [`Report`] for each kind of row.
mod schema {
    #![expect(dead_code, reason = "schema-only types are never built")]

    use chrono::{DateTime, Utc};
    use utoipa::ToSchema;

    use super::*;

    /// A report's form.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub(super) enum ReportFormat {
        Json,
        Csv,
    }

    macro_rules! reports {
        ($($name:ident($row:ty, $totals:ty): $doc:literal),* $(,)?) => {$(
            #[doc = $doc]
            #[derive(ToSchema)]
            pub(super) struct $name {
                /// The organisation's time zone: the CSV's times, and the days of a date range.
                time_zone: String,
                /// The organisation's unit: the CSV's distances and speeds.
                distance_unit: DistanceUnit,
                /// The range, as instants (`to` not included).
                from: DateTime<Utc>,
                to: DateTime<Utc>,
                rows: Vec<$row>,
                totals: $totals,
            }
        )*};
    }

    reports! {
        TripsReport(TripRow, TripTotals): "Trips overlapping the range, and their totals.",
        StopsReport(StopRow, StopTotals): "Stops overlapping the range, and their totals.",
        DailyReport(DailyRow, DailyTotals): "Each vehicle's local days in the range with anything recorded, and their totals.",
        VisitsReport(VisitRow, VisitTotals): "Geofence visits overlapping the range, and their totals.",
        ShipmentsReport(ShipmentRow, ShipmentTotals): "Shipments that arrived in the range, and their totals.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_its_midnight_in_the_zone_and_an_end_date_is_included() {
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let from = instant("from", "2026-03-02", berlin, false).unwrap();
        let to = instant("to", "2026-03-02", berlin, true).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-03-01T23:00:00+00:00");
        assert_eq!(to - from, Duration::days(1));
        // The day the clocks go forward has 23 hours.
        let spring = instant("to", "2026-03-29", berlin, true).unwrap()
            - instant("from", "2026-03-29", berlin, false).unwrap();
        assert_eq!(spring, Duration::hours(23));
        let exact = instant("from", "2026-03-02T10:00:00+01:00", berlin, false).unwrap();
        assert_eq!(exact.to_rfc3339(), "2026-03-02T09:00:00+00:00");
        assert!(instant("from", "2026-02-30", berlin, false).is_err());
        assert!(instant("from", "yesterday", berlin, false).is_err());
    }

    #[test]
    fn vehicle_ids_are_positive_whole_numbers_each_once() {
        assert_eq!(vehicle_ids("3, 7,3").unwrap(), [3, 7]);
        for bad in ["", "3,", "x", "0", "-2", "1.5"] {
            assert!(vehicle_ids(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn csv_speaks_the_organisations_units_and_time_zone() {
        let u = Units::of(&ReportSettings {
            time_zone: "America/Chicago".into(),
            distance_unit: DistanceUnit::Mi,
        });
        assert_eq!(u.distance(1_609.344), "1.000");
        assert_eq!(u.speed(Some(1_609.344 / 3600.0 * 60.0)), "60.0");
        assert_eq!(u.distance_column("distance"), "distance_mi");
        assert_eq!(u.speed_column("max_speed"), "max_speed_mph");
        let t: DateTime<Utc> = "2026-07-01T17:30:00Z".parse().unwrap();
        assert_eq!(u.time(t), "2026-07-01T12:30:00-05:00");
        let mut table = Table::new(["vehicle", "note"]);
        table.rows.push(vec!["Van, \"big\"".into(), "a\nb".into()]);
        let written = String::from_utf8(table.write().unwrap()).unwrap();
        assert_eq!(written, "vehicle,note\n\"Van, \"\"big\"\"\",\"a\nb\"\n");
    }
}
