//! Ingest against its ceiling: Waymark's ingest beside PostgreSQL alone, on the same database,
//! schema and machine, in the same run, with the CPU each fix costs split per process.
//!
//! 1. **prepare**: a fresh database (`waymark_bench_ingest`, dropped at the end unless `--keep`);
//!    the release `waymark serve` (or `--server PATH`, an earlier build, to compare) as a child
//!    process, which migrates the database to its own schema, on a free loopback port with default
//!    settings but `WAYMARK_INGEST_RATE=0` (no Redis); an admin; and a short warm-up of
//!    `waymark-sim bench`, which makes `--vehicles` vehicles (10 000), each with a shipment, the
//!    way it does before every run. The tables are then exactly what the server uses.
//! 2. **PostgreSQL alone**, with every index of `positions`, rows as the writer stores them
//!    (every column: organisation, vehicle, shipment, a fresh seq past `event_seq`, a fix a
//!    second after the vehicle's newest, moving at 10 m/s near Munich):
//!    - one binary `COPY` of `--rows` rows (500 000), in time order across vehicles;
//!    - single-row commits: `--clients` connections (64), each inserting one row per
//!      transaction (autocommit, `synchronous_commit` as the server has it) for `--duration`
//!      seconds (15), each owning its vehicles so their fixes stay in order.
//!
//!    Their rows are then deleted (by seq: past the counter, nothing else has one) and
//!    `positions` vacuumed, so the server's runs find the table as the warm-up left it.
//! 3. **Waymark**: `waymark-sim bench` posting for `--duration` seconds with `--clients`
//!    requests in flight, single positions, then batches of 100: durable positions per second
//!    and request latency, from its `--json` report.
//! 4. **CPU**: user + system time from `/proc` over each timed part, per fix, for the server, for
//!    PostgreSQL (every `postgres` process serving this database, and the background ones: the
//!    postmaster, checkpointer, background writer, WAL writer, …; other databases' backends are
//!    not counted, nor processes that end within the part), for the load generator (this bench
//!    for PostgreSQL alone, `waymark-sim` for Waymark), and the rest of the machine; and how
//!    idle the machine was.
//!
//! `cargo bench --bench ingest [-- --duration S --rows N --clients C --vehicles V --server PATH
//! --keep --json]`;
//! needs `DATABASE_URL` (a role that may create databases) and builds the release `waymark` and
//! `waymark-sim` first (`cargo build --release -p waymark -p waymark-sim`, nothing when they are
//! up to date). Loopback only; every phase is bounded in time.
mod support;

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use chrono::{DateTime, Duration as Span, Utc};
use clap::Parser;
use futures_util::future::try_join_all;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use waymark::auth::{create_user, Role};
use waymark_sim::geo::{self, LatLon};

use support::thousands;

const DATABASE: &str = "waymark_bench_ingest";
const ORGANISATION: &str = "Ingest Bench";
const EMAIL: &str = "ingest-bench@waymark.local";
const PASSWORD: &str = "ingest-bench-password";
/// Seconds of the warm-up post, which is there to make the vehicles and shipments.
const WARM_UP_S: u32 = 2;
/// The server gets this long to migrate and answer `/readyz`...
const READY_LIMIT: Duration = Duration::from_secs(60);
/// ...and this long to stop on SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(20);
/// A `waymark-sim bench` run may take this long besides its load: setting up the vehicles and
/// shipments (it gives itself 300 s) and tidying up (60 s).
const SIM_SPARE: Duration = Duration::from_secs(420);
/// The COPY, the delete after it and the vacuum each get this long.
const STATEMENT_LIMIT: Duration = Duration::from_secs(300);
/// What `waymark-sim bench` logs the moment its load starts.
const LOAD_STARTS: &str = "posting for ";
/// The generated vehicles move this far between fixes, a second apart (the simulator's pace).
const STEP_M: f64 = 10.0;
/// PostgreSQL's epoch (2000-01-01) in Unix µs.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// The columns of a stored position, all of them, as the writer fills them.
const COLUMNS: &str = "organisation_id, vehicle_id, shipment_id, seq, recorded_at, received_at, \
                       point, accuracy, speed, heading, altitude, battery, late, filter_reason, \
                       attributes";

#[derive(Parser, Debug)]
#[command(about = "Waymark's ingest beside PostgreSQL alone, with the CPU per fix per process")]
struct Options {
    /// Seconds of each timed run: the single-row commits and each of the server's runs.
    #[arg(long, default_value_t = 15)]
    duration: u32,
    /// Rows in the COPY.
    #[arg(long, default_value_t = 500_000)]
    rows: usize,
    /// Connections committing single rows, and requests in flight against the server.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Vehicles, each with a shipment (waymark-sim takes at most 10 000).
    #[arg(long, default_value_t = 10_000)]
    vehicles: u32,
    /// Keep the database at the end.
    #[arg(long)]
    keep: bool,
    /// A `waymark` binary to measure instead of the one built from this tree (an earlier
    /// build, to compare in the same conditions); the load generator is still this tree's.
    #[arg(long)]
    server: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    anyhow::ensure!(options.duration >= 1, "give at least 1 second");
    anyhow::ensure!(options.rows >= 1, "give at least 1 row");
    anyhow::ensure!(options.clients >= 1, "give at least 1 client");
    anyhow::ensure!(
        (1..=10_000).contains(&options.vehicles),
        "give between 1 and 10 000 vehicles"
    );
    let mut binaries = Binaries::build()?;
    if let Some(server) = &options.server {
        anyhow::ensure!(server.exists(), "no server binary at {}", server.display());
        binaries.server = server.clone();
    }
    let clock = Clock::new()?;

    // Empty: the server under test migrates it when it starts, to its own schema.
    note("a fresh database");
    let db = support::empty_database(DATABASE).await?;
    let measured = run(&db, &binaries, &clock, &options).await;
    db.close().await;
    if !options.keep {
        support::drop_database(DATABASE).await?;
    }
    let report = measured?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    Ok(())
}

/// Progress, on standard error: the report alone goes to standard output.
fn note(what: &str) {
    eprintln!("ingest bench: {what}");
}

/// Starts the server, measures, and stops the server whatever happened.
async fn run(
    db: &PgPool,
    binaries: &Binaries,
    clock: &Clock,
    options: &Options,
) -> anyhow::Result<Report> {
    note("starting the server");
    let server = ServerProcess::start(&binaries.server).await?;
    let measured = measure(db, &server, binaries, clock, options).await;
    server.stop().await;
    measured
}

async fn measure(
    db: &PgPool,
    server: &ServerProcess,
    binaries: &Binaries,
    clock: &Clock,
    options: &Options,
) -> anyhow::Result<Report> {
    create_user(db, ORGANISATION, EMAIL, PASSWORD, Role::Admin).await?;
    let sim = Sim {
        binary: &binaries.sim,
        url: &server.base,
        vehicles: options.vehicles,
        clients: options.clients,
    };
    note(&format!(
        "warm-up: waymark-sim makes {} vehicles with shipments and posts for {WARM_UP_S} s",
        options.vehicles
    ));
    sim.run(WARM_UP_S, 1, server.pid, clock).await?;

    let mut tracks = tracks(db).await?;
    anyhow::ensure!(
        tracks.len() == options.vehicles as usize,
        "{} bench vehicles, not {}",
        tracks.len(),
        options.vehicles
    );
    let counter: i64 = sqlx::query_scalar("SELECT value FROM event_seq")
        .fetch_one(db)
        .await?;
    let seqs = Arc::new(AtomicI64::new(counter));
    let pids = Pids {
        server: server.pid,
        client: std::process::id(),
    };
    note(&format!(
        "PostgreSQL alone: COPY of {} rows",
        thousands(options.rows as u64)
    ));
    let copy = copy_rows(db, &mut tracks, &seqs, options.rows, pids, clock).await?;
    note(&format!(
        "PostgreSQL alone: single-row commits, {} clients, {} s",
        options.clients, options.duration
    ));
    let single = single_rows(tracks, &seqs, options, pids, clock).await?;
    note("deleting PostgreSQL alone's rows and vacuuming positions");
    forget_rows_after(db, counter).await?;

    let mut runs = vec![copy, single];
    for batch in [1, 100] {
        note(&format!(
            "Waymark: waymark-sim posting {} for {} s, {} in flight",
            if batch == 1 {
                "single positions".to_owned()
            } else {
                format!("batches of {batch}")
            },
            options.duration,
            options.clients
        ));
        runs.push(sim.run(options.duration, batch, server.pid, clock).await?);
    }
    let (copy_rate, single_rate) = (runs[0].rows_per_s, runs[1].rows_per_s);
    for run in &mut runs[2..] {
        run.of_copy = Some(run.rows_per_s / copy_rate);
        run.of_single_row_commits = Some(run.rows_per_s / single_rate);
    }
    Ok(Report {
        setting: Setting::read(db, options).await?,
        runs,
    })
}

// ---------------------------------------------------------------------------------------------
// The binaries and the server.

/// The release binaries under test, next to this bench in the target directory.
struct Binaries {
    server: PathBuf,
    sim: PathBuf,
}

impl Binaries {
    /// Builds them (nothing to do when they are up to date), so that the run never measures
    /// stale code.
    fn build() -> anyhow::Result<Binaries> {
        note("cargo build --release -p waymark -p waymark-sim");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        // What `cargo bench` sets for this bench alone: some build scripts (ring's) rerun when
        // it changes, which would rebuild the binaries here and again at the next plain build.
        remove_env(&mut command, |name| {
            name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&name)
        });
        let built = command
            .args(["build", "--release", "-p", "waymark", "-p", "waymark-sim"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .context("cargo runs")?;
        anyhow::ensure!(built.success(), "the release build failed");
        // This bench runs as target/release/deps/ingest-…; the binaries are in target/release.
        let exe = std::env::current_exe()?;
        let release = exe
            .parent()
            .and_then(Path::parent)
            .context("the bench's target directory")?;
        let binaries = Binaries {
            server: release.join("waymark"),
            sim: release.join("waymark-sim"),
        };
        for binary in [&binaries.server, &binaries.sim] {
            anyhow::ensure!(binary.exists(), "{} was not built", binary.display());
        }
        Ok(binaries)
    }
}

/// Takes out of `command`'s environment every inherited variable that `unwanted` names.
fn remove_env(command: &mut std::process::Command, unwanted: impl Fn(&str) -> bool) {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(&unwanted) {
            command.env_remove(&name);
        }
    }
}

/// Leaves out of a child's environment whatever would change its settings from the defaults
/// (the caller's `WAYMARK_*`, Redis, log filters); the bench sets what it means to.
fn scrubbed(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    remove_env(command.as_std_mut(), |name| {
        name.starts_with("WAYMARK_") || ["REDIS_URL", "RUST_LOG"].contains(&name)
    });
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// `waymark serve` as a child process on a loopback port of its own, logging to a file.
struct ServerProcess {
    child: Child,
    pid: u32,
    base: String,
    log: PathBuf,
}

impl ServerProcess {
    async fn start(binary: &Path) -> anyhow::Result<ServerProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::env::temp_dir().join(format!("{DATABASE}-server.log"));
        let file = std::fs::File::create(&log)?;
        let child = scrubbed(binary)
            .arg("serve")
            .env("DATABASE_URL", support::database_url(DATABASE)?)
            .env("WAYMARK_BIND", format!("127.0.0.1:{port}"))
            .env("WAYMARK_INGEST_RATE", "0")
            // Given, so that the server writes no secret file of its own.
            .env(
                "WAYMARK_JWT_SECRET",
                "waymark-bench-secret-waymark-bench-secret",
            )
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("{} starts", binary.display()))?;
        let mut server = ServerProcess {
            pid: child.id().context("the server's process id")?,
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.ready().await?;
        Ok(server)
    }

    /// Waits until `/readyz` answers 200 (the server has migrated and reaches the database).
    async fn ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited ({status}); see {}", self.log.display());
            }
            let ready = http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the server was not ready after {READY_LIMIT:?}; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, as an operator stops it, then SIGKILL if it does not stop in time.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(STOP_LIMIT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL alone.

/// One bench vehicle's fixes as made for PostgreSQL alone: a fix a second after its newest
/// stored one, moving `STEP_M` with a heading that wanders, as the simulator's vehicles do.
struct Track {
    organisation_id: i64,
    vehicle_id: i64,
    shipment_id: Option<i64>,
    at: DateTime<Utc>,
    point: LatLon,
    heading: f64,
}

impl Track {
    fn step(&mut self, rng: &mut impl Rng) {
        self.at += Span::seconds(1);
        self.heading = geo::normalise_deg(self.heading + rng.gen_range(-15.0..15.0));
        self.point = geo::destination(self.point, self.heading, STEP_M);
    }
}

/// A bench vehicle where the warm-up left it.
#[derive(sqlx::FromRow)]
struct Newest {
    vehicle_id: i64,
    organisation_id: i64,
    shipment_id: Option<i64>,
    at: DateTime<Utc>,
    lat: f64,
    lon: f64,
}

/// Every bench vehicle where the warm-up left it, with its shipment; one that did not post
/// starts now, where its shipment starts.
async fn tracks(db: &PgPool) -> anyhow::Result<Vec<Track>> {
    let newest: Vec<Newest> = sqlx::query_as(
        "SELECT v.id AS vehicle_id, v.organisation_id, s.id AS shipment_id,
                COALESCE(v.last_recorded_at, now()) AS at,
                ST_Y(COALESCE(v.last_point, s.origin)::geometry) AS lat,
                ST_X(COALESCE(v.last_point, s.origin)::geometry) AS lon
         FROM vehicles v
         JOIN organisations o ON o.id = v.organisation_id AND o.name = $1
         LEFT JOIN LATERAL (
             SELECT id, origin FROM shipments WHERE vehicle_id = v.id ORDER BY id DESC LIMIT 1
         ) s ON true
         ORDER BY v.id",
    )
    .bind(ORGANISATION)
    .fetch_all(db)
    .await?;
    let mut rng = StdRng::seed_from_u64(1);
    Ok(newest
        .into_iter()
        .map(|v| Track {
            organisation_id: v.organisation_id,
            vehicle_id: v.vehicle_id,
            shipment_id: v.shipment_id,
            at: v.at,
            point: LatLon::new(v.lat, v.lon),
            heading: rng.gen_range(0.0..360.0),
        })
        .collect())
}

/// Rows in PostgreSQL's binary `COPY` format, which spares the server parsing text.
struct BinaryCopy {
    out: Vec<u8>,
}

impl BinaryCopy {
    fn new(rows: usize) -> BinaryCopy {
        let mut out = Vec::with_capacity(19 + rows * 160 + 2);
        out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        BinaryCopy { out }
    }

    /// One row of every column, as the writer fills them for a plain fix.
    fn push(&mut self, track: &Track, seq: i64, received: DateTime<Utc>) {
        self.out.extend_from_slice(&15i16.to_be_bytes());
        self.int8(Some(track.organisation_id));
        self.int8(Some(track.vehicle_id));
        self.int8(track.shipment_id);
        self.int8(Some(seq));
        self.int8(Some(track.at.timestamp_micros() - PG_EPOCH_US));
        self.int8(Some(received.timestamp_micros() - PG_EPOCH_US));
        // EWKB, little-endian: a point with SRID 4326.
        self.out.extend_from_slice(&25i32.to_be_bytes());
        self.out.push(1);
        self.out.extend_from_slice(&0x2000_0001u32.to_le_bytes());
        self.out.extend_from_slice(&4326u32.to_le_bytes());
        self.out.extend_from_slice(&track.point.lon.to_le_bytes());
        self.out.extend_from_slice(&track.point.lat.to_le_bytes());
        self.float4(Some(5.0));
        self.float4(Some(STEP_M as f32));
        self.float4(Some(track.heading as f32));
        self.float4(None);
        self.float4(None);
        // late = false
        self.out.extend_from_slice(&1i32.to_be_bytes());
        self.out.push(0);
        self.null();
        self.null();
    }

    fn int8(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.out.extend_from_slice(&8i32.to_be_bytes());
                self.out.extend_from_slice(&v.to_be_bytes());
            }
            None => self.null(),
        }
    }

    fn float4(&mut self, v: Option<f32>) {
        match v {
            Some(v) => {
                self.out.extend_from_slice(&4i32.to_be_bytes());
                self.out.extend_from_slice(&v.to_be_bytes());
            }
            None => self.null(),
        }
    }

    fn null(&mut self) {
        self.out.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&(-1i16).to_be_bytes());
        self.out
    }
}

/// `rows` rows in one binary COPY (one transaction), a second of the fleet after another, as
/// live ingest interleaves vehicles. Encoded before the clock starts.
async fn copy_rows(
    db: &PgPool,
    tracks: &mut [Track],
    seqs: &AtomicI64,
    rows: usize,
    pids: Pids,
    clock: &Clock,
) -> anyhow::Result<Run> {
    let mut rng = StdRng::seed_from_u64(2);
    let received = Utc::now();
    let mut encoded = BinaryCopy::new(rows);
    for i in 0..rows {
        let n = tracks.len();
        let track = &mut tracks[i % n];
        track.step(&mut rng);
        encoded.push(track, seqs.fetch_add(1, Ordering::Relaxed) + 1, received);
    }
    let bytes = encoded.finish();
    let mut conn = db.acquire().await?;
    let before = Ticks::read(pids)?;
    let started = Instant::now();
    tokio::time::timeout(STATEMENT_LIMIT, async {
        let mut copy = conn
            .copy_in_raw(&format!(
                "COPY positions ({COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await?;
        for part in bytes.chunks(1 << 20) {
            copy.send(part).await?;
        }
        copy.finish().await
    })
    .await
    .context("the COPY took too long")??;
    let took = started.elapsed();
    let cpu = clock.per_fix(before, Ticks::read(pids)?, rows as u64);
    Ok(Run::new(
        format!(
            "PostgreSQL alone: COPY of {} rows (binary, one transaction)",
            thousands(rows as u64)
        ),
        rows as u64,
        took,
        None,
        cpu,
    ))
}

/// `--clients` connections, each committing one row per statement for `--duration` seconds;
/// client `c` owns every vehicle `v` with `v % clients == c`, one after another.
async fn single_rows(
    tracks: Vec<Track>,
    seqs: &Arc<AtomicI64>,
    options: &Options,
    pids: Pids,
    clock: &Clock,
) -> anyhow::Result<Run> {
    let url = support::database_url(DATABASE)?;
    let conns = try_join_all((0..options.clients).map(|_| PgConnection::connect(&url))).await?;
    let mut lanes: Vec<Vec<Track>> = (0..options.clients).map(|_| Vec::new()).collect();
    for (i, track) in tracks.into_iter().enumerate() {
        lanes[i % options.clients].push(track);
    }
    let before = Ticks::read(pids)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.duration.into());
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(lanes)
        .enumerate()
        .map(|(c, (conn, lane))| {
            tokio::spawn(commit_one_by_one(
                conn,
                lane,
                Arc::clone(seqs),
                deadline,
                c as u64,
            ))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut conns = Vec::new();
    for task in tasks {
        let (conn, took) = task.await??;
        latencies.extend(took);
        conns.push(conn);
    }
    let took = started.elapsed();
    let rows = latencies.len() as u64;
    let cpu = clock.per_fix(before, Ticks::read(pids)?, rows);
    for conn in conns {
        conn.close().await?;
    }
    Ok(Run::new(
        format!(
            "PostgreSQL alone: single-row commits, {} clients",
            options.clients
        ),
        rows,
        took,
        Latency::of(&mut latencies),
        cpu,
    ))
}

/// One client's loop: its connection back, and how long each commit took.
async fn commit_one_by_one(
    mut conn: PgConnection,
    mut lane: Vec<Track>,
    seqs: Arc<AtomicI64>,
    deadline: Instant,
    seed: u64,
) -> anyhow::Result<(PgConnection, Vec<Duration>)> {
    // The writer's own expression for the point, from longitude and latitude.
    let insert = format!(
        "INSERT INTO positions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6,
             ST_SetSRID(ST_MakePoint($7, $8), 4326)::geography, $9, $10, $11,
             NULL, NULL, false, NULL, NULL)"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut took = Vec::new();
    for i in 0.. {
        if Instant::now() >= deadline || lane.is_empty() {
            break;
        }
        let n = lane.len();
        let track = &mut lane[i % n];
        track.step(&mut rng);
        let started = Instant::now();
        sqlx::query(&insert)
            .bind(track.organisation_id)
            .bind(track.vehicle_id)
            .bind(track.shipment_id)
            .bind(seqs.fetch_add(1, Ordering::Relaxed) + 1)
            .bind(track.at)
            .bind(Utc::now())
            .bind(track.point.lon)
            .bind(track.point.lat)
            .bind(5.0f32)
            .bind(STEP_M as f32)
            .bind(track.heading as f32)
            .execute(&mut conn)
            .await?;
        took.push(started.elapsed());
    }
    Ok((conn, took))
}

/// Deletes PostgreSQL alone's rows (every row with a seq past the counter as it was: the
/// server hands out seqs from the counter, which they never advanced) and vacuums, so that the
/// server's runs find `positions` as the warm-up left it.
async fn forget_rows_after(db: &PgPool, counter: i64) -> anyhow::Result<()> {
    tokio::time::timeout(STATEMENT_LIMIT, async {
        sqlx::query("DELETE FROM positions WHERE seq > $1")
            .bind(counter)
            .execute(db)
            .await?;
        sqlx::raw_sql("VACUUM (ANALYZE) positions")
            .execute(db)
            .await?;
        anyhow::Ok(())
    })
    .await
    .context("deleting and vacuuming took too long")?
}

// ---------------------------------------------------------------------------------------------
// Waymark, loaded by waymark-sim.

struct Sim<'a> {
    binary: &'a Path,
    url: &'a str,
    vehicles: u32,
    clients: usize,
}

impl Sim<'_> {
    /// One `waymark-sim bench --json` run: its report, with the CPU from the moment it logs
    /// that its load starts to the moment it prints the report (before it tidies up).
    async fn run(
        &self,
        duration: u32,
        batch: u32,
        server: u32,
        clock: &Clock,
    ) -> anyhow::Result<Run> {
        let mut child = scrubbed(self.binary)
            .env("RUST_LOG", "info")
            .args(["bench", "--json", "--subscribers", "0", "--rate", "0"])
            .args(["--url", self.url, "--email", EMAIL, "--password", PASSWORD])
            .args(["--vehicles", &self.vehicles.to_string()])
            .args(["--concurrency", &self.clients.to_string()])
            .args(["--duration", &duration.to_string()])
            .args(["--batch", &batch.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("waymark-sim starts")?;
        let pids = Pids {
            server,
            client: child.id().context("waymark-sim's process id")?,
        };
        let limit = Duration::from_secs(duration.into()) + SIM_SPARE;
        let watched = tokio::time::timeout(limit, watch(&mut child, pids)).await;
        let (started, ended, log) = match watched {
            Ok(watched) => watched?,
            Err(_) => bail!("waymark-sim did not finish within {limit:?}"),
        };
        let status = child.wait().await?;
        let (Some(before), Some((after, report))) = (started, ended) else {
            bail!(
                "waymark-sim ({status}) did not report a load:\n{}",
                Vec::from(log).join("\n")
            );
        };
        anyhow::ensure!(
            status.success(),
            "waymark-sim failed ({status}):\n{}",
            Vec::from(log).join("\n")
        );
        let ingest = &report["ingest"];
        let number = |key: &str| {
            ingest[key]
                .as_f64()
                .with_context(|| format!("waymark-sim's report has no ingest.{key}"))
        };
        let fixes = number("durable_positions")? as u64;
        let latency = &ingest["latency_ms"];
        let mut run = Run::new(
            if batch == 1 {
                format!("Waymark: single POSTs, {} in flight", self.clients)
            } else {
                format!("Waymark: batches of {batch}, {} in flight", self.clients)
            },
            fixes,
            Duration::from_secs_f64(number("elapsed_s")?),
            latency["p50"]
                .as_f64()
                .zip(latency["p99"].as_f64())
                .map(|(p50, p99)| Latency {
                    p50_ms: p50,
                    p99_ms: p99,
                }),
            clock.per_fix(before, after, fixes),
        );
        run.failed_requests = number("requests_failed")? as u64;
        Ok(run)
    }
}

/// What a waymark-sim run showed: CPU when its load started, CPU and its report when it
/// printed it, and the end of its log.
type Watched = (Option<Ticks>, Option<(Ticks, Value)>, VecDeque<String>);

/// Reads waymark-sim's log and output until it closes both.
async fn watch(child: &mut Child, pids: Pids) -> anyhow::Result<Watched> {
    const LOG_TAIL: usize = 30;
    let mut out = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut err = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let (mut out_open, mut err_open) = (true, true);
    let (mut started, mut ended) = (None, None);
    let mut json = String::new();
    let mut log = VecDeque::with_capacity(LOG_TAIL);
    while out_open || err_open {
        tokio::select! {
            line = err.next_line(), if err_open => match line? {
                Some(line) => {
                    if started.is_none() && line.contains(LOAD_STARTS) {
                        started = Some(Ticks::read(pids)?);
                    }
                    if log.len() == LOG_TAIL {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
                None => err_open = false,
            },
            line = out.next_line(), if out_open => match line? {
                Some(line) => {
                    json.push_str(&line);
                    json.push('\n');
                    // The pretty-printed report ends with a lone closing brace.
                    if ended.is_none() && line == "}" {
                        let ticks = Ticks::read(pids)?;
                        ended = Some((ticks, serde_json::from_str(&json)?));
                    }
                }
                None => out_open = false,
            },
        }
    }
    Ok((started, ended, log))
}

// ---------------------------------------------------------------------------------------------
// CPU.

/// The processes a run's CPU is split between, besides PostgreSQL's.
#[derive(Debug, Clone, Copy)]
struct Pids {
    server: u32,
    /// The load generator.
    client: u32,
}

/// CPU time so far, in clock ticks: of the server, PostgreSQL, the load generator and the
/// whole machine (busy and idle, over all cores).
#[derive(Debug, Clone, Copy)]
struct Ticks {
    server: u64,
    postgres: u64,
    client: u64,
    busy: u64,
    idle: u64,
}

impl Ticks {
    fn read(pids: Pids) -> anyhow::Result<Ticks> {
        let (busy, idle) = machine_ticks()?;
        Ok(Ticks {
            server: process_ticks(pids.server)?,
            postgres: postgres_ticks(),
            client: process_ticks(pids.client)?,
            busy,
            idle,
        })
    }
}

/// User + system time of one process (all its threads), from `/proc/PID/stat`.
fn process_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("the CPU time of process {pid}"))?;
    // The command name may hold spaces and parentheses; the fields after its last `)` start
    // with the state (field 3); utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("a /proc stat line")?
        .1
        .split_whitespace()
        .collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(fields.get(n - 3).context("a /proc stat field")?.parse()?)
    };
    Ok(field(14)? + field(15)?)
}

/// User + system time of the `postgres` processes that work for this bench: the backends of
/// its database and the ones of no database (postmaster, checkpointer, writers, launchers).
/// Backends of other databases on the same server are someone else's load.
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|title| works_for_us(&String::from_utf8_lossy(&title)))
        })
        // A process that ended since it was listed counts nothing.
        .filter_map(|pid| process_ticks(pid).ok())
        .sum()
}

/// Whether a `postgres` process, by its title, serves this bench's database or none: a
/// backend's title is `postgres: [cluster: ]user database host(port) activity` (or `[local]`),
/// an autovacuum worker's names its database too.
fn works_for_us(title: &str) -> bool {
    let words: Vec<&str> = title
        .split(|c: char| c.is_whitespace() || c == '\0')
        .collect();
    if words.contains(&DATABASE) {
        return true;
    }
    let backend = words
        .iter()
        .any(|w| *w == "[local]" || (w.ends_with(')') && w.contains('(')));
    !backend && !title.contains("autovacuum worker")
}

/// Busy and idle (with waiting for I/O) time of all cores, from the `cpu` line of `/proc/stat`.
fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    anyhow::ensure!(values.len() >= 8, "a short cpu line in /proc/stat");
    let idle = values[3] + values[4];
    let busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7];
    Ok((busy, idle))
}

/// The length of a clock tick, which `/proc` counts in.
struct Clock {
    tick_us: f64,
}

impl Clock {
    fn new() -> anyhow::Result<Clock> {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .context("getconf CLK_TCK")?;
        let hz: f64 = String::from_utf8(out.stdout)?.trim().parse()?;
        Ok(Clock { tick_us: 1e6 / hz })
    }

    /// The CPU spent between two readings, in µs per fix.
    fn per_fix(&self, before: Ticks, after: Ticks, fixes: u64) -> Cpu {
        let per_fix = |ticks: u64| ticks as f64 * self.tick_us / fixes.max(1) as f64;
        let (server, postgres, client) = (
            after.server.saturating_sub(before.server),
            // Less when a process ended in between.
            after.postgres.saturating_sub(before.postgres),
            after.client.saturating_sub(before.client),
        );
        let busy = after.busy.saturating_sub(before.busy);
        let idle = after.idle.saturating_sub(before.idle);
        Cpu {
            server_us: per_fix(server),
            postgres_us: per_fix(postgres),
            load_generator_us: per_fix(client),
            rest_us: per_fix(busy.saturating_sub(server + postgres + client)),
            idle: idle as f64 / (busy + idle).max(1) as f64,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Debug, Serialize)]
struct Report {
    setting: Setting,
    runs: Vec<Run>,
}

/// What the figures depend on besides the code.
#[derive(Debug, Serialize)]
struct Setting {
    cores: usize,
    postgresql: String,
    synchronous_commit: String,
    autovacuum: String,
    vehicles: u32,
    clients: usize,
    duration_s: u32,
}

impl Setting {
    async fn read(db: &PgPool, options: &Options) -> anyhow::Result<Setting> {
        let show = |name: &'static str| async move {
            sqlx::query_scalar::<_, String>(&format!("SHOW {name}"))
                .fetch_one(db)
                .await
        };
        Ok(Setting {
            cores: std::thread::available_parallelism()?.get(),
            postgresql: show("server_version").await?,
            synchronous_commit: show("synchronous_commit").await?,
            autovacuum: show("autovacuum").await?,
            vehicles: options.vehicles,
            clients: options.clients,
            duration_s: options.duration,
        })
    }
}

#[derive(Debug, Serialize)]
struct Run {
    name: String,
    rows: u64,
    seconds: f64,
    rows_per_s: f64,
    /// Waymark's rate over the COPY's...
    of_copy: Option<f64>,
    /// ...and over the single-row commits'.
    of_single_row_commits: Option<f64>,
    /// Of a commit (PostgreSQL alone) or a request (Waymark).
    latency: Option<Latency>,
    failed_requests: u64,
    cpu: Cpu,
}

impl Run {
    fn new(name: String, rows: u64, took: Duration, latency: Option<Latency>, cpu: Cpu) -> Run {
        Run {
            name,
            rows,
            seconds: took.as_secs_f64(),
            rows_per_s: rows as f64 / took.as_secs_f64().max(1e-9),
            of_copy: None,
            of_single_row_commits: None,
            latency,
            failed_requests: 0,
            cpu,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
}

impl Latency {
    fn of(took: &mut [Duration]) -> Option<Latency> {
        if took.is_empty() {
            return None;
        }
        took.sort_unstable();
        let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
        Some(Latency {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        })
    }
}

/// CPU per fix, in µs, and the machine's idle share over the run.
#[derive(Debug, Clone, Copy, Serialize)]
struct Cpu {
    server_us: f64,
    /// This database's backends and PostgreSQL's background processes.
    postgres_us: f64,
    /// This bench (PostgreSQL alone) or waymark-sim (Waymark).
    load_generator_us: f64,
    /// Every other process on the machine.
    rest_us: f64,
    /// Idle or waiting for I/O, over all cores.
    idle: f64,
}

impl Report {
    fn print(&self) {
        let s = &self.setting;
        println!(
            "\ningest bench: {} vehicles with shipments, {} clients, {} s runs; {} cores; \
             PostgreSQL {}, synchronous_commit {}, autovacuum {}\n",
            thousands(s.vehicles.into()),
            s.clients,
            s.duration_s,
            s.cores,
            s.postgresql,
            s.synchronous_commit,
            s.autovacuum
        );
        println!(
            "| run | rows | rows/s | of COPY | of single-row commits | latency p50 / p99 | \
             CPU µs/fix: server | PostgreSQL | load generator | rest | idle |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let share = |f: Option<f64>| f.map_or("".to_owned(), |f| format!("{:.0} %", f * 100.0));
        for run in &self.runs {
            let failed = if run.failed_requests > 0 {
                format!(" ({} failed requests)", thousands(run.failed_requests))
            } else {
                String::new()
            };
            println!(
                "| {}{failed} | {} | **{}** | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} % |",
                run.name,
                thousands(run.rows),
                thousands(run.rows_per_s.round() as u64),
                share(run.of_copy),
                share(run.of_single_row_commits),
                run.latency.map_or("".to_owned(), |l| format!(
                    "{:.2} / {:.2} ms",
                    l.p50_ms, l.p99_ms
                )),
                run.cpu.server_us,
                run.cpu.postgres_us,
                run.cpu.load_generator_us,
                run.cpu.rest_us,
                run.cpu.idle * 100.0
            );
        }
        println!(
            "\nCPU per fix from /proc over each timed part: PostgreSQL is this database's \
             backends and the server's background processes; the load generator is this bench \
             for PostgreSQL alone and waymark-sim for Waymark; rest is every other process."
        );
    }
}
