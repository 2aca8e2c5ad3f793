//! The route simulator against a real server: a short fleet on slices of the Munich trace, one
//! phone per protocol (two OsmAnd flavours), synthesised copies, GNSS noise and signal losses,
//! checked in the database for completeness, protocol and batching; every demo incident raising
//! its alert through the server's own rules; and `waymark-sim truth`, every bundled trace with
//! faults injected, which must find nothing untrue.
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

/// The simulator's command line for `command` against `app` as the dispatcher `sim@sim.test`,
/// plus `flags`.
fn sim_command(app: &TestApp, command: &str, flags: &[&str]) -> Command {
    let url = app.url("");
    let mut argv = vec![
        "waymark-sim",
        command,
        "--url",
        &url,
        "--email",
        "sim@sim.test",
        "--password",
        "correct horse",
    ];
    argv.extend_from_slice(flags);
    Cli::try_parse_from(argv).unwrap().selected_command()
}

/// `waymark-sim run --once` against `app` as the dispatcher `sim@sim.test`, plus `flags`.
fn run_args(app: &TestApp, state_file: &std::path::Path, flags: &[&str]) -> RunArgs {
    let state = state_file.to_string_lossy().into_owned();
    let flags = [&["--state-file", &state, "--once"], flags].concat();
    let Command::Run(args) = sim_command(app, "run", &flags) else {
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

/// The alerts `vehicle_id` raised under `rule`.
async fn alerts(app: &TestApp, jwt: &str, vehicle_id: i64, rule: &str) -> Vec<Value> {
    let path = format!("/api/v1/alerts?vehicle_id={vehicle_id}&rule={rule}");
    let (status, body) = app.get(jwt, &path).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body["alerts"].as_array().unwrap().clone()
}

/// The marked rows of `vehicle_id`'s audit log.
async fn marked_fixes(app: &TestApp, jwt: &str, vehicle_id: i64) -> Vec<Value> {
    let path = format!("/api/v1/vehicles/{vehicle_id}/positions?filtered=true");
    let (status, body) = app.get(jwt, &path).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body["positions"].as_array().unwrap().clone()
}

#[sqlx::test]
async fn every_demo_incident_raises_its_alert_with_fixes_the_server_keeps(db: PgPool) {
    // The alert clock ticks every second, so that `silent` is raised while the phone is off.
    let redis = std::env::var("REDIS_URL")
        .ok()
        .map(|url| (url, crate::support::unique_prefix()));
    let app = TestApp::spawn_with(db.clone(), redis, &["--alert-tick-s", "1"]).await;
    let (_, jwt) = app
        .user("Sim Logistics", "sim@sim.test", Role::Dispatcher)
        .await;
    let (_, admin) = app
        .user("Sim Logistics", "admin@sim.test", Role::Admin)
        .await;
    // The rules' times shortened to what a test can wait for (a minute is the least for
    // `stopped` and `silent`); the speed limit stays the default 25 m/s.
    let (status, body) = app
        .patch(
            &admin,
            "/api/v1/settings",
            serde_json::json!({"alerts": {"off_route_m": 100, "off_route_s": 10,
                "overspeed_min_s": 5, "stopped_min": 1, "silent_min": 1}}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");

    // One vehicle per incident, each on its own slice of the Munich drive, its incident
    // starting 1.5–4.5 s in. Outside the incident the trace plays 2–4 times faster (under
    // the jump filter on each slice), so no natural stop, silence, speed or turn lasts a
    // rule's time: an alert can only come from the incident, which plays in real time.
    let common = |kind: &'static str, protocol: &'static str, speedup, fixes| {
        vec![
            "--vehicles",
            "1",
            "--speedup",
            speedup,
            "--trip-fixes",
            fixes,
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
            "0.05",
            // Twice `off_route_m`, as the defaults are; 10 s to leave and 10 to rejoin.
            "--off-route-m",
            "200",
            "--off-route-minutes",
            "0.667",
            // The default pace (at least 110 km/h) for 15 s.
            "--speeding-minutes",
            "0.25",
            // Half a minute beyond the rule's minute: room for the clock's tick on a busy
            // machine (the alert is raised while the phone is off, or not at all).
            "--silent-minutes",
            "1.5",
            // A minute and five seconds: `stopped` is judged on the fixes of the stop itself.
            "--stopped-minutes",
            "1.0834",
        ]
    };
    let files = [state_file(), state_file(), state_file(), state_file()];
    let args = [
        run_args(&app, &files[0], &common("speeding", "osmand", "4", "150")),
        run_args(&app, &files[1], &common("silent", "owntracks", "4", "160")),
        run_args(&app, &files[2], &common("stopped", "traccar", "4", "40")),
        run_args(&app, &files[3], &common("off-route", "native", "2", "80")),
    ];
    let mut cars = slices().into_iter();
    let mut car = || vec![cars.next().unwrap()];
    let (speeding, silent, stopped, off_route) = tokio::join!(
        drive(&args[0], car()),
        drive(&args[1], car()),
        drive(&args[2], car()),
        drive(&args[3], car()),
    );
    for file in &files {
        let _ = std::fs::remove_file(file);
    }

    for (reports, kind, rule) in [
        (&speeding, Kind::Speeding, "overspeed"),
        (&silent, Kind::Silent, "silent"),
        (&stopped, Kind::Stopped, "stopped"),
        (&off_route, Kind::OffRoute, "off_route"),
    ] {
        let r = &reports[0];
        assert_eq!(r.incidents, [kind], "{}", r.name);
        assert_eq!(
            (r.sent, r.dropped, r.unsent),
            (r.recorded, 0, 0),
            "{}",
            r.name
        );
        // Raised once, and cleared when the incident was over.
        let raised = alerts(&app, &jwt, r.vehicle_id, rule).await;
        assert_eq!(raised.len(), 1, "{}: {raised:?}", r.name);
        assert!(!raised[0]["cleared_at"].is_null(), "{}: {raised:?}", r.name);
        // Plausible fixes: the server marked none of them.
        let marked = marked_fixes(&app, &jwt, r.vehicle_id).await;
        assert!(marked.is_empty(), "{}: {marked:?}", r.name);
    }

    // What each alert says matches the incident.
    let overspeed =
        alerts(&app, &jwt, speeding[0].vehicle_id, "overspeed").await[0]["details"].clone();
    let peak = overspeed["peak_mps"].as_f64().unwrap();
    assert!(peak > 110.0 / 3.6 - 0.6, "{overspeed}");
    let away = alerts(&app, &jwt, off_route[0].vehicle_id, "off_route").await[0]["details"].clone();
    let farthest = away["farthest_m"].as_f64().unwrap();
    assert!((180.0..=205.0).contains(&farthest), "{away}");

    // Silent: a gap of the silence's length in what was stored, and no backlog after it.
    let b = &silent[0];
    assert!(b.backlogs.is_empty());
    let stored = rows(&db, b.vehicle_id).await;
    assert_eq!(stored.len() as u64, b.recorded);
    let gap = stored
        .windows(2)
        .map(|w| (w[1].recorded_at - w[0].recorded_at).num_milliseconds())
        .max()
        .unwrap();
    assert!((89_000..92_000).contains(&gap), "{gap} ms");
}

/// `waymark-sim truth` against `app` as the dispatcher `sim@sim.test`, plus `flags`.
fn truth_args(app: &TestApp, flags: &[&str]) -> TruthArgs {
    let Command::Truth(args) = sim_command(app, "truth", flags) else {
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
