//! Looking back over a fleet's month: a history of `--vehicles` vehicles (1 000) over `--days`
//! days (30) ending yesterday, about ten million fixes, written into a database of the bench's
//! own (`waymark_bench_history`, kept with `--keep` for the next run of the same size) as live
//! ingest would have stored it, and what reading it back costs:
//!
//! 1. **generate**: the recorded drives of the simulator's tracks replayed, each vehicle on one
//!    of them, back and forth, offset a little so that vehicles do not coincide: a fix every
//!    10–30 s while driving, parked between drives (a fix every few minutes, wandering a few
//!    metres), nothing at night; plus one day of vehicle 1 (the last) at one fix a second, day
//!    and night. Written with binary `COPY` in `recorded_at` order across vehicles, seqs in that
//!    order, as the writer would have;
//! 2. **detect**: trips and stops for the whole history, as the segmenter does after an upgrade;
//! 3. **disk**: positions and segments, with their indexes;
//! 4. **API**: the history of the 1 Hz day, trips, stops and the daily summary, and exports of
//!    a vehicle-month, timed warm against the server in-process (routes that answer 404 are
//!    reported as not available);
//! 5. **page**: the history page drawing the 1 Hz day in headless Chromium (if there is one);
//! 6. **ingest cost of detection**: single-position posts with the detector running every 5 s
//!    against none, on fresh small databases, taking turns.
//!
//! `cargo bench --bench history [-- --vehicles N --days D --keep]`; results in
//! docs/BENCHMARKS.md. Needs `DATABASE_URL` (a role that may create databases), and for the
//! page chromedriver and Chromium (`WAYMARK_CHROMEDRIVER`, `WAYMARK_CHROMIUM`).
mod support;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, Duration as Span, SecondsFormat, TimeZone, Utc};
use clap::Parser;
use fantoccini::{Client, Locator};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::{
    auth::{create_user, Role},
    history::segmenter,
    metrics::Metrics,
};
use waymark_sim::{
    geo::{self, LatLon},
    tracks,
};

use support::{thousands, Chromedriver, Server};

const DATABASE: &str = "waymark_bench_history";
/// Fresh for every ingest run, dropped at the end.
const INGEST_DATABASE: &str = "waymark_bench_history_ingest";
const ORGANISATION: &str = "History Bench";
const EMAIL: &str = "history-bench@waymark.local";
const PASSWORD: &str = "history-bench-password";
/// Vehicles and requests in flight while measuring ingest.
const INGEST_VEHICLES: usize = 200;
const INGEST_WORKERS: usize = 64;
/// Requests before the timed ones of each API measurement.
const WARM_UP: usize = 2;
/// Any one request gets this long.
const REQUEST_LIMIT: Duration = Duration::from_secs(120);
/// The history page gets this long to draw the day.
const DRAW_LIMIT: Duration = Duration::from_secs(120);
/// Trips shorter than this are not driven (a bus's last few stops).
const SHORTEST_ROUTE_S: f64 = 300.0;

#[derive(Parser, Debug)]
#[command(about = "A fleet's month of history: generate, detect, store, read back")]
struct Options {
    /// Vehicles in the history.
    #[arg(long, default_value_t = 1000)]
    vehicles: usize,
    /// Days of history, ending yesterday.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Keep the history database if it already holds this size (and the same last day);
    /// otherwise it is made again.
    #[arg(long)]
    keep: bool,
    /// Timed requests per API measurement.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Positions posted in each ingest run.
    #[arg(long, default_value_t = 30_000)]
    ingest_positions: usize,
    /// Ingest runs of each kind (detection on, off), taking turns.
    #[arg(long, default_value_t = 2)]
    ingest_rounds: usize,
    /// Seconds between runs of the detector in the ingest runs with detection (the server's
    /// default); a run should last several of them.
    #[arg(long, default_value_t = 5)]
    detect_every_s: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    anyhow::ensure!(options.vehicles >= 2, "give at least 2 vehicles");
    anyhow::ensure!(options.days >= 1, "give at least 1 day");
    let plan = Arc::new(Plan::new(&options)?);
    let mut report = Report::default();

    let db = history_database(&plan, &options, &mut report).await?;
    detect(&db, &mut report).await?;
    disk(&db, &mut report).await?;

    let server = Server::start(
        db.clone(),
        &["--segment-tick-s", "0", "--alert-tick-s", "86400"],
    )
    .await?;
    let http = reqwest::Client::builder().timeout(REQUEST_LIMIT).build()?;
    let jwt = support::sign_in(&http, &server.base, EMAIL, PASSWORD).await?;
    let ids = vehicle_ids(&db).await?;
    let read = read_back(
        &db,
        &ids,
        &http,
        &server.base,
        &jwt,
        &plan,
        &options,
        &mut report,
    )
    .await;
    let page = match read {
        Ok(()) => on_screen(&http, &server.base, &jwt, &plan, ids[0], &mut report).await,
        Err(_) => Ok(()),
    };
    server.stop().await;
    db.close().await;
    read?;
    if let Err(e) = page {
        report.row(
            "page",
            "history page drawing the 1 Hz day",
            format!("failed: {e:#}"),
        );
    }

    ingest_cost(&plan, &options, &mut report).await?;
    report.print(&plan);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The history to generate.

/// A recorded drive, as time from its start (s) and place.
struct Route {
    points: Vec<(f64, LatLon)>,
}

impl Route {
    fn duration(&self) -> f64 {
        self.points[self.points.len() - 1].0
    }

    /// Where the drive is `t` seconds in (driven backwards if `reverse`), how fast and heading
    /// where.
    fn at(&self, t: f64, reverse: bool) -> (LatLon, f64, Option<f64>) {
        let t = if reverse { self.duration() - t } else { t };
        let i = self
            .points
            .partition_point(|(at, _)| *at <= t)
            .clamp(1, self.points.len() - 1);
        let ((t0, a), (t1, b)) = (self.points[i - 1], self.points[i]);
        let f = ((t - t0) / (t1 - t0)).clamp(0.0, 1.0);
        let here = LatLon::new(a.lat + (b.lat - a.lat) * f, a.lon + (b.lon - a.lon) * f);
        let step = geo::haversine_m(a, b);
        let heading = (step >= 1.0).then(|| {
            let (from, to) = if reverse { (b, a) } else { (a, b) };
            geo::initial_bearing_deg(from, to)
        });
        (here, step / (t1 - t0), heading)
    }
}

/// One stored fix, before it has a seq.
#[derive(Clone, Copy)]
struct Row {
    /// Unix time in µs.
    at: i64,
    /// Index of the vehicle, from 0.
    vehicle: u32,
    lat: f64,
    lon: f64,
    speed: Option<f32>,
    heading: Option<f32>,
    accuracy: f32,
}

/// How one vehicle drives: which route, where (offset from the route), how often its phone
/// reports while driving and while parked.
struct Driver {
    route: usize,
    dlat: f64,
    dlon: f64,
    drive_every_s: f64,
    park_every_s: f64,
}

impl Driver {
    /// Vehicle `v`'s: the routes taken in turn, each vehicle within 400 m of its recorded drive
    /// and somewhere else.
    fn new(routes: &[Route], v: usize) -> Driver {
        let mut rng = StdRng::seed_from_u64(v as u64);
        let route = v % routes.len();
        let origin = routes[route].points[0].1;
        let (r, angle) = (
            rng.gen_range(20.0..400.0),
            rng.gen_range(0.0..std::f64::consts::TAU),
        );
        Driver {
            route,
            dlat: r * angle.cos() / 111_320.0,
            dlon: r * angle.sin() / (111_320.0 * origin.lat.to_radians().cos()),
            drive_every_s: rng.gen_range(10.0..30.0),
            park_every_s: rng.gen_range(120.0..300.0),
        }
    }
}

struct Plan {
    vehicles: usize,
    days: u32,
    /// The first day, at 00:00 UTC.
    first_day: DateTime<Utc>,
    routes: Vec<Route>,
    drivers: Vec<Driver>,
}

impl Plan {
    fn new(options: &Options) -> anyhow::Result<Plan> {
        let mut routes = Vec::new();
        for vehicle in tracks::fleet()? {
            for trip in vehicle.trips {
                let start = trip.first().at;
                let points: Vec<(f64, LatLon)> = trip
                    .fixes
                    .iter()
                    .map(|f| ((f.at - start).num_milliseconds() as f64 / 1000.0, f.point))
                    .collect();
                let route = Route { points };
                if route.duration() >= SHORTEST_ROUTE_S {
                    // The 1 Hz car first: vehicle 1's day at 1 Hz is driven on it.
                    if vehicle.name.starts_with("Car Munich") {
                        routes.insert(0, route);
                    } else {
                        routes.push(route);
                    }
                }
            }
        }
        anyhow::ensure!(!routes.is_empty(), "no recorded drives");
        let drivers = (0..options.vehicles)
            .map(|v| Driver::new(&routes, v))
            .collect();
        let yesterday = (Utc::now() - Span::days(1)).date_naive();
        let first = yesterday - Span::days(i64::from(options.days) - 1);
        Ok(Plan {
            vehicles: options.vehicles,
            days: options.days,
            first_day: Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).expect("midnight")),
            routes,
            drivers,
        })
    }

    fn day(&self, d: u32) -> DateTime<Utc> {
        self.first_day + Span::days(d.into())
    }

    fn last_day(&self) -> DateTime<Utc> {
        self.day(self.days - 1)
    }

    fn end(&self) -> DateTime<Utc> {
        self.day(self.days)
    }

    /// What the database's comment says once it holds this history.
    fn label(&self) -> String {
        format!(
            "waymark history bench: {} vehicles, {} days ending {}",
            self.vehicles,
            self.days,
            self.last_day().date_naive()
        )
    }

    /// Every fix of day `d`, in `recorded_at` order across vehicles.
    fn day_rows(&self, d: u32) -> Vec<Row> {
        let mut rows = Vec::with_capacity(self.vehicles * 400);
        for v in 0..self.vehicles {
            let mut day = Day::new(self, &self.drivers[v], v, d);
            if v == 0 && d == self.days - 1 {
                day.one_hz();
            } else {
                day.normal();
            }
            rows.append(&mut day.rows);
        }
        rows.sort_unstable_by_key(|r| (r.at, r.vehicle));
        rows
    }
}

/// One vehicle's day being written.
struct Day<'a> {
    route: &'a Route,
    driver: &'a Driver,
    vehicle: u32,
    rng: StdRng,
    midnight: i64,
    rows: Vec<Row>,
}

impl<'a> Day<'a> {
    fn new(plan: &'a Plan, driver: &'a Driver, v: usize, d: u32) -> Day<'a> {
        Day {
            route: &plan.routes[driver.route],
            driver,
            vehicle: v as u32,
            rng: StdRng::seed_from_u64(((v as u64) << 20) ^ u64::from(d) ^ 0x5eed),
            midnight: plan.day(d).timestamp_micros(),
            rows: Vec::new(),
        }
    }

    /// Wakes between 05:30 and 08:30, parks a while, then drives back and forth with stops
    /// until it has driven 30 to 85 minutes (or it is past 17:00) and is back where it started,
    /// parks, and sleeps.
    fn normal(&mut self) {
        let mut t = self.rng.gen_range(5.5..8.5) * 3600.0;
        let budget = self.rng.gen_range(30.0..85.0) * 60.0;
        let (drive_every, park_every) = (self.driver.drive_every_s, self.driver.park_every_s);
        let first = self.rng.gen_range(5.0..20.0) * 60.0;
        t = self.park(t, first, park_every, false);
        let mut driven = 0.0;
        let mut reverse = false;
        loop {
            t = self.drive(t, reverse, drive_every);
            driven += self.route.duration();
            reverse = !reverse;
            if !reverse && (driven >= budget || t > 17.0 * 3600.0) {
                let last = self.rng.gen_range(10.0..30.0) * 60.0;
                self.park(t, last, park_every, reverse);
                break;
            }
            let stop = self.rng.gen_range(20.0..120.0) * 60.0;
            t = self.park(t, stop, park_every, reverse);
        }
    }

    /// One fix a second all day: parked through the night, driving back and forth with stops
    /// from about 06:00 to about 20:00.
    fn one_hz(&mut self) {
        const DAY: f64 = 86_400.0;
        let mut t = self.park(0.0, 6.0 * 3600.0, 1.0, false);
        let mut reverse = false;
        while t < 20.0 * 3600.0 || reverse {
            t = self.drive(t, reverse, 1.0);
            reverse = !reverse;
            let stop: f64 = self.rng.gen_range(15.0..60.0) * 60.0;
            t = self.park(t, stop.min(DAY - 1.0 - t), 1.0, reverse);
        }
        self.park(t, DAY - 1.0 - t, 1.0, reverse);
        self.rows.retain(|r| r.at < self.midnight + 86_400_000_000);
    }

    /// Drives the route from `t` (s after midnight), a fix every `every` seconds (give or take
    /// two); when it got there.
    fn drive(&mut self, t: f64, reverse: bool, every: f64) -> f64 {
        let duration = self.route.duration();
        let mut s = 0.0;
        loop {
            let (here, speed, heading) = self.route.at(s, reverse);
            let noise = 3.0;
            self.fix(t + s, here, noise, Some(speed), heading);
            if s >= duration {
                return t + duration;
            }
            let jitter = if every > 2.0 {
                self.rng.gen_range(-2.0..2.0)
            } else {
                0.0
            };
            s = (s + every + jitter).min(duration);
        }
    }

    /// Parked for `length` seconds from `t` where the route ends (or starts, if `reverse` was
    /// the last drive, i.e. back home), a fix every `every` seconds; when it leaves.
    fn park(&mut self, t: f64, length: f64, every: f64, at_end: bool) -> f64 {
        let (spot, ..) = self.route.at(0.0, at_end);
        let mut s = every;
        while s < length {
            let speed = self.rng.gen_range(0.0..0.4);
            self.fix(t + s, spot, 12.0, Some(speed), None);
            let jitter = if every > 2.0 {
                self.rng.gen_range(-15.0..15.0)
            } else {
                0.0
            };
            s += every + jitter;
        }
        t + length
    }

    fn fix(&mut self, t: f64, at: LatLon, noise_m: f64, speed: Option<f64>, heading: Option<f64>) {
        let (dn, de) = (
            self.rng.gen_range(-noise_m..noise_m),
            self.rng.gen_range(-noise_m..noise_m),
        );
        let lat = at.lat + self.driver.dlat + dn / 111_320.0;
        let lon = at.lon + self.driver.dlon + de / (111_320.0 * at.lat.to_radians().cos());
        self.rows.push(Row {
            at: self.midnight + (t * 1e6) as i64,
            vehicle: self.vehicle,
            lat,
            lon,
            speed: speed.map(|s| s as f32),
            heading: heading.map(|h| h as f32),
            accuracy: self.rng.gen_range(4.0..20.0),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Generate.

/// The history database: kept (with `--keep`, if it holds this history), or made again.
async fn history_database(
    plan: &Arc<Plan>,
    options: &Options,
    report: &mut Report,
) -> anyhow::Result<PgPool> {
    if options.keep {
        if let Ok(db) = support::connect(DATABASE).await {
            let label: Option<String> = sqlx::query_scalar(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database
                 WHERE datname = current_database()",
            )
            .fetch_one(&db)
            .await?;
            if label.as_deref() == Some(plan.label().as_str()) {
                report.row("generate", "history", "kept from an earlier run (--keep)");
                return Ok(db);
            }
            db.close().await;
        }
    }
    let db = support::fresh_database(DATABASE).await?;
    generate(&db, plan, report).await?;
    sqlx::query(&format!(
        "COMMENT ON DATABASE {DATABASE} IS '{}'",
        plan.label()
    ))
    .execute(&db)
    .await?;
    Ok(db)
}

/// A day's fixes, encoded for `COPY ... (FORMAT binary)`.
struct Chunk {
    rows: u64,
    bytes: Vec<u8>,
}

async fn generate(db: &PgPool, plan: &Arc<Plan>, report: &mut Report) -> anyhow::Result<()> {
    create_user(db, ORGANISATION, EMAIL, PASSWORD, Role::Admin).await?;
    let organisation: i64 = sqlx::query_scalar("SELECT id FROM organisations WHERE name = $1")
        .bind(ORGANISATION)
        .fetch_one(db)
        .await?;
    sqlx::query(
        "INSERT INTO vehicles (organisation_id, name, token_hash, created_at)
         SELECT $1, 'Truck ' || lpad(g::text, 4, '0'),
                sha256(('history bench ' || g || ' ' || random())::text::bytea), $2
         FROM generate_series(1, $3) g ORDER BY g",
    )
    .bind(organisation)
    .bind(plan.first_day)
    .bind(plan.vehicles as i64)
    .execute(db)
    .await?;
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM vehicles WHERE organisation_id = $1 ORDER BY id")
            .bind(organisation)
            .fetch_all(db)
            .await?;
    // The monthly partitions a server running through these months would have made.
    let mut month = plan.first_day.date_naive().with_day(1).expect("day 1");
    while month <= Utc::now().date_naive() {
        let next = month
            .checked_add_months(chrono::Months::new(1))
            .expect("a next month");
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS positions_{} PARTITION OF positions
             FOR VALUES FROM ('{month} 00:00+00') TO ('{next} 00:00+00')",
            month.format("%Y_%m")
        ))
        .execute(db)
        .await?;
        month = next;
    }

    // Days are made on a thread of their own while the previous one is written.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(2);
    let days = plan.days;
    let encoder = {
        let (ids, plan) = (ids.clone(), plan.clone());
        std::thread::spawn(move || {
            let mut seq = 0i64;
            for d in 0..days {
                let rows = plan.day_rows(d);
                let bytes = encode(&rows, seq, organisation, &ids);
                seq += rows.len() as i64;
                let chunk = Chunk {
                    rows: rows.len() as u64,
                    bytes,
                };
                if tx.blocking_send(chunk).is_err() {
                    return;
                }
            }
        })
    };
    let started = Instant::now();
    let mut total = 0u64;
    let mut conn = db.acquire().await?;
    while let Some(chunk) = rx.recv().await {
        let mut copy = conn
            .copy_in_raw(
                "COPY positions (organisation_id, vehicle_id, seq, recorded_at, received_at,
                                 point, accuracy, speed, heading)
                 FROM STDIN (FORMAT binary)",
            )
            .await?;
        for part in chunk.bytes.chunks(1 << 20) {
            copy.send(part).await?;
        }
        copy.finish().await?;
        total += chunk.rows;
        eprint!(
            "\rgenerated {total} fixes in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    drop(conn);
    encoder
        .join()
        .map_err(|_| anyhow::anyhow!("the generator failed"))?;
    let written = started.elapsed();
    sqlx::query("UPDATE event_seq SET value = $1")
        .bind(total as i64)
        .execute(db)
        .await?;
    let analysed = Instant::now();
    sqlx::query("ANALYZE positions").execute(db).await?;
    let analysed = analysed.elapsed();

    report.fixes = total;
    report.row(
        "generate",
        "fixes written (binary COPY, recorded_at order)",
        format!(
            "{} in {:.1} s: **{} rows/s**",
            thousands(total),
            written.as_secs_f64(),
            thousands((total as f64 / written.as_secs_f64()) as u64)
        ),
    );
    let one_hz: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM positions WHERE vehicle_id = $1 AND recorded_at >= $2",
    )
    .bind(ids[0])
    .bind(plan.last_day())
    .fetch_one(db)
    .await?;
    let vehicle_days = plan.vehicles as f64 * f64::from(plan.days);
    report.row(
        "generate",
        "fixes per vehicle-day",
        format!(
            "{:.0} on average, besides the 1 Hz day ({} fixes)",
            (total as f64 - one_hz as f64) / (vehicle_days - 1.0).max(1.0),
            thousands(one_hz as u64)
        ),
    );
    report.row(
        "generate",
        "ANALYZE positions",
        format!("{:.1} s", analysed.as_secs_f64()),
    );
    Ok(())
}

/// PostgreSQL's epoch (2000-01-01) in Unix µs.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// `rows` as one binary `COPY`: seqs from `seq + 1`, received a second or two after recorded.
fn encode(rows: &[Row], seq: i64, organisation: i64, ids: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + rows.len() * 120 + 2);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    let int8 = |out: &mut Vec<u8>, v: i64| {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    };
    let float4 = |out: &mut Vec<u8>, v: Option<f32>| match v {
        Some(v) => {
            out.extend_from_slice(&4i32.to_be_bytes());
            out.extend_from_slice(&v.to_be_bytes());
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    };
    for (i, row) in rows.iter().enumerate() {
        out.extend_from_slice(&9i16.to_be_bytes());
        int8(&mut out, organisation);
        int8(&mut out, ids[row.vehicle as usize]);
        int8(&mut out, seq + 1 + i as i64);
        int8(&mut out, row.at - PG_EPOCH_US);
        let delay = 1_000_000 + (row.at.rem_euclid(997)) * 1_000;
        int8(&mut out, row.at + delay - PG_EPOCH_US);
        // EWKB, little-endian: a point with SRID 4326.
        out.extend_from_slice(&25i32.to_be_bytes());
        out.push(1);
        out.extend_from_slice(&0x2000_0001u32.to_le_bytes());
        out.extend_from_slice(&4326u32.to_le_bytes());
        out.extend_from_slice(&row.lon.to_le_bytes());
        out.extend_from_slice(&row.lat.to_le_bytes());
        float4(&mut out, Some(row.accuracy));
        float4(&mut out, row.speed);
        float4(&mut out, row.heading);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// 2. Detect.

async fn detect(db: &PgPool, report: &mut Report) -> anyhow::Result<()> {
    let metrics = Metrics::default();
    let started = Instant::now();
    let vehicles = segmenter::catch_up(db, &metrics).await?;
    let took = started.elapsed().as_secs_f64();
    let fed = metrics.segmented_fixes.get();
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, count(*) FROM segments GROUP BY kind ORDER BY kind")
            .fetch_all(db)
            .await?;
    let count = |kind: &str| {
        counts
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0, |(_, n)| *n)
    };
    report.segments = (count("trip"), count("stop"));
    report.row(
        "detect",
        "trips and stops of the whole history (`segmenter::catch_up`)",
        if vehicles == 0 {
            format!("nothing left to do ({took:.1} s)")
        } else {
            format!(
                "{} fixes of {vehicles} vehicles in {took:.1} s: **{} fixes/s**",
                thousands(fed),
                thousands((fed as f64 / took) as u64)
            )
        },
    );
    report.row(
        "detect",
        "segments stored",
        format!(
            "{} trips, {} stops",
            thousands(count("trip") as u64),
            thousands(count("stop") as u64)
        ),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Disk.

async fn disk(db: &PgPool, report: &mut Report) -> anyhow::Result<()> {
    let fixes: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(db)
        .await?;
    report.fixes = fixes as u64;
    let per_million = |bytes: i64| bytes as f64 / (fixes.max(1) as f64 / 1e6);
    let total: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint
         FROM pg_partition_tree('positions') WHERE isleaf",
    )
    .fetch_one(db)
    .await?;
    let heap: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_table_size(relid)), 0)::bigint
         FROM pg_partition_tree('positions') WHERE isleaf",
    )
    .fetch_one(db)
    .await?;
    report.row(
        "disk",
        "positions, all partitions with indexes",
        format!(
            "{} for {} fixes: **{} per million fixes** (table {})",
            size(total),
            thousands(fixes as u64),
            size(per_million(total) as i64),
            size(per_million(heap) as i64) + " per million"
        ),
    );
    let indexes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT i.indexname::text,
                (SELECT coalesce(sum(pg_relation_size(relid)), 0)::bigint
                 FROM pg_partition_tree(i.indexname::regclass))
         FROM pg_indexes i WHERE i.schemaname = 'public' AND i.tablename = 'positions'
         ORDER BY 2 DESC",
    )
    .fetch_all(db)
    .await?;
    for (name, bytes) in indexes {
        report.row(
            "disk",
            &format!("index `{name}`"),
            format!(
                "{} ({} per million fixes)",
                size(bytes),
                size(per_million(bytes) as i64)
            ),
        );
    }
    let segments: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('segments')")
        .fetch_one(db)
        .await?;
    let (trips, stops) = report.segments;
    report.row(
        "disk",
        "segments with indexes",
        format!(
            "{} for {} segments: {} per million fixes, {} bytes per segment",
            size(segments),
            thousands((trips + stops) as u64),
            size(per_million(segments) as i64),
            thousands((segments / (trips + stops).max(1)) as u64)
        ),
    );
    let indexes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT indexname::text, pg_relation_size(indexname::regclass)
         FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'segments' ORDER BY 2 DESC",
    )
    .fetch_all(db)
    .await?;
    for (name, bytes) in indexes {
        report.row("disk", &format!("index `{name}`"), size(bytes));
    }
    let paths: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(octet_length(path)), 0)::bigint FROM segments")
            .fetch_one(db)
            .await?;
    report.row(
        "disk",
        "stored trip tracks (`segments.path`)",
        format!(
            "{} ({:.1} bytes per fix of the history)",
            size(paths),
            paths as f64 / fixes.max(1) as f64
        ),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. The API.

/// What timing one request gave.
enum Timed {
    /// The route answered 404: not built yet.
    NotAvailable,
    Failed(String),
    Times {
        median: Duration,
        p95: Duration,
        bytes: usize,
    },
}

async fn time_get(http: &reqwest::Client, url: &str, jwt: &str, runs: usize) -> Timed {
    let once = async || -> anyhow::Result<Result<(Duration, usize), (u16, String)>> {
        let started = Instant::now();
        let response = http.get(url).bearer_auth(jwt).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        let took = started.elapsed();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Ok(Err((status.as_u16(), text)));
        }
        Ok(Ok((took, body.len())))
    };
    let mut times = Vec::with_capacity(runs);
    let mut bytes = 0;
    for i in 0..WARM_UP + runs {
        match once().await {
            Err(e) => return Timed::Failed(format!("{e:#}")),
            Ok(Err((404, _))) => return Timed::NotAvailable,
            Ok(Err((status, text))) => return Timed::Failed(format!("HTTP {status}: {text}")),
            Ok(Ok((took, n))) => {
                bytes = n;
                if i >= WARM_UP {
                    times.push(took);
                }
            }
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Timed::Times {
        median: at(0.5),
        p95: at(0.95),
        bytes,
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The history's vehicles, vehicle 1 (with the 1 Hz day) first.
async fn vehicle_ids(db: &PgPool) -> anyhow::Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT v.id FROM vehicles v JOIN organisations o ON o.id = v.organisation_id
         WHERE o.name = $1 ORDER BY v.id",
    )
    .bind(ORGANISATION)
    .fetch_all(db)
    .await?)
}

#[allow(clippy::too_many_arguments)]
async fn read_back(
    db: &PgPool,
    ids: &[i64],
    http: &reqwest::Client,
    base: &str,
    jwt: &str,
    plan: &Plan,
    options: &Options,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (first, second) = (ids[0], ids[1]);
    let (day_from, day_to) = (rfc3339(plan.last_day()), rfc3339(plan.end()));
    let (month_from, month_to) = (rfc3339(plan.first_day), rfc3339(plan.end()));
    let count = |vehicle: i64, from: DateTime<Utc>, to: DateTime<Utc>| {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM positions WHERE vehicle_id = $1
             AND recorded_at >= $2 AND recorded_at < $3",
        )
        .bind(vehicle)
        .bind(from)
        .bind(to)
        .fetch_one(db)
    };
    let day_fixes = count(first, plan.last_day(), plan.end()).await?;
    let month_fixes = count(second, plan.first_day, plan.end()).await?;
    let runs = options.runs.max(1);

    let history = |tolerance: u32| {
        format!(
            "{base}/api/v1/vehicles/{first}/history?from={day_from}&to={day_to}&tolerance_m={tolerance}"
        )
    };
    let fleet: Vec<String> = ids.iter().take(100).map(i64::to_string).collect();
    let mut cases = vec![
        (
            format!(
                "history of vehicle {first}'s 1 Hz day ({} fixes), tolerance 10 m",
                thousands(day_fixes as u64)
            ),
            history(10),
            None,
        ),
        (
            format!(
                "history of vehicle {first}'s 1 Hz day ({} fixes), tolerance 0 m",
                thousands(day_fixes as u64)
            ),
            history(0),
            None,
        ),
    ];
    for kind in ["trips", "stops"] {
        cases.push((
            format!("{kind} of vehicle {second} over {} days", plan.days),
            format!(
                "{base}/api/v1/reports/{kind}?vehicle_ids={second}&from={month_from}&to={month_to}"
            ),
            None,
        ));
    }
    cases.push((
        format!(
            "daily summary of {} vehicles for {} days",
            fleet.len(),
            plan.days
        ),
        format!(
            "{base}/api/v1/reports/daily?vehicle_ids={}&from={month_from}&to={month_to}",
            fleet.join(",")
        ),
        None,
    ));
    for format in ["gpx", "geojson", "kml", "csv"] {
        cases.push((
            format!(
                "export of vehicle {second}'s {} days ({} fixes) as {format}",
                plan.days,
                thousands(month_fixes as u64)
            ),
            format!(
                "{base}/api/v1/vehicles/{second}/export?from={month_from}&to={month_to}&format={format}"
            ),
            Some(month_fixes),
        ));
    }
    for (what, url, fixes) in cases {
        let answer = match time_get(http, &url, jwt, runs).await {
            Timed::NotAvailable => "not available (404)".to_owned(),
            Timed::Failed(e) => format!("failed: {e}"),
            Timed::Times { median, p95, bytes } => {
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                let mut text = format!(
                    "median **{:.1} ms**, p95 {:.1} ms, {} (over {runs} runs)",
                    ms(median),
                    ms(p95),
                    size(bytes as i64)
                );
                if let Some(fixes) = fixes {
                    text += &format!(
                        "; {} fixes/s streamed",
                        thousands((fixes as f64 / median.as_secs_f64()) as u64)
                    );
                }
                text
            }
        };
        report.row("API", &what, answer);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. On screen.

async fn on_screen(
    http: &reqwest::Client,
    base: &str,
    jwt: &str,
    plan: &Plan,
    vehicle: i64,
    report: &mut Report,
) -> anyhow::Result<()> {
    const WHAT: &str = "history page: sign-in done to the 1 Hz day drawn (`history-drawn` mark)";
    let page = http
        .get(format!("{base}/history"))
        .bearer_auth(jwt)
        .send()
        .await?;
    if page.status() != reqwest::StatusCode::OK {
        report.row(
            "page",
            WHAT,
            format!(
                "not available (`/history` answered {})",
                page.status().as_u16()
            ),
        );
        return Ok(());
    }
    let driver = Chromedriver::start().await?;
    let measured = async {
        let browser = driver.client().await?;
        let result = draw_times(&browser, base, plan, vehicle).await;
        let _ = browser.close().await;
        result
    }
    .await;
    driver.stop().await;
    let times = measured?;
    let listed: Vec<String> = times.iter().map(|t| format!("{t:.0}")).collect();
    report.row(
        "page",
        WHAT,
        format!("**{} ms** (loads one after another)", listed.join(", ")),
    );
    Ok(())
}

/// Signs in, then loads the 1 Hz day three times; when each load marked the track drawn (ms
/// after the navigation started).
async fn draw_times(
    browser: &Client,
    base: &str,
    plan: &Plan,
    vehicle: i64,
) -> anyhow::Result<Vec<f64>> {
    browser.goto(&format!("{base}/")).await?;
    browser
        .find(Locator::Css("#email"))
        .await?
        .send_keys(EMAIL)
        .await?;
    browser
        .find(Locator::Css("#password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    browser
        .find(Locator::Css("#sign-in"))
        .await?
        .click()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while browser.current_url().await?.path() == "/" {
        if Instant::now() > deadline {
            bail!("signing in did not leave the sign-in page");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!(
        "{base}/history?vehicle={vehicle}&from={}&to={}",
        rfc3339(plan.last_day()),
        rfc3339(plan.end())
    );
    let mut times = Vec::new();
    for _ in 0..3 {
        browser.goto(&url).await?;
        let started = Instant::now();
        loop {
            let mark = browser
                .execute(
                    "const m = performance.getEntriesByName('history-drawn')[0];
                     return m ? m.startTime : null;",
                    vec![],
                )
                .await?;
            if let Some(ms) = mark.as_f64() {
                times.push(ms);
                break;
            }
            if started.elapsed() > DRAW_LIMIT {
                bail!("the page did not mark `history-drawn` within {DRAW_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(times)
}

// ---------------------------------------------------------------------------------------------
// 6. What detection costs ingest.

async fn ingest_cost(plan: &Plan, options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let per_vehicle = options.ingest_positions.div_ceil(INGEST_VEHICLES).max(1);
    let fixes: Vec<Vec<Value>> = (0..INGEST_VEHICLES)
        .map(|v| ingest_fixes(plan, v, per_vehicle))
        .collect();
    let fixes = Arc::new(fixes);
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut fed = 0u64;
    for round in 0..options.ingest_rounds.max(1) {
        // Off first, then on; the next round the other way round.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            let tick = if on { options.detect_every_s.max(1) } else { 0 };
            let (rate, detected) = ingest_run(fixes.clone(), tick).await?;
            eprintln!(
                "ingest with detection {}: {rate:.0} positions/s",
                if on { "on" } else { "off" }
            );
            rates[usize::from(on)].push(rate);
            fed += detected;
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let listed = |v: &[f64]| {
        v.iter()
            .map(|r| thousands(*r as u64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (off, on) = (mean(&rates[0]), mean(&rates[1]));
    let posts = format!(
        "{} single-position POSTs, {INGEST_VEHICLES} vehicles, {INGEST_WORKERS} in flight",
        thousands((per_vehicle * INGEST_VEHICLES) as u64)
    );
    report.row(
        "ingest",
        &format!("detection off (`--segment-tick-s 0`): {posts}"),
        format!(
            "{} positions/s (mean **{}**)",
            listed(&rates[0]),
            thousands(off as u64)
        ),
    );
    let every = options.detect_every_s.max(1);
    report.row(
        "ingest",
        &format!("detection every {every} s (`--segment-tick-s {every}`): {posts}"),
        format!(
            "{} positions/s (mean **{}**); {} fixes fed to the detector while posting, per run",
            listed(&rates[1]),
            thousands(on as u64),
            thousands(fed / rates[1].len() as u64)
        ),
    );
    let difference = format!("**{:+.1} %** with detection", (on / off - 1.0) * 100.0);
    report.row(
        "ingest",
        "difference",
        if fed == 0 {
            difference + " (but the detector had nothing to do: give more --ingest-positions)"
        } else {
            difference
        },
    );
    Ok(())
}

/// Vehicle `v`'s first `n` fixes of its days as it drives them, shifted to end a minute ago.
fn ingest_fixes(plan: &Plan, v: usize, n: usize) -> Vec<Value> {
    let driver = Driver::new(&plan.routes, v);
    let mut rows = Vec::new();
    let mut d = 0;
    while rows.len() < n {
        let mut day = Day::new(plan, &driver, v, d);
        day.normal();
        rows.append(&mut day.rows);
        d += 1;
    }
    rows.truncate(n);
    let shift = Utc::now().timestamp_micros() - 60_000_000 - rows[rows.len() - 1].at;
    rows.iter()
        .map(|r| {
            let at = DateTime::from_timestamp_micros(r.at + shift).expect("a time");
            json!({
                "lat": r.lat,
                "lon": r.lon,
                "recorded_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "speed": r.speed,
                "heading": r.heading,
                "accuracy": r.accuracy,
            })
        })
        .collect()
}

/// A server on a fresh database, detecting every `tick` seconds (0: not at all), takes every
/// fix in single posts; positions/s, and the fixes its detector was fed.
async fn ingest_run(fixes: Arc<Vec<Vec<Value>>>, tick: u64) -> anyhow::Result<(f64, u64)> {
    let db = support::fresh_database(INGEST_DATABASE).await?;
    let tick = tick.to_string();
    let server = Server::start(
        db.clone(),
        &["--segment-tick-s", &tick, "--alert-tick-s", "86400"],
    )
    .await?;
    let measured = async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(INGEST_WORKERS)
            .timeout(REQUEST_LIMIT)
            .build()?;
        create_user(&db, ORGANISATION, EMAIL, PASSWORD, Role::Dispatcher).await?;
        let jwt = support::sign_in(&http, &server.base, EMAIL, PASSWORD).await?;
        let tokens = support::create_vehicles(&http, &server.base, &jwt, fixes.len(), 16).await?;
        let tokens = Arc::new(tokens);
        let failed = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..INGEST_WORKERS.min(fixes.len()) {
            let (http, tokens, fixes, failed) =
                (http.clone(), tokens.clone(), fixes.clone(), failed.clone());
            let url = format!("{}/api/v1/positions", server.base);
            workers.spawn(async move {
                let per_vehicle = fixes[0].len();
                for k in 0..per_vehicle {
                    for v in (w..fixes.len()).step_by(INGEST_WORKERS) {
                        let ok = http
                            .post(&url)
                            .bearer_auth(&tokens[v])
                            .json(&fixes[v][k])
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
        let took = started.elapsed().as_secs_f64();
        let failed = failed.load(Ordering::Relaxed);
        if failed > 0 {
            bail!("{failed} posts failed");
        }
        let total: usize = fixes.iter().map(Vec::len).sum();
        anyhow::Ok((
            total as f64 / took,
            server.state.metrics.segmented_fixes.get(),
        ))
    }
    .await;
    server.stop().await;
    db.close().await;
    support::drop_database(INGEST_DATABASE).await?;
    measured.context("ingest run")
}

// ---------------------------------------------------------------------------------------------
// The results.

#[derive(Default)]
struct Report {
    fixes: u64,
    segments: (i64, i64),
    rows: Vec<(String, String, String)>,
}

impl Report {
    fn row(&mut self, phase: &str, what: &str, value: impl Into<String>) {
        self.rows
            .push((phase.to_owned(), what.to_owned(), value.into()));
    }

    fn print(&self, plan: &Plan) {
        println!(
            "\nhistory bench: {} vehicles, {} days ({} to {}), {} fixes\n",
            plan.vehicles,
            plan.days,
            plan.first_day.date_naive(),
            plan.last_day().date_naive(),
            thousands(self.fixes)
        );
        println!("| phase | measure | result |");
        println!("| --- | --- | --- |");
        for (phase, what, value) in &self.rows {
            println!("| {phase} | {what} | {value} |");
        }
    }
}

fn size(bytes: i64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}
