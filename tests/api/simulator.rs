//! The route simulator against a real server: a short fleet on slices of the Munich trace, one
//! phone per protocol (two OsmAnd flavours), synthesised copies, GNSS noise and signal losses,
//! checked in the database for completeness, protocol and batching; and `waymark-sim truth`,
//! every bundled trace with faults injected, which must find nothing untrue.
use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use waymark::auth::Role;
use waymark_sim::config::{Cli, Command, RunArgs, TruthArgs};
use waymark_sim::run::incident::Kind;
use waymark_sim::run::protocol::Protocol;
use waymark_sim::run::{run_fleet, Report};
use waymark_sim::tracks::{self, SimVehicle};
use waymark_sim::truth;

use crate::support::TestApp;

/// Four recorded vehicles on different stretches of the 1 Hz Munich drive.
fn slices() -> Vec<SimVehicle> {
    let fleet = tracks::fleet().unwrap();
    let munich = &fleet.iter().find(|v| v.name == "Car Munich").unwrap().trips[0];
    ["A", "B", "C", "D"]
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let mut trip = munich.clone();
            trip.fixes.drain(..k * 150);
            SimVehicle {
                name: format!("Test car {name}"),
                trips: vec![trip],
            }
        })
        .collect()
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    recorded_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    attributes: Option<Value>,
}

async fn rows(db: &PgPool, vehicle_id: i64) -> Vec<Row> {
    sqlx::query_as(
        "SELECT recorded_at, received_at, attributes FROM positions
         WHERE vehicle_id = $1 ORDER BY recorded_at",
    )
    .bind(vehicle_id)
    .fetch_all(db)
    .await
    .unwrap()
}

fn has_attribute(row: &Row, key: &str) -> bool {
    row.attributes
        .as_ref()
        .is_some_and(|a| a.get(key).is_some())
}

fn whole_second(t: DateTime<Utc>) -> bool {
    t.timestamp_subsec_micros() == 0
}

/// `waymark-sim run --once` against `app` as the dispatcher `sim@sim.test`, plus `flags`.
fn run_args(app: &TestApp, state_file: &std::path::Path, flags: &[&str]) -> RunArgs {
    let url = app.url("");
    let state = state_file.to_string_lossy().into_owned();
    let mut argv = vec![
        "waymark-sim",
        "run",
        "--url",
        &url,
        "--email",
        "sim@sim.test",
        "--password",
        "correct horse",
        "--state-file",
        &state,
        "--once",
    ];
    argv.extend_from_slice(flags);
    let Command::Run(args) = Cli::try_parse_from(argv).unwrap().selected_command() else {
        unreachable!()
    };
    args
}

fn state_file() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "waymark-sim-test-{}.json",
        waymark::auth::token::generate(16)
    ))
}

/// Drives `base` to the end of its trips, within a bound. The trips take 8 s at the speed-up
/// the tests use; the bound is for a run that hangs, with room for a busy machine.
async fn drive(args: &RunArgs, base: Vec<SimVehicle>) -> Vec<Report> {
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        run_fleet(args, base, CancellationToken::new()),
    )
    .await
    .expect("the fleet finishes its trips")
    .unwrap()
}

#[sqlx::test]
async fn the_simulator_drives_every_protocol_and_sends_backlogs_complete_and_once(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    app.user("Sim Logistics", "sim@sim.test", Role::Dispatcher)
        .await;
    let state_file = state_file();
    // 80 fixes at 1 Hz in 8 s; a signal loss of 2.25–3.75 s starts 0.9–2.7 s in.
    let args = run_args(
        &app,
        &state_file,
        &[
            "--speedup",
            "10",
            "--vehicles",
            "6",
            "--protocols",
            "native,osmand,traccar,owntracks",
            "--trip-fixes",
            "80",
            "--seed",
            "42",
            "--signal-loss-every",
            "0.03",
            "--signal-loss-seconds",
            "3",
        ],
    );
    let reports = drive(&args, slices()).await;
    let _ = std::fs::remove_file(&state_file);

    let names: Vec<(&str, Protocol, &str)> = reports
        .iter()
        .map(|r| (r.name.as_str(), r.protocol, r.speed_unit))
        .collect();
    assert_eq!(
        names,
        [
            ("Test car A", Protocol::Native, "knots"),
            ("Test car B", Protocol::Osmand, "knots"),
            ("Test car C", Protocol::Traccar, "knots"),
            ("Test car D", Protocol::Owntracks, "knots"),
            ("Test car A #2", Protocol::Native, "knots"),
            ("Test car B #2", Protocol::Osmand, "mps"),
        ]
    );

    let mut total = 0;
    for r in &reports {
        // Everything recorded arrived, once: a fix re-sent with another time would be an
        // extra row, a lost one a missing row.
        // A copy may start late in its trip, and the apps take one fix a second at most.
        assert!(r.recorded >= 2, "{}: {} fixes", r.name, r.recorded);
        assert_eq!(
            (r.sent, r.dropped, r.unsent),
            (r.recorded, 0, 0),
            "{}",
            r.name
        );
        let stored = rows(&db, r.vehicle_id).await;
        assert_eq!(stored.len() as u64, r.recorded, "{}", r.name);
        total += stored.len();

        // Each protocol leaves its own trace on the stored rows.
        let all = |f: &dyn Fn(&Row) -> bool| stored.iter().all(f);
        match (r.protocol, r.speed_unit) {
            (Protocol::Native, _) => assert!(all(&|row| row.attributes.is_none()), "{}", r.name),
            (Protocol::Osmand, "knots") => {
                // The legacy Traccar Client: epoch seconds, no extra keys.
                assert!(all(
                    &|row| row.attributes.is_none() && whole_second(row.recorded_at)
                ));
            }
            (Protocol::Osmand, _) => assert!(all(&|row| has_attribute(row, "hdop"))),
            (Protocol::Traccar, _) => assert!(all(&|row| has_attribute(row, "activity")
                && has_attribute(row, "motion")
                && has_attribute(row, "odometer"))),
            (Protocol::Owntracks, _) => assert!(all(&|row| has_attribute(row, "tid")
                && has_attribute(row, "conn")
                && whole_second(row.recorded_at))),
        }

        // A backlog arrives whole: in one batch (one commit) from a native phone, one request
        // at a time and oldest first from the apps.
        for backlog in &r.backlogs {
            let held: Vec<&Row> = stored
                .iter()
                .filter(|row| row.recorded_at >= backlog.first && row.recorded_at <= backlog.last)
                .collect();
            assert_eq!(held.len(), backlog.count, "{}: {backlog:?}", r.name);
            if r.protocol == Protocol::Native {
                assert!(
                    held.iter()
                        .all(|row| row.received_at == held[0].received_at),
                    "{}: one batch",
                    r.name
                );
            } else {
                assert!(
                    held.windows(2).all(|w| w[0].received_at < w[1].received_at),
                    "{}: one at a time, oldest first",
                    r.name
                );
            }
        }
    }
    // The recorded vehicles each lost their signal once and caught up with several fixes.
    for r in &reports[..4] {
        assert!(
            r.backlogs.iter().any(|b| b.count >= 2),
            "{}: {:?}",
            r.name,
            r.backlogs
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored as usize, total);

    // Each vehicle drove its one trip as a shipment, delivered at the end.
    let delivered: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT vehicle_id) FROM shipments WHERE status = 'delivered'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(delivered, 6);
}

#[sqlx::test]
async fn incidents_take_a_vehicle_off_its_route_and_another_off_the_air(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    app.user("Sim Logistics", "sim@sim.test", Role::Dispatcher)
        .await;
    let (state_a, state_b) = (state_file(), state_file());
    // One incident every 1.2 s of the one candidate, so the first starts 0.6–1.8 s in and,
    // lasting 3 s, ends well before the 8 s trip does.
    let flags = |kind: &'static str, protocol: &'static str| {
        vec![
            "--vehicles",
            "1",
            "--speedup",
            "10",
            "--trip-fixes",
            "80",
            "--seed",
            "7",
            "--no-noise",
            "--signal-loss-every",
            "0",
            "--protocols",
            protocol,
            "--incidents",
            kind,
            "--incident-every",
            "0.02",
            "--off-route-minutes",
            "0.05",
            "--silent-minutes",
            "0.05",
        ]
    };
    let off_route = run_args(&app, &state_a, &flags("off-route", "native"));
    let silent = run_args(&app, &state_b, &flags("silent", "owntracks"));
    let mut cars = slices();
    let (b, a) = (cars.swap_remove(1), cars.swap_remove(0));
    let (off_route, silent) = tokio::join!(drive(&off_route, vec![a]), drive(&silent, vec![b]));
    let _ = std::fs::remove_file(&state_a);
    let _ = std::fs::remove_file(&state_b);

    // Off route: the middle of the detour is about 400 m from the planned route (PostGIS's
    // own distance), and the vehicle starts and ends on it. (Its shipment may have arrived
    // before its last fixes, which then belong to no shipment: matched by vehicle.)
    let a = &off_route[0];
    assert_eq!(a.incidents, [Kind::OffRoute]);
    let distances: Vec<f64> = sqlx::query_scalar(
        "SELECT ST_Distance(p.point, s.planned_route) FROM positions p
         JOIN shipments s ON s.vehicle_id = p.vehicle_id
         WHERE p.vehicle_id = $1 ORDER BY p.recorded_at",
    )
    .bind(a.vehicle_id)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(distances.len() as u64, a.recorded);
    let away = distances.iter().filter(|&&d| d > 350.0).count();
    assert!(away >= 5, "{away} fixes far off the route: {distances:?}");
    assert!(distances.iter().all(|&d| d < 420.0), "{distances:?}");
    for d in distances[..3]
        .iter()
        .chain(&distances[distances.len() - 3..])
    {
        assert!(*d < 5.0, "on the route at the ends: {distances:?}");
    }

    // Silent: a gap of the silence's length in what was stored, and no backlog after it.
    let b = &silent[0];
    assert_eq!(b.incidents, [Kind::Silent]);
    assert!(b.backlogs.is_empty());
    let stored = rows(&db, b.vehicle_id).await;
    assert_eq!(stored.len() as u64, b.recorded);
    let gap = stored
        .windows(2)
        .map(|w| (w[1].recorded_at - w[0].recorded_at).num_milliseconds())
        .max()
        .unwrap();
    assert!((2_900..4_500).contains(&gap), "{gap} ms");
    // Reporting resumed right away: nothing sent after the gap is older than it.
    assert!(stored
        .windows(2)
        .all(|w| w[0].received_at <= w[1].received_at));
}

/// `waymark-sim truth` against `app` as the dispatcher `sim@sim.test`, plus `flags`.
fn truth_args(app: &TestApp, flags: &[&str]) -> TruthArgs {
    let url = app.url("");
    let mut argv = vec![
        "waymark-sim",
        "truth",
        "--url",
        &url,
        "--email",
        "sim@sim.test",
        "--password",
        "correct horse",
    ];
    argv.extend_from_slice(flags);
    let Command::Truth(args) = Cli::try_parse_from(argv).unwrap().selected_command() else {
        unreachable!()
    };
    args
}

#[sqlx::test]
async fn every_bundled_trace_replayed_with_faults_shows_only_the_truth(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    app.user("Sim Logistics", "sim@sim.test", Role::Dispatcher)
        .await;
    // The replay names what it found untrue in warnings: shown when the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let args = truth_args(&app, &["--seed", "3"]);
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        truth::replay(&args, tracks::fleet().unwrap(), CancellationToken::new()),
    )
    .await
    .expect("the replay finishes")
    .unwrap();

    // Every trace was replayed with every fault, so that a check that finds nothing found
    // nothing because there was nothing, not because nothing was injected.
    let traces = tracks::fleet().unwrap().len() as u64;
    assert_eq!(report.traces, traces, "{report}");
    assert_eq!(report.clock_ahead_faults, traces, "{report}");
    assert_eq!(report.batches_out_of_order, traces, "{report}");
    assert_eq!(report.glitches_in_tracks, traces, "{report}");
    assert_eq!(report.backlog_glitches, 2 * traces, "{report}");
    assert!(report.resent_batches >= traces, "{report}");
    assert_eq!(report.tracks_checked, 2 * traces, "{report}");
    assert_eq!(report.parked_vehicles, 6, "{report}");
    assert!(report.current_checks >= 6 * traces, "{report}");

    assert_eq!(report.false_currents, 0, "{report}");
    assert_eq!(report.marked_drawn, 0, "{report}");
    assert_eq!(report.geofence_flaps, 0, "{report}");
    assert_eq!(report.geofence_enters_missed, 0, "{report}");
    assert_eq!(report.not_stored_once, 0, "{report}");
    assert_eq!(report.faults_unmarked, 0, "{report}");
    assert_eq!(report.failures(), 0);

    // What the report counts is what the database holds: each fault stored once, marked.
    let marked: Vec<(String, i64)> = sqlx::query_as(
        "SELECT filter_reason, count(*) FROM positions WHERE filter_reason IS NOT NULL
         GROUP BY filter_reason ORDER BY filter_reason",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let count = |reason: &str| {
        marked
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0, |(_, n)| *n as u64)
    };
    assert_eq!(
        count("clock_ahead"),
        report.clock_ahead_faults,
        "{marked:?}"
    );
    assert!(count("jump") >= report.backlog_glitches, "{marked:?}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored as u64, report.logged_rows + report.parked_fixes);
}
