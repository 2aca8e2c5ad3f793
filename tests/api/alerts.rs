//! The alerts channel: each rule against real PostGIS, driven by hand-placed points and the real
//! Munich trace; the lifecycle (seq, `since`, acknowledgement reaching every dispatcher); and
//! tenancy.
use chrono::{DateTime, Duration, SubsecRound, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::{fleet, unique_prefix, Fleet, TestApp, WsClient};

/// Marienplatz, where the test shipments start.
const HOME: (f64, f64) = (48.1374, 11.5755);

/// A fix at `lat, lon`, `s` seconds after `base`, reporting `speed` m/s.
fn fix(lat: f64, lon: f64, base: DateTime<Utc>, s: i64, speed: f64) -> Value {
    json!({
        "lat": lat, "lon": lon, "speed": speed, "accuracy": 5.0,
        "recorded_at": (base + Duration::seconds(s)).to_rfc3339(),
    })
}

/// A time a few hours back, whole seconds, so a test's points are never in the future.
fn base() -> DateTime<Utc> {
    (Utc::now() - Duration::hours(3)).trunc_subsecs(0)
}

impl Fleet {
    async fn post(&self, points: Vec<Value>) -> Value {
        let (status, reply) = self.app.ingest(&self.token, Value::Array(points)).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        reply
    }

    /// The organisation's alerts matching `query`, oldest first.
    async fn alerts(&self, query: &str) -> Vec<Value> {
        let (status, body) = self
            .app
            .get(&self.dispatcher, &format!("/api/v1/alerts?{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut alerts = body["alerts"].as_array().unwrap().clone();
        alerts.reverse();
        alerts
    }

    async fn rules(&self) -> Vec<String> {
        self.alerts("")
            .await
            .iter()
            .map(|a| a["rule"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn geofence(&self, body: Value) -> i64 {
        let (status, fence) = self
            .app
            .post(&self.dispatcher, "/api/v1/geofences", body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{fence}");
        fence["id"].as_i64().unwrap()
    }

    /// A shipment for the van from `HOME` to `to`, along `route` when given.
    async fn shipment(
        &self,
        to: (f64, f64),
        route: Option<Vec<[f64; 2]>>,
        due: Option<DateTime<Utc>>,
    ) -> i64 {
        let mut body = json!({
            "reference": format!("SHP-{}", waymark::auth::token::generate(16)),
            "origin": {"lat": HOME.0, "lon": HOME.1},
            "destination": {"lat": to.0, "lon": to.1},
            "vehicle_id": self.vehicle,
            "due_at": due,
        });
        if let Some(route) = route {
            body["planned_route"] = json!({"type": "LineString", "coordinates": route});
        }
        let (status, s) = self
            .app
            .post(&self.dispatcher, "/api/v1/shipments", body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{s}");
        let id = s["id"].as_i64().unwrap();
        self.app.backdate(id).await;
        id
    }

    async fn settings(&self, patch: Value) {
        let (_, admin) = self.app.user("Acme", "admin@acme.test", Role::Admin).await;
        let res = self
            .app
            .http
            .patch(self.app.url("/api/v1/settings"))
            .bearer_auth(admin)
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn shipment_json(&self, id: i64) -> Value {
        let (status, s) = self
            .app
            .get(&self.dispatcher, &format!("/api/v1/shipments/{id}"))
            .await;
        assert_eq!(status, StatusCode::OK);
        s
    }
}

/// The next `alert` frame (skipping positions), with its event name.
async fn next_alert(ws: &mut WsClient) -> Value {
    loop {
        let frame = ws.next().await;
        if frame["type"] == "alert" {
            return frame;
        }
        assert_eq!(frame["type"], "position", "{frame}");
    }
}

/// East of `HOME` by `m` metres (along its latitude).
fn east(m: f64) -> (f64, f64) {
    (HOME.0, HOME.1 + m / (111_320.0 * HOME.0.to_radians().cos()))
}

#[sqlx::test]
async fn a_wobble_on_the_boundary_raises_one_enter_and_one_exit_even_across_a_restart(db: PgPool) {
    let f = fleet(TestApp::spawn(db.clone()).await).await;
    let depot = f
        .geofence(
            json!({"name": "Depot", "circle": {"lat": HOME.0, "lon": HOME.1, "radius_m": 100.0}}),
        )
        .await;
    let t = base();
    let (inside, outside) = (east(60.0), east(140.0));
    // In and out every 5 s for 20 s (under the 30 s debounce), then in for good.
    let mut points = Vec::new();
    for i in 0..4 {
        let p = if i % 2 == 0 { outside } else { inside };
        points.push(fix(p.0, p.1, t, i * 5, 3.0));
    }
    for i in 4..12 {
        points.push(fix(inside.0, inside.1, t, i * 5, 1.0));
    }
    f.post(points).await;
    assert_eq!(f.rules().await, ["geofence_enter"]);
    let enter = &f.alerts("rule=geofence_enter").await[0];
    assert_eq!(enter["geofence_id"], depot);
    assert_eq!(enter["vehicle_id"], f.vehicle);
    assert_eq!(enter["details"]["geofence"], "Depot");

    // The rule state lives with the vehicle: a new instance carries on where the last stopped.
    f.app.shutdown().await;
    let f = Fleet {
        app: TestApp::spawn(db).await,
        ..f
    };
    let mut points = Vec::new();
    for i in 12..16 {
        let p = if i % 2 == 0 { outside } else { inside };
        points.push(fix(p.0, p.1, t, i * 5, 3.0));
    }
    for i in 16..24 {
        points.push(fix(outside.0, outside.1, t, i * 5, 1.0));
    }
    f.post(points).await;
    assert_eq!(f.rules().await, ["geofence_enter", "geofence_exit"]);
}

/// GPS error that drifts as a receiver's does: each axis an AR(1) process with σ 7 m and a
/// correlation time of three minutes, sampled every `every` seconds from a fixed seed.
fn drift(seed: u64, every: f64, n: usize) -> Vec<(f64, f64)> {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(seed);
    let mut normal = move || {
        let u: f64 = 1.0 - rng.gen::<f64>();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.gen::<f64>()).cos()
    };
    let (sigma, keep) = (7.0, (-every / 180.0_f64).exp());
    let fresh = sigma * (1.0 - keep * keep).sqrt();
    let (mut north, mut east) = (sigma * normal(), sigma * normal());
    (0..n)
        .map(|_| {
            north = keep * north + fresh * normal();
            east = keep * east + fresh * normal();
            (north, east)
        })
        .collect()
}

/// `at` moved `north` metres north and `east_m` east.
fn moved(at: (f64, f64), north: f64, east_m: f64) -> (f64, f64) {
    (
        at.0 + north / 111_320.0,
        at.1 + east_m / (111_320.0 * at.0.to_radians().cos()),
    )
}

#[sqlx::test]
async fn vehicles_parked_by_a_geofence_edge_with_drifting_fixes_do_not_flap(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let (inner, inner_token) = f.app.vehicle(&f.dispatcher, "Van 2").await;
    f.geofence(
        json!({"name": "Depot", "circle": {"lat": HOME.0, "lon": HOME.1, "radius_m": 150.0}}),
    )
    .await;
    let t = base() - Duration::hours(1);
    // Van 1 parks 5 m outside the edge; van 2 waits a minute in the middle, drives out and
    // parks 5 m inside it. Half an hour of fixes every 10 s, each off by the drift, reporting
    // the 10 m accuracy a phone gives for it.
    let noisy = |place: (f64, f64), s: i64, (north, east): (f64, f64)| {
        let (lat, lon) = moved(place, north, east);
        let mut p = fix(lat, lon, t, s, 0.0);
        p["accuracy"] = json!(10.0);
        p
    };
    let outer_fixes: Vec<Value> = drift(7, 10.0, 180)
        .into_iter()
        .enumerate()
        .map(|(i, d)| noisy(east(155.0), i as i64 * 10, d))
        .collect();
    let inner_path = (0..6)
        .map(|_| 0.0)
        .chain((1..=14).map(|i| i as f64 * 10.4))
        .chain(std::iter::repeat_n(145.0, 180));
    let inner_fixes: Vec<Value> = inner_path
        .zip(drift(8, 10.0, 200))
        .enumerate()
        .map(|(i, (x, d))| noisy(east(x), i as i64 * 10, d))
        .collect();
    for (a, b) in outer_fixes.chunks(30).zip(inner_fixes.chunks(30)) {
        f.post(a.to_vec()).await;
        let (status, reply) = f.app.ingest(&inner_token, Value::Array(b.to_vec())).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    let alerts = f.alerts("").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule"], "geofence_enter");
    assert_eq!(alerts[0]["vehicle_id"], inner);
}

#[sqlx::test]
async fn a_drive_through_raises_enter_and_exit_even_between_sparse_fixes(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let depot = f
        .geofence(
            json!({"name": "Depot", "circle": {"lat": HOME.0, "lon": HOME.1, "radius_m": 100.0}}),
        )
        .await;
    // A gate 70 m across the road, 360 m on, that no fix falls inside.
    let (gate_lat, gate_lon) = east(360.0);
    let gate = f
        .geofence(
            json!({"name": "Gate", "circle": {"lat": gate_lat, "lon": gate_lon, "radius_m": 35.0}}),
        )
        .await;
    let t = base();
    // East through both at 12 m/s, a fix every 10 s: 17 s in the depot (under the 30 s
    // debounce), two fixes inside it, none in the gate.
    let points = (0..11)
        .map(|k| {
            let p = east(-540.0 + 120.0 * k as f64);
            fix(p.0, p.1, t, k * 10, 12.0)
        })
        .collect();
    f.post(points).await;
    let alerts = f.alerts("").await;
    let seen: Vec<(&str, i64)> = alerts
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap(),
                a["geofence_id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("geofence_enter", depot),
            ("geofence_exit", depot),
            ("geofence_enter", gate),
            ("geofence_exit", gate)
        ],
        "{alerts:?}"
    );
    // Dated on the way: the depot between 30 and 60 s, the gate between 70 and 80 s.
    let crossed: Vec<DateTime<Utc>> = alerts
        .iter()
        .map(|a| {
            a["details"]["crossed_at"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(crossed.windows(2).all(|w| w[0] < w[1]), "{crossed:?}");
    assert!(crossed[0] > t + Duration::seconds(30) && crossed[1] < t + Duration::seconds(60));
    assert!(crossed[2] > t + Duration::seconds(70) && crossed[3] < t + Duration::seconds(80));
}

#[sqlx::test]
async fn staying_in_a_geofence_raises_dwell_once_per_visit_and_leaving_clears_it(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let id = f
        .geofence(json!({"name": "Customer", "circle": {"lat": HOME.0, "lon": HOME.1, "radius_m": 150.0}}))
        .await;
    for bad in [59, 86_401] {
        let (status, err) = f
            .app
            .patch(
                &f.dispatcher,
                &format!("/api/v1/geofences/{id}"),
                json!({"dwell_s": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
        assert_eq!(err["error"]["field"], "dwell_s", "{bad}: {err}");
    }
    let (status, fence) = f
        .app
        .patch(
            &f.dispatcher,
            &format!("/api/v1/geofences/{id}"),
            json!({"dwell_s": 300}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fence}");
    assert_eq!(fence["dwell_s"], 300);
    assert_eq!(fence["debounce_s"], Value::Null);

    // Two visits of seven minutes (a fix every 30 s), each after 40 s away.
    let t = base() - Duration::hours(1);
    let away = east(1500.0);
    let visit = |from: i64| -> Vec<Value> {
        let mut points = vec![
            fix(away.0, away.1, t, from, 10.0),
            fix(away.0, away.1, t, from + 40, 10.0),
        ];
        points.extend((1..=15).map(|i| {
            let p = east((i % 3) as f64 * 4.0);
            fix(p.0, p.1, t, from + 60 + i * 30, 0.0)
        }));
        points
    };
    f.post(visit(0)).await;
    let dwell = f.alerts("rule=geofence_dwell").await;
    assert_eq!(dwell.len(), 1, "once, however long it stays: {dwell:?}");
    assert_eq!(dwell[0]["geofence_id"], id);
    assert_eq!(dwell[0]["details"]["geofence"], "Customer");
    assert_eq!(dwell[0]["details"]["minutes"], 5);
    assert!(dwell[0]["cleared_at"].is_null());
    let entered: DateTime<Utc> = f.alerts("rule=geofence_enter").await[0]["details"]["crossed_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(dwell[0]["details"]["since"], json!(entered));
    let position_at: DateTime<Utc> = dwell[0]["position_at"].as_str().unwrap().parse().unwrap();
    assert!(position_at - entered >= Duration::seconds(300));
    assert!(position_at - entered < Duration::seconds(330));

    f.post(visit(600)).await;
    assert_eq!(
        f.rules().await,
        [
            "geofence_enter",
            "geofence_dwell",
            "geofence_exit",
            "geofence_enter",
            "geofence_dwell"
        ]
    );
    let dwell = f.alerts("rule=geofence_dwell").await;
    let left = &f.alerts("rule=geofence_exit").await[0]["details"]["crossed_at"];
    assert_eq!(&dwell[0]["details"]["left_at"], left);
    assert!(dwell[0]["cleared_at"].is_string(), "{}", dwell[0]);
    assert!(dwell[1]["cleared_at"].is_null());
}

#[sqlx::test]
async fn a_vehicle_inside_as_earlier_versions_stored_it_leaves_with_an_exit(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let depot = f
        .geofence(
            json!({"name": "Depot", "circle": {"lat": HOME.0, "lon": HOME.1, "radius_m": 100.0}}),
        )
        .await;
    // The rule state as stored before geofences had margins: inside the depot.
    sqlx::query("UPDATE vehicles SET alert_state = jsonb_build_object('inside', jsonb_build_array($1::bigint), 'crossing', '{}'::jsonb) WHERE id = $2")
        .bind(depot)
        .bind(f.vehicle)
        .execute(&f.app.db)
        .await
        .unwrap();
    let t = base();
    let out = east(500.0);
    f.post((0..5).map(|i| fix(out.0, out.1, t, i * 10, 0.0)).collect())
        .await;
    assert_eq!(f.rules().await, ["geofence_exit"]);
}

#[sqlx::test]
async fn each_overspeed_episode_raises_one_alert_and_closes_with_its_peak(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let t = base();
    // (seconds, speed m/s): the limit is 25 m/s for at least 20 s.
    let profile = [
        (0, 20.0),
        (5, 30.0),
        (10, 33.0),
        (15, 36.5),
        (20, 31.0),
        (25, 30.0),
        (30, 20.0),
        // A short burst: 10 s above the limit is no episode.
        (35, 30.0),
        (40, 30.0),
        (45, 22.0),
        (50, 40.0),
        (60, 41.0),
        (70, 42.0),
        (80, 23.0),
    ];
    let points = profile
        .iter()
        .map(|(s, v)| {
            let p = east(*s as f64 * 25.0);
            fix(p.0, p.1, t, *s, *v)
        })
        .collect();
    f.post(points).await;
    let alerts = f.alerts("rule=overspeed").await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[0]["details"]["peak_mps"], 36.5);
    assert_eq!(alerts[0]["details"]["limit_mps"], 25.0);
    assert_eq!(
        alerts[0]["cleared_at"],
        (t + Duration::seconds(30)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    assert_eq!(alerts[1]["details"]["peak_mps"], 42.0);
    assert!(alerts[1]["cleared_at"].is_string());
}

#[sqlx::test]
async fn a_vehicle_in_transit_standing_still_too_long_raises_stopped_and_moving_clears_it(
    db: PgPool,
) {
    let f = fleet(TestApp::spawn(db).await).await;
    let far = (48.1642, 11.4330);
    let shipment = f.shipment(far, None, None).await;
    let t = base();
    // Standing at a light for 9 minutes (GPS drifting a few metres) is not stopped.
    let mut points: Vec<Value> = (0..=9)
        .map(|m| {
            let p = east((m % 3) as f64 * 4.0);
            fix(p.0, p.1, t, m * 60, 0.2)
        })
        .collect();
    f.post(points.clone()).await;
    assert!(f.alerts("rule=stopped").await.is_empty());
    points = (10..=12)
        .map(|m| fix(HOME.0, HOME.1, t, m * 60, 0.0))
        .collect();
    f.post(points).await;
    let stopped = f.alerts("rule=stopped").await;
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0]["shipment_id"], shipment);
    assert!(stopped[0]["cleared_at"].is_null());
    let p = east(300.0);
    f.post(vec![fix(p.0, p.1, t, 13 * 60, 10.0)]).await;
    let stopped = f.alerts("rule=stopped").await;
    assert_eq!(stopped.len(), 1);
    assert!(stopped[0]["cleared_at"].is_string(), "{}", stopped[0]);
}

#[sqlx::test]
async fn a_silent_vehicle_is_flagged_once_by_the_clock_and_cleared_when_it_reports(db: PgPool) {
    let f = fleet(TestApp::spawn(db.clone()).await).await;
    let far = (48.1642, 11.4330);
    f.shipment(far, None, None).await;
    let now = Utc::now();
    f.post(vec![fix(HOME.0, HOME.1, now, 0, 5.0)]).await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    ws.subscribe("alerts", None).await;
    let tracking = &f.app.state.tracking;
    // The clock is the test's: nine minutes on, nothing; eleven minutes on, silent.
    let ticked = waymark::alerts::tick(&db, tracking, now + Duration::minutes(9))
        .await
        .unwrap();
    assert_eq!(ticked, 0);
    let ticked = waymark::alerts::tick(&db, tracking, now + Duration::minutes(11))
        .await
        .unwrap();
    assert_eq!(ticked, 1);
    let frame = next_alert(&mut ws).await;
    assert_eq!(
        (&frame["event"], &frame["data"]["rule"]),
        (&json!("raised"), &json!("silent"))
    );
    // Once, whichever instance's clock ticks next.
    let other = TestApp::spawn(db.clone()).await;
    let again = waymark::alerts::tick(&db, &other.state.tracking, now + Duration::minutes(12))
        .await
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(f.rules().await, ["silent"]);
    // Reporting again clears it, live.
    f.post(vec![fix(HOME.0, HOME.1, Utc::now(), 0, 5.0)]).await;
    let frame = next_alert(&mut ws).await;
    assert_eq!(frame["event"], "cleared");
    assert_eq!(frame["data"]["id"], frame_id(&f, "silent").await);
    assert!(frame["data"]["details"]["reporting_again_at"].is_string());
    other.shutdown().await;
}

async fn frame_id(f: &Fleet, rule: &str) -> Value {
    f.alerts(&format!("rule={rule}")).await[0]["id"].clone()
}

#[sqlx::test]
async fn leaving_the_planned_route_raises_off_route_and_coming_back_clears_it(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let end = east(5000.0);
    f.shipment(end, Some(vec![[HOME.1, HOME.0], [end.1, end.0]]), None)
        .await;
    let t = base();
    let mut points = Vec::new();
    // On the route, then a detour 400 m north for 80 s, then back.
    for i in 0..5 {
        let p = east(i as f64 * 100.0);
        points.push(fix(p.0, p.1, t, i * 10, 10.0));
    }
    for i in 5..14 {
        let p = east(i as f64 * 100.0);
        points.push(fix(p.0 + 400.0 / 111_320.0, p.1, t, i * 10, 10.0));
    }
    f.post(points).await;
    let off = f.alerts("rule=off_route").await;
    assert_eq!(off.len(), 1, "{off:?}");
    assert!(off[0]["cleared_at"].is_null());
    assert!(off[0]["details"]["distance_m"].as_f64().unwrap() > 390.0);
    let p = east(1500.0);
    f.post(vec![fix(p.0, p.1, t, 150, 10.0)]).await;
    let off = f.alerts("rule=off_route").await;
    assert_eq!(off.len(), 1);
    assert!(
        off[0]["details"]["back_on_route_at"].is_string(),
        "{}",
        off[0]
    );
}

#[sqlx::test]
async fn reaching_the_destination_marks_the_shipment_arrived_once(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let end = east(1000.0);
    let shipment = f.shipment(end, None, None).await;
    let t = base();
    let points = (0..=12)
        .map(|i| {
            let p = east((i as f64 * 100.0).min(1000.0));
            fix(p.0, p.1, t, i * 10, 10.0)
        })
        .collect();
    f.post(points).await;
    let arrived = f.alerts("rule=arrived").await;
    assert_eq!(arrived.len(), 1, "{arrived:?}");
    assert_eq!(arrived[0]["shipment_id"], shipment);
    assert_eq!(f.shipment_json(shipment).await["status"], "arrived");
    // Points after arrival no longer belong to the shipment.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM positions WHERE shipment_id = $1")
        .bind(shipment)
        .fetch_one(&f.app.db)
        .await
        .unwrap();
    assert!(stored < 13, "{stored}");
}

/// The real Munich trace (1 Hz car), as (lat, lon, seconds from its start).
fn munich() -> Vec<(f64, f64, i64)> {
    let trace: Value = serde_json::from_str(include_str!(
        "../../simulator/tracks/barefoot_munich_car_1hz.geojson"
    ))
    .unwrap();
    let feature = &trace["features"][0];
    let times = feature["properties"]["times"].as_array().unwrap();
    let t0: DateTime<Utc> = times[0].as_str().unwrap().parse().unwrap();
    feature["geometry"]["coordinates"]
        .as_array()
        .unwrap()
        .iter()
        .zip(times)
        .map(|(c, t)| {
            let t: DateTime<Utc> = t.as_str().unwrap().parse().unwrap();
            (
                c[1].as_f64().unwrap(),
                c[0].as_f64().unwrap(),
                (t - t0).num_seconds(),
            )
        })
        .collect()
}

#[sqlx::test]
async fn along_a_real_trace_the_time_to_arrival_shrinks_and_late_fires_once(db: PgPool) {
    let f = fleet(TestApp::spawn(db.clone()).await).await;
    let trace = munich();
    let route: Vec<[f64; 2]> = trace
        .iter()
        .step_by(5)
        .map(|(lat, lon, _)| [*lon, *lat])
        .collect();
    let (dest_lat, dest_lon, _) = *trace.last().unwrap();
    let t = base() - Duration::hours(1);
    // Promised for ten minutes after the start: the drive takes about twenty.
    let due = t + Duration::minutes(10);
    let shipment = f
        .shipment((dest_lat, dest_lon), Some(route), Some(due))
        .await;
    let mut remaining = Vec::new();
    for chunk in trace.chunks(300) {
        let points: Vec<Value> = chunk
            .iter()
            .map(|(lat, lon, s)| json!({"lat": lat, "lon": lon, "recorded_at": (t + Duration::seconds(*s)).to_rfc3339()}))
            .collect();
        f.post(points).await;
        let s = f.shipment_json(shipment).await;
        if s["status"] == "arrived" {
            break;
        }
        let eta: DateTime<Utc> = s["eta"]
            .as_str()
            .expect("an ETA in transit")
            .parse()
            .unwrap();
        let at = t + Duration::seconds(chunk.last().unwrap().2);
        remaining.push((eta - at).num_seconds());
        // It says how it was made: along the planned route, at the speed made so far.
        let basis = &s["eta_basis"];
        assert_eq!(basis["method"], "route_progress", "{s}");
        let (left, speed) = (
            basis["remaining_m"].as_f64().unwrap(),
            basis["speed_mps"].as_f64().unwrap(),
        );
        assert!(left > 0.0 && speed > 0.0, "{basis}");
        assert!(
            basis["summary"].as_str().unwrap().contains("m/s"),
            "{basis}"
        );
    }
    assert!(remaining.len() >= 3, "{remaining:?}");
    assert!(
        remaining.windows(2).all(|w| w[1] < w[0]),
        "time to arrival shrinks: {remaining:?}"
    );
    let late = f.alerts("rule=late").await;
    assert_eq!(late.len(), 1, "{late:?}");
    let eta: DateTime<Utc> = late[0]["details"]["eta"].as_str().unwrap().parse().unwrap();
    assert!(eta > due);
    // The clock agrees it is late, and raises nothing more.
    let ticked = waymark::alerts::tick(&db, &f.app.state.tracking, Utc::now())
        .await
        .unwrap();
    assert_eq!(ticked, 0);
    assert_eq!(f.alerts("rule=late").await.len(), 1);
}

#[sqlx::test]
async fn late_filtered_and_repeated_points_fire_nothing(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    f.geofence(json!({
        "name": "Yard", "debounce_s": 0,
        "area": {"type": "Polygon", "coordinates": [[
            [11.60, 48.13], [11.61, 48.13], [11.61, 48.14], [11.60, 48.14], [11.60, 48.13]
        ]]}
    }))
    .await;
    let t = base();
    f.post(vec![fix(48.10, 11.55, t, 100, 5.0)]).await;
    // Inside the yard, but older than the current position: part of the track, nothing more.
    f.post(vec![fix(48.135, 11.605, t, 50, 5.0)]).await;
    // Inside, but with a 900 m accuracy circle: filtered.
    let mut vague = fix(48.135, 11.605, t, 200, 5.0);
    vague["accuracy"] = json!(900.0);
    f.post(vec![vague]).await;
    // A re-send of the current position.
    let reply = f.post(vec![fix(48.10, 11.55, t, 100, 5.0)]).await;
    assert_eq!(reply["duplicates"], 1);
    assert!(f.rules().await.is_empty());
    // A real position in the yard does fire: the silence above was the rules, not the set-up.
    f.post(vec![fix(48.135, 11.605, t, 600, 5.0)]).await;
    assert_eq!(f.rules().await, ["geofence_enter"]);
}

#[sqlx::test]
async fn an_acknowledgement_reaches_every_dispatcher_live_on_every_instance(db: PgPool) {
    let Ok(redis) = std::env::var("REDIS_URL") else {
        panic!("REDIS_URL must be set: this test runs two instances");
    };
    let shared = Some((redis, unique_prefix()));
    let a = TestApp::spawn_instance(db.clone(), shared.clone()).await;
    let b = TestApp::spawn_instance(db.clone(), shared).await;
    let f = fleet(a).await;
    let (_, second) = b.user("Acme", "second@acme.test", Role::Dispatcher).await;
    f.geofence(json!({"name": "Depot", "debounce_s": 0, "circle": {"lat": HOME.0, "lon": HOME.1, "radius_m": 100.0}}))
        .await;
    let mut first_ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    let mut second_ws = b.ws(&format!("token={second}")).await;
    let before = first_ws.subscribe("alerts", None).await;
    assert_eq!(before["snapshot"]["unacknowledged"], 0);
    let since = before["snapshot"]["seq"].as_i64().unwrap();
    second_ws.subscribe("alerts", None).await;

    let t = base();
    f.post(vec![
        fix(48.0, 11.0, t, 0, 3.0),
        fix(HOME.0, HOME.1, t, 600, 3.0),
    ])
    .await;
    let raised = next_alert(&mut first_ws).await;
    assert_eq!(raised["event"], "raised");
    assert_eq!(raised["data"]["rule"], "geofence_enter");
    let id = raised["data"]["id"].as_i64().unwrap();
    let raised_there = next_alert(&mut second_ws).await;
    assert_eq!(raised_there["seq"], raised["seq"]);

    first_ws
        .send(json!({"type": "acknowledge", "alert_id": id, "ref": 7}))
        .await;
    let mut reply = None;
    let mut event = None;
    for _ in 0..2 {
        let frame = first_ws.next().await;
        match frame["type"].as_str() {
            Some("acknowledged") => reply = Some(frame),
            Some("alert") => event = Some(frame),
            _ => panic!("unexpected {frame}"),
        }
    }
    let reply = reply.expect("the acknowledging client gets a reply");
    assert_eq!(reply["ref"], 7);
    assert!(reply["alert"]["acknowledged_at"].is_string());
    let event = event.expect("and the event");
    let there = next_alert(&mut second_ws).await;
    for frame in [&event, &there] {
        assert_eq!(frame["event"], "acknowledged");
        assert_eq!(frame["data"]["id"], id);
        assert!(frame["data"]["acknowledged_by"].is_i64());
        assert!(frame["seq"].as_i64().unwrap() > raised["seq"].as_i64().unwrap());
    }
    // Acknowledging again changes nothing and publishes nothing.
    let (status, again) = b
        .post(
            &second,
            &format!("/api/v1/alerts/{id}/acknowledge"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["acknowledged_at"], reply["alert"]["acknowledged_at"]);
    second_ws.expect_quiet().await;

    // A dispatcher who was away gets both events back with `since`, then the count is zero.
    let mut late_ws = b.ws(&format!("token={second}")).await;
    let sub = late_ws.subscribe("alerts", Some(since)).await;
    assert_eq!(sub["snapshot"]["unacknowledged"], 0);
    let events: Vec<Value> = vec![late_ws.next().await, late_ws.next().await];
    assert_eq!(events[0]["event"], "raised");
    assert_eq!(events[1]["event"], "acknowledged");
    assert_eq!(events[1]["seq"], event["seq"]);
    late_ws.expect_quiet().await;
    b.shutdown().await;
}

#[sqlx::test]
async fn no_alert_reaches_another_organisation(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let (_, rival) = f
        .app
        .user("Rival", "dispatch@rival.test", Role::Dispatcher)
        .await;
    let (_, driver) = f.app.user("Acme", "driver@acme.test", Role::Driver).await;
    let mut rival_ws = f.app.ws(&format!("token={rival}")).await;
    rival_ws.subscribe("alerts", None).await;
    let mut ws = f.app.ws(&format!("token={}", f.dispatcher)).await;
    ws.subscribe("alerts", None).await;
    f.geofence(json!({"name": "Depot", "debounce_s": 0, "circle": {"lat": HOME.0, "lon": HOME.1, "radius_m": 100.0}}))
        .await;
    let t = base();
    f.post(vec![
        fix(48.0, 11.0, t, 0, 3.0),
        fix(HOME.0, HOME.1, t, 600, 3.0),
    ])
    .await;
    let id = next_alert(&mut ws).await["data"]["id"].as_i64().unwrap();
    rival_ws.expect_quiet().await;
    let (_, list) = f.app.get(&rival, "/api/v1/alerts").await;
    assert_eq!(list["alerts"], json!([]));
    assert_eq!(list["unacknowledged"], 0);
    let (status, _) = f.app.get(&rival, &format!("/api/v1/alerts/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = f
        .app
        .post(
            &rival,
            &format!("/api/v1/alerts/{id}/acknowledge"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, fences) = f.app.get(&rival, "/api/v1/geofences").await;
    assert_eq!(fences, json!([]));
    // A driver may not acknowledge, nor watch the organisation's alerts.
    let (status, _) = f
        .app
        .post(
            &driver,
            &format!("/api/v1/alerts/{id}/acknowledge"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut driver_ws = f.app.ws(&format!("token={driver}")).await;
    let refused = driver_ws.subscribe("alerts", None).await;
    assert_eq!(refused["code"], "forbidden");
    let (_, mine) = f
        .app
        .get(&f.dispatcher, &format!("/api/v1/alerts/{id}"))
        .await;
    assert!(
        mine["acknowledged_at"].is_null(),
        "no one else acknowledged it"
    );
}

#[sqlx::test]
async fn geofences_are_checked_and_every_change_reaches_the_rules(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let bad = [
        (json!({"name": "x"}), "area"),
        (
            json!({"circle": {"lat": 1, "lon": 1, "radius_m": 10}}),
            "name",
        ),
        (
            json!({"name": "x", "circle": {"lat": 91, "lon": 1, "radius_m": 10}}),
            "circle",
        ),
        (
            json!({"name": "x", "circle": {"lat": 1, "lon": 1, "radius_m": 0}}),
            "circle.radius_m",
        ),
        (
            json!({"name": "x", "area": {"type": "Point", "coordinates": [1, 1]}}),
            "area",
        ),
        (
            json!({"name": "x", "area": {"type": "Polygon", "coordinates": [[[1, 1], [2, 1], [2, 2], [1, 2]]]}}),
            "area",
        ),
        (
            json!({"name": "x", "debounce_s": -1, "circle": {"lat": 1, "lon": 1, "radius_m": 10}}),
            "debounce_s",
        ),
        (
            json!({"name": "x", "vehicle_ids": [999999], "circle": {"lat": 1, "lon": 1, "radius_m": 10}}),
            "vehicle_ids",
        ),
        (
            json!({"name": "x", "dwell_s": 30, "circle": {"lat": 1, "lon": 1, "radius_m": 10}}),
            "dwell_s",
        ),
    ];
    for (body, field) in bad {
        let (status, err) = f
            .app
            .post(&f.dispatcher, "/api/v1/geofences", body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let t = base();
    f.post(vec![fix(48.0, 11.0, t, 0, 3.0)]).await;
    // Created after the index was first loaded for this organisation, and for this van only.
    let id = f
        .geofence(
            json!({"name": "Depot", "debounce_s": 0, "vehicle_ids": [f.vehicle],
            "circle": {"lat": HOME.0, "lon": HOME.1, "radius_m": 100.0}}),
        )
        .await;
    let (_, listed) = f.app.get(&f.dispatcher, "/api/v1/geofences").await;
    assert_eq!(listed[0]["circle"]["radius_m"], 100.0);
    assert_eq!(listed[0]["area"]["type"], "Polygon");
    f.post(vec![fix(HOME.0, HOME.1, t, 600, 3.0)]).await;
    assert_eq!(f.rules().await, ["geofence_enter"]);
    // Moved away from where the van is: it has left.
    let res = f
        .app
        .http
        .patch(f.app.url(&format!("/api/v1/geofences/{id}")))
        .bearer_auth(&f.dispatcher)
        .json(&json!({"circle": {"lat": 48.2, "lon": 11.6, "radius_m": 100.0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    f.post(vec![fix(HOME.0, HOME.1, t, 660, 0.0)]).await;
    assert_eq!(f.rules().await, ["geofence_enter", "geofence_exit"]);
    // Deleted: entering where it was is nothing.
    let res = f
        .app
        .http
        .delete(f.app.url(&format!("/api/v1/geofences/{id}")))
        .bearer_auth(&f.dispatcher)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    f.post(vec![fix(48.2, 11.6, t, 1200, 3.0)]).await;
    assert_eq!(f.rules().await.len(), 2);
}

#[sqlx::test]
async fn a_polygon_that_is_not_a_valid_area_is_refused_saying_why(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let polygon = |rings: Value| json!({"type": "Polygon", "coordinates": rings});
    let shell = json!([
        [11.0, 48.0],
        [12.0, 48.0],
        [12.0, 49.0],
        [11.0, 49.0],
        [11.0, 48.0]
    ]);
    let refused = [
        (
            "a bow tie",
            polygon(json!([[
                [11.0, 48.0],
                [12.0, 49.0],
                [12.0, 48.0],
                [11.0, 49.0],
                [11.0, 48.0]
            ]])),
            "self-intersection at [11.5, 48.5]",
        ),
        (
            "a hole outside its shell",
            polygon(json!([
                shell,
                [
                    [13.0, 48.0],
                    [13.5, 48.0],
                    [13.5, 48.5],
                    [13.0, 48.5],
                    [13.0, 48.0]
                ]
            ])),
            "hole lies outside shell",
        ),
        (
            "a spike that doubles back",
            polygon(json!([[
                [11.0, 48.0],
                [12.0, 48.0],
                [12.0, 49.0],
                [12.5, 49.5],
                [12.0, 49.0],
                [11.0, 49.0],
                [11.0, 48.0]
            ]])),
            "self-intersection",
        ),
        (
            "a flat ring",
            polygon(json!([[
                [11.0, 48.0],
                [12.0, 48.0],
                [13.0, 48.0],
                [11.0, 48.0]
            ]])),
            "self-intersection",
        ),
        (
            "one point over and over",
            polygon(json!([[
                [11.0, 48.0],
                [11.0, 48.0],
                [11.0, 48.0],
                [11.0, 48.0]
            ]])),
            "too few points",
        ),
    ];
    for (what, area, why) in &refused {
        let (status, err) = f
            .app
            .post(
                &f.dispatcher,
                "/api/v1/geofences",
                json!({"name": what, "area": area}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {err}");
        assert_eq!(err["error"]["field"], "area", "{what}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("area is not a valid polygon: "),
            "{what}: {message}"
        );
        assert!(message.contains(why), "{what}: {message}");
    }
    // A shell with a hole inside it is a valid area; a change to an invalid one is refused too.
    let holed = polygon(json!([
        shell,
        [
            [11.4, 48.4],
            [11.6, 48.4],
            [11.6, 48.6],
            [11.4, 48.6],
            [11.4, 48.4]
        ]
    ]));
    let id = f
        .geofence(json!({"name": "Ring road", "area": holed}))
        .await;
    for (what, area, _) in &refused {
        let (status, err) = f
            .app
            .patch(
                &f.dispatcher,
                &format!("/api/v1/geofences/{id}"),
                json!({"area": area}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {err}");
        assert_eq!(err["error"]["field"], "area", "{what}: {err}");
    }
    let (_, listed) = f.app.get(&f.dispatcher, "/api/v1/geofences").await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "nothing invalid was stored: {listed:?}");
    assert_eq!(
        listed[0]["area"]["coordinates"].as_array().unwrap().len(),
        2
    );
}

#[sqlx::test]
async fn alert_settings_are_checked_and_tune_the_rules(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let (_, admin) = f.app.user("Acme", "boss@acme.test", Role::Admin).await;
    let res = f
        .app
        .http
        .patch(f.app.url("/api/v1/settings"))
        .bearer_auth(&admin)
        .json(&json!({"alerts": {"speed_limit_mps": 0.5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["field"], "alerts.speed_limit_mps");
    f.settings(json!({"alerts": {"speed_limit_mps": 10.0, "overspeed_min_s": 0}}))
        .await;
    let t = base();
    f.post(vec![fix(HOME.0, HOME.1, t, 0, 12.0)]).await;
    assert_eq!(f.rules().await, ["overspeed"]);
    let (_, filtered) = f.app.get(&f.dispatcher, "/api/v1/alerts?rule=nope").await;
    assert_eq!(filtered["error"]["field"], "rule");
}

#[sqlx::test]
async fn a_shipment_still_under_way_at_its_due_time_is_late_once_by_the_clock(db: PgPool) {
    let f = fleet(TestApp::spawn(db.clone()).await).await;
    f.settings(json!({"alerts": {"silent_min": null}})).await;
    let now = Utc::now();
    let due = now + Duration::minutes(30);
    let shipment = f.shipment((48.1642, 11.4330), None, Some(due)).await;
    // Standing still: no ETA, so only the clock can tell it is late.
    f.post(vec![fix(HOME.0, HOME.1, now, 0, 0.0)]).await;
    let tracking = &f.app.state.tracking;
    let early = waymark::alerts::tick(&db, tracking, due - Duration::minutes(1));
    assert_eq!(early.await.unwrap(), 0);
    let late = waymark::alerts::tick(&db, tracking, due + Duration::minutes(1));
    assert_eq!(late.await.unwrap(), 1);
    let again = waymark::alerts::tick(&db, tracking, due + Duration::minutes(2));
    assert_eq!(again.await.unwrap(), 0);
    let alerts = f.alerts("rule=late").await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["shipment_id"], shipment);
    assert!(alerts[0]["position_at"].is_null(), "the clock raised it");
    assert_eq!(f.rules().await, ["late"], "silence is turned off");
}

#[sqlx::test]
async fn instances_sharing_a_vehicle_judge_one_state_and_raise_each_alert_once(db: PgPool) {
    let a = TestApp::spawn_alone(db.clone()).await;
    let b = TestApp::spawn_alone(db.clone()).await;
    let f = fleet(a).await;
    let t = base();
    // Instance b loads the organisation's (empty) geofence index with this first point...
    let (status, _) = b
        .ingest(&f.token, json!([fix(48.0, 11.0, t, 0, 3.0)]))
        .await;
    assert_eq!(status, StatusCode::OK);
    // ...then a geofence is created through instance a.
    f.geofence(json!({"name": "Depot", "debounce_s": 10,
        "circle": {"lat": HOME.0, "lon": HOME.1, "radius_m": 100.0}}))
        .await;
    let (inside, outside) = (east(60.0), east(140.0));
    let path = [
        outside, inside, outside, inside, inside, inside, inside, outside, inside, outside,
        outside, outside, outside,
    ];
    for (i, p) in path.iter().enumerate() {
        let point = json!([fix(p.0, p.1, t, 600 + i as i64 * 5, 2.0)]);
        // Alternate instances: each sees every other point, and the state in between.
        let app = if i % 2 == 0 { &f.app } else { &b };
        let (status, reply) = app.ingest(&f.token, point).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    assert_eq!(f.rules().await, ["geofence_enter", "geofence_exit"]);
    b.shutdown().await;
}

#[sqlx::test]
async fn a_vehicle_can_have_its_own_limits(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let (_, admin) = f.app.user("Acme", "boss@acme.test", Role::Admin).await;
    let (_, other_token) = f.app.vehicle(&f.dispatcher, "Van 2").await;
    let put = |body: Value| {
        f.app
            .http
            .put(
                f.app
                    .url(&format!("/api/v1/vehicles/{}/alert-settings", f.vehicle)),
            )
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    for (body, field) in [
        (json!({"speed_limit_mps": -1}), "alerts.speed_limit_mps"),
        (json!({"speed_limt_mps": 15}), "alerts.speed_limt_mps"),
    ] {
        let res = put(body).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.json::<Value>().await.unwrap()["error"]["field"], field);
    }
    let res = put(json!({"speed_limit_mps": 15.0, "overspeed_min_s": 0}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (_, shown) = f
        .app
        .get(
            &f.dispatcher,
            &format!("/api/v1/vehicles/{}/alert-settings", f.vehicle),
        )
        .await;
    // As JSON numbers: the API reads a whole float as the integer it is.
    assert_eq!(
        shown["overrides"],
        json!({"speed_limit_mps": 15, "overspeed_min_s": 0})
    );
    assert_eq!(shown["effective"]["speed_limit_mps"], 15.0);
    assert_eq!(
        shown["effective"]["stopped_min"], 10,
        "the rest are the organisation's"
    );
    // A dispatcher reads them but may not change them.
    let res = f
        .app
        .http
        .put(
            f.app
                .url(&format!("/api/v1/vehicles/{}/alert-settings", f.vehicle)),
        )
        .bearer_auth(&f.dispatcher)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // 20 m/s is speeding for this van only.
    let t = base();
    f.post(vec![fix(HOME.0, HOME.1, t, 0, 20.0)]).await;
    let (status, _) = f
        .app
        .ingest(&other_token, json!([fix(HOME.0, HOME.1, t, 0, 20.0)]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let alerts = f.alerts("rule=overspeed").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["vehicle_id"], f.vehicle);
}

#[sqlx::test]
async fn every_numeric_setting_outside_its_range_is_refused_naming_its_key(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let (_, admin) = f.app.user("Acme", "boss@acme.test", Role::Admin).await;
    let overrides = format!("/api/v1/vehicles/{}/alert-settings", f.vehicle);
    // (section, key, the lowest and highest values accepted, values refused). Whole-number
    // settings also refuse fractions, negatives and values beyond 32 bits.
    let whole = |lo: i64, hi: i64| {
        vec![
            json!(lo - 1),
            json!(hi + 1),
            json!(-5),
            json!(1.5),
            json!(1_i64 << 32),
        ]
    };
    let real = |lo: f64, hi: f64| vec![json!(lo - 0.5), json!(hi + 0.5), json!(-1.0), json!("10")];
    let table: Vec<(&str, &str, Value, Value, Vec<Value>)> = vec![
        (
            "filter",
            "max_ahead_s",
            json!(0),
            json!(86_400),
            whole(0, 86_400),
        ),
        (
            "filter",
            "max_age_h",
            json!(1),
            json!(263_520),
            whole(1, 263_520),
        ),
        (
            "filter",
            "max_accuracy_m",
            json!(1.0),
            json!(100_000.0),
            real(1.0, 100_000.0),
        ),
        (
            "filter",
            "max_speed_mps",
            json!(1.0),
            json!(1_000.0),
            real(1.0, 1_000.0),
        ),
        (
            "alerts",
            "speed_limit_mps",
            json!(1.0),
            json!(200.0),
            real(1.0, 200.0),
        ),
        (
            "alerts",
            "overspeed_min_s",
            json!(0),
            json!(3600),
            whole(0, 3600),
        ),
        (
            "alerts",
            "stopped_min",
            json!(1),
            json!(1440),
            whole(1, 1440),
        ),
        (
            "alerts",
            "stopped_radius_m",
            json!(1.0),
            json!(10_000.0),
            real(1.0, 10_000.0),
        ),
        (
            "alerts",
            "silent_min",
            json!(1),
            json!(1440),
            whole(1, 1440),
        ),
        (
            "alerts",
            "off_route_m",
            json!(10.0),
            json!(100_000.0),
            real(10.0, 100_000.0),
        ),
        (
            "alerts",
            "off_route_s",
            json!(0),
            json!(3600),
            whole(0, 3600),
        ),
        (
            "alerts",
            "arrival_radius_m",
            json!(5.0),
            json!(100_000.0),
            real(5.0, 100_000.0),
        ),
        (
            "alerts",
            "geofence_debounce_s",
            json!(0),
            json!(3600),
            whole(0, 3600),
        ),
    ];
    for (section, key, lowest, highest, refused) in table {
        let field = format!("{section}.{key}");
        // The organisation's settings, and for alert settings a vehicle's own.
        let mut calls = vec![(reqwest::Method::PATCH, "/api/v1/settings".to_owned(), true)];
        if section == "alerts" {
            calls.push((reqwest::Method::PUT, overrides.clone(), false));
        }
        for (method, path, sectioned) in calls {
            let body = |value: &Value| {
                let keys = json!({ key: value });
                if sectioned {
                    json!({ section: keys })
                } else {
                    keys
                }
            };
            for value in [&lowest, &highest] {
                let (status, reply) = f
                    .app
                    .call(method.clone(), &admin, &path, Some(body(value)))
                    .await;
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "{method} {path} {field}={value}: {reply}"
                );
            }
            for value in &refused {
                let (status, reply) = f
                    .app
                    .call(method.clone(), &admin, &path, Some(body(value)))
                    .await;
                let what = format!("{method} {path} {field}={value}: {reply}");
                assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
                assert_eq!(reply["error"]["code"], "validation", "{what}");
                assert_eq!(reply["error"]["field"], field.as_str(), "{what}");
                let message = reply["error"]["message"].as_str().unwrap();
                assert!(message.starts_with(&format!("{field} must be")), "{what}");
            }
        }
    }
}

#[sqlx::test]
async fn a_second_trip_on_the_same_planned_route_is_timed_by_the_first(db: PgPool) {
    let f = fleet(TestApp::spawn(db).await).await;
    let trace = munich();
    let route: Vec<[f64; 2]> = trace
        .iter()
        .step_by(5)
        .map(|(lat, lon, _)| [*lon, *lat])
        .collect();
    let (dest_lat, dest_lon, _) = *trace.last().unwrap();
    let drive = |shipment: i64, t: DateTime<Utc>, upto: usize| {
        let f = &f;
        let points: Vec<Vec<Value>> = trace[..upto]
            .chunks(300)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|(lat, lon, s)| json!({"lat": lat, "lon": lon, "recorded_at": (t + Duration::seconds(*s)).to_rfc3339()}))
                    .collect()
            })
            .collect();
        async move {
            for chunk in points {
                f.post(chunk).await;
                if f.shipment_json(shipment).await["status"] == "arrived" {
                    break;
                }
            }
        }
    };
    let first_at = base() - Duration::hours(3);
    let first = f
        .shipment((dest_lat, dest_lon), Some(route.clone()), None)
        .await;
    drive(first, first_at, trace.len()).await;
    let done = f.shipment_json(first).await;
    assert_eq!(done["status"], "arrived", "{done}");
    let ended: DateTime<Utc> = done["ended_at"].as_str().unwrap().parse().unwrap();
    let took = ended - first_at;

    // The same drive again, two hours later: six minutes in, its ETA is the first one's time.
    let second_at = base() - Duration::hours(1);
    let second = f.shipment((dest_lat, dest_lon), Some(route), None).await;
    drive(second, second_at, 360).await;
    let s = f.shipment_json(second).await;
    let basis = &s["eta_basis"];
    assert_eq!(basis["method"], "earlier_trips", "{s}");
    assert_eq!(basis["trips"], 1, "{basis}");
    let eta: DateTime<Utc> = s["eta"].as_str().unwrap().parse().unwrap();
    let off = (eta - (second_at + took)).num_seconds().abs();
    assert!(off <= 60, "ETA {eta}, off by {off} s: {basis}");
}
