//! ETA accuracy as the product measures it: a trip driven fix by fix, the ETA the shipment showed
//! read at each horizon before its arrival, and the same errors from `GET /eta/accuracy` (its
//! filters, tenancy and validation) and `/metrics`.
use chrono::{DateTime, Duration, SubsecRound, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::support::TestApp;

/// Creates a shipment through the API as `jwt`; its id.
async fn new_shipment(app: &TestApp, jwt: &str, body: Value) -> i64 {
    let (status, s) = app.post(jwt, "/api/v1/shipments", body).await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    s["id"].as_i64().unwrap()
}

/// Where the trip starts, and metres per degree of longitude there.
const START: (f64, f64) = (48.1374, 11.5755);
const M_PER_DEG_LON: f64 = 111_320.0 * 0.666_8;
/// A fix every this many seconds; arrival with the fix at `ARRIVAL_S`.
const STEP_S: i64 = 30;
const ARRIVAL_S: i64 = 2400;

/// Metres driven `s` seconds after the start: 8 m/s for 10 minutes, 14 m/s for 15, then 10 m/s,
/// so that the ETA keeps moving.
fn driven(s: i64) -> f64 {
    let s = s as f64;
    8.0 * s.min(600.0) + 14.0 * (s - 600.0).clamp(0.0, 900.0) + 10.0 * (s - 1500.0).max(0.0)
}

fn east(m: f64) -> (f64, f64) {
    (START.0, START.1 + m / M_PER_DEG_LON)
}

struct Trip {
    app: TestApp,
    dispatcher: String,
    vehicle: i64,
    token: String,
    shipment: i64,
    t0: DateTime<Utc>,
}

impl Trip {
    /// Acme's van with a shipment to where the trip ends, along a planned route of its two ends.
    async fn new(app: TestApp) -> Trip {
        let (_, dispatcher) = app
            .user("Acme", "dispatch@acme.test", Role::Dispatcher)
            .await;
        let (vehicle, token) = app.vehicle(&dispatcher, "Van 1").await;
        let end = east(driven(ARRIVAL_S));
        let shipment = new_shipment(
            &app,
            &dispatcher,
            json!({
                "reference": "SHP-1",
                "origin": {"lat": START.0, "lon": START.1},
                "destination": {"lat": end.0, "lon": end.1},
                "planned_route": {"type": "LineString",
                                  "coordinates": [[START.1, START.0], [end.1, end.0]]},
                "vehicle_id": vehicle,
            }),
        )
        .await;
        app.backdate(shipment).await;
        Trip {
            app,
            dispatcher,
            vehicle,
            token,
            shipment,
            t0: (Utc::now() - Duration::hours(3)).trunc_subsecs(0),
        }
    }

    /// Posts the fixes taken `seconds` after the start, in one request.
    async fn fixes(&self, seconds: impl IntoIterator<Item = i64>) {
        let body: Vec<Value> = seconds
            .into_iter()
            .map(|s| {
                let (lat, lon) = east(driven(s));
                json!({
                    "lat": lat, "lon": lon, "speed": driven(s + 1) - driven(s), "accuracy": 5.0,
                    "recorded_at": (self.t0 + Duration::seconds(s)).to_rfc3339(),
                })
            })
            .collect();
        let (status, reply) = self.app.ingest(&self.token, Value::Array(body)).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }

    /// Posts the fix taken `s` seconds after the start, alone, as a live device does.
    async fn fix(&self, s: i64) {
        self.fixes([s]).await;
    }

    async fn shipment_json(&self) -> Value {
        let (status, s) = self
            .app
            .get(
                &self.dispatcher,
                &format!("/api/v1/shipments/{}", self.shipment),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{s}");
        s
    }

    async fn accuracy(&self, jwt: &str, query: &str) -> (StatusCode, Value) {
        self.app
            .get(jwt, &format!("/api/v1/eta/accuracy{query}"))
            .await
    }

    /// `n` at each horizon, longest first, for `query`.
    async fn counts(&self, jwt: &str, query: &str) -> Vec<i64> {
        let (status, body) = self.accuracy(jwt, query).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        body["horizons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["n"].as_i64().unwrap())
            .collect()
    }
}

/// The value of one sample line (`name{labels}`) of the metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[sqlx::test]
async fn the_eta_shown_at_each_horizon_before_arrival_is_measured_exactly(db: PgPool) {
    let trip = Trip::new(TestApp::spawn(db).await).await;
    let arrived = trip.t0 + Duration::seconds(ARRIVAL_S);
    // The vehicle is quiet from 150 s before the 5-minute moment until after it: no sample there.
    let quiet = (ARRIVAL_S - 300 - 120)..=(ARRIVAL_S - 300);
    let mut shown: Vec<(i64, f64, Value)> = Vec::new();
    for s in (0..=ARRIVAL_S).step_by(STEP_S as usize) {
        if quiet.contains(&s) {
            continue;
        }
        trip.fix(s).await;
        let minutes = (ARRIVAL_S - s) / 60;
        if (ARRIVAL_S - s) % 60 == 0 && [30, 20, 10].contains(&minutes) {
            // What the shipment shows as of the fix at the horizon's moment.
            let ship = trip.shipment_json().await;
            let eta: DateTime<Utc> = ship["eta"].as_str().expect("an ETA").parse().unwrap();
            let error = (eta - arrived).num_milliseconds() as f64 / 1000.0;
            shown.push((minutes, error, ship["eta_basis"]["method"].clone()));
        }
    }
    let ship = trip.shipment_json().await;
    assert_eq!(ship["status"], "arrived", "{ship}");
    assert_eq!(
        ship["ended_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        arrived
    );
    // The ETA moved between the horizons, so each is told apart.
    assert!(shown.windows(2).all(|w| w[0].1 != w[1].1), "{shown:?}");

    let (status, body) = trip.accuracy(&trip.dispatcher, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let horizons = body["horizons"].as_array().unwrap();
    let minutes: Vec<i64> = horizons
        .iter()
        .map(|h| h["horizon_min"].as_i64().unwrap())
        .collect();
    assert_eq!(minutes, [30, 20, 10, 5]);
    for ((m, error, _), h) in shown.iter().zip(horizons) {
        assert_eq!(h["n"], 1, "{m} min: {h}");
        let bias = h["bias_s"].as_f64().unwrap();
        assert!(
            (bias - error).abs() < 0.001,
            "{m} min: bias {bias} vs {error}"
        );
        for key in ["mae_s", "p90_s"] {
            let got = h[key].as_f64().unwrap();
            assert!(
                (got - error.abs()).abs() < 0.001,
                "{m} min {key}: {got} vs {error}"
            );
        }
    }
    assert_eq!(
        horizons[3],
        json!({"horizon_min": 5, "n": 0, "mae_s": null, "p90_s": null, "bias_s": null})
    );

    // Fixes after the arrival change nothing: each horizon is stored once.
    trip.fix(ARRIVAL_S + STEP_S).await;
    assert_eq!(trip.counts(&trip.dispatcher, "").await, [1, 1, 1, 0]);

    // The filters: vehicle, route, method, arrival time.
    let (other_vehicle, _) = trip.app.vehicle(&trip.dispatcher, "Van 2").await;
    let elsewhere = new_shipment(
        &trip.app,
        &trip.dispatcher,
        json!({
            "reference": "SHP-2",
            "origin": {"lat": START.0, "lon": START.1},
            "destination": {"lat": 48.2, "lon": 11.6},
            "planned_route": {"type": "LineString",
                              "coordinates": [[START.1, START.0], [11.6, 48.2]]},
            "vehicle_id": other_vehicle,
        }),
    )
    .await;
    let method = shown[0].2.as_str().expect("a method").to_owned();
    let other_method = if method == "straight_line" {
        "route_progress"
    } else {
        "straight_line"
    };
    let at = |t: DateTime<Utc>| t.to_rfc3339().replace('+', "%2B");
    let d = &trip.dispatcher;
    for (query, expected) in [
        (format!("?vehicle_id={}", trip.vehicle), [1, 1, 1, 0]),
        (format!("?vehicle_id={other_vehicle}"), [0; 4]),
        (format!("?same_route_as={}", trip.shipment), [1, 1, 1, 0]),
        (format!("?same_route_as={elsewhere}"), [0; 4]),
        (format!("?method={method}"), [1, 1, 1, 0]),
        (format!("?method={other_method}"), [0; 4]),
        (format!("?since={}", at(arrived)), [1, 1, 1, 0]),
        (
            format!("?since={}", at(arrived + Duration::seconds(1))),
            [0; 4],
        ),
        (format!("?until={}", at(arrived)), [0; 4]),
        (
            format!("?until={}", at(arrived + Duration::seconds(1))),
            [1, 1, 1, 0],
        ),
    ] {
        assert_eq!(trip.counts(d, &query).await, expected, "{query}");
    }

    // The instance's metrics carry the same errors.
    let page = trip
        .app
        .http
        .get(trip.app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (m, error, _) in &shown {
        let count = format!("waymark_eta_abs_error_seconds_count{{horizon=\"{m}m\"}}");
        assert_eq!(sample(&page, &count), Some(1.0), "{page}");
        let sum = format!("waymark_eta_abs_error_seconds_sum{{horizon=\"{m}m\"}}");
        assert!(
            (sample(&page, &sum).unwrap() - error.abs()).abs() < 0.001,
            "{page}"
        );
        let side = |d: &str| {
            let name =
                format!("waymark_eta_error_seconds_total{{horizon=\"{m}m\",direction=\"{d}\"}}");
            sample(&page, &name).unwrap()
        };
        assert!(
            (side("late") - side("early") - error).abs() < 0.001,
            "{page}"
        );
    }
    assert_eq!(
        sample(&page, "waymark_eta_abs_error_seconds_count{horizon=\"5m\"}"),
        Some(0.0),
        "{page}"
    );
}

#[sqlx::test]
async fn eta_accuracy_is_the_organisations_own_and_checks_its_query(db: PgPool) {
    let trip = Trip::new(TestApp::spawn(db).await).await;
    // The whole trip in one request, as a phone sends its backlog: its ETAs and its arrival are
    // judged in the one transaction.
    trip.fixes((0..=ARRIVAL_S).step_by(STEP_S as usize)).await;
    assert_eq!(trip.shipment_json().await["status"], "arrived");
    assert_eq!(trip.counts(&trip.dispatcher, "").await, [1, 1, 1, 1]);

    // Another organisation sees none of it, and may not filter on Acme's vehicle or route.
    let (_, rival) = trip
        .app
        .user("Globex", "dispatch@globex.test", Role::Dispatcher)
        .await;
    assert_eq!(trip.counts(&rival, "").await, [0; 4]);
    let (status, body) = trip
        .accuracy(&rival, &format!("?vehicle_id={}", trip.vehicle))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = trip
        .accuracy(&rival, &format!("?same_route_as={}", trip.shipment))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Drivers do not read it.
    let (_, driver) = trip
        .app
        .user("Acme", "driver@acme.test", Role::Driver)
        .await;
    let (status, _) = trip.accuracy(&driver, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Bad queries are refused, naming the parameter.
    let unrouted = new_shipment(
        &trip.app,
        &trip.dispatcher,
        json!({
            "reference": "SHP-2",
            "origin": {"lat": START.0, "lon": START.1},
            "destination": {"lat": 48.2, "lon": 11.6},
        }),
    )
    .await;
    for (query, name) in [
        ("?horizon=5".to_owned(), "horizon"),
        ("?vehicle_id=abc".to_owned(), "vehicle_id"),
        ("?since=yesterday".to_owned(), "since"),
        ("?method=psychic".to_owned(), "method"),
        (
            "?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z".to_owned(),
            "until",
        ),
        (format!("?same_route_as={unrouted}"), "same_route_as"),
    ] {
        let (status, body) = trip.accuracy(&trip.dispatcher, &query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let error = &body["error"];
        assert!(
            error["field"] == name || error["message"].as_str().unwrap().contains(name),
            "{query}: {body}"
        );
    }
}

#[sqlx::test]
async fn many_shipments_errors_are_summed_up_per_horizon(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, dispatcher) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (_, rival) = app
        .user("Globex", "dispatch@globex.test", Role::Dispatcher)
        .await;
    let shipment = |jwt: String, reference: String| {
        let app = &app;
        async move {
            let body = json!({"reference": reference, "origin": {"lat": 48.1, "lon": 11.5},
                              "destination": {"lat": 48.2, "lon": 11.6}});
            new_shipment(app, &jwt, body).await
        }
    };
    let errors = [
        -120.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 300.0,
    ];
    let mut stored = Vec::new();
    for (i, error) in errors.iter().enumerate() {
        let id = shipment(dispatcher.clone(), format!("SHP-{i}")).await;
        stored.push((id, 10, *error));
    }
    // The same shipment's other horizon, and another organisation's shipment, stay apart.
    stored.push((stored[0].0, 20, 1000.0));
    stored.push((shipment(rival, "SHP-X".into()).await, 10, 5000.0));
    let arrived = Utc::now().trunc_subsecs(0);
    for (id, horizon, error) in stored {
        sqlx::query(
            "INSERT INTO eta_errors (shipment_id, horizon_min, organisation_id, arrived_at,
                 shown_at, eta, error_s)
             SELECT id, $2, organisation_id, $3, $3 - make_interval(mins => $2), $3, $4
             FROM shipments WHERE id = $1",
        )
        .bind(id)
        .bind(horizon)
        .bind(arrived)
        .bind(error)
        .execute(&app.db)
        .await
        .unwrap();
    }
    let (status, body) = app.get(&dispatcher, "/api/v1/eta/accuracy").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The 90th percentile is the ninth of ten absolute errors (nearest rank), not interpolated.
    assert_eq!(
        body["horizons"],
        json!([
            {"horizon_min": 30, "n": 0, "mae_s": null, "p90_s": null, "bias_s": null},
            {"horizon_min": 20, "n": 1, "mae_s": 1000.0, "p90_s": 1000.0, "bias_s": 1000.0},
            {"horizon_min": 10, "n": 10, "mae_s": 78.0, "p90_s": 120.0, "bias_s": 54.0},
            {"horizon_min": 5, "n": 0, "mae_s": null, "p90_s": null, "bias_s": null},
        ])
    );
}
