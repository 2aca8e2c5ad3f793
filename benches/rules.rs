//! What the alert rules cost per position, on one core and with no I/O: a vehicle driving
//! through an area with no geofences, and with 10 000 (half circles, half rectangles), plus the
//! round trip of its rule state through JSON that the writer does once per vehicle and batch.
//! `cargo bench --bench rules`; the results are in docs/BENCHMARKS.md.
use std::{hint::black_box, time::Instant};

use chrono::{Duration, Utc};
use geo::{Coord, LineString, Polygon};
use waymark::{
    alerts::{
        evaluate, AlertSettings, Area, Context, Fence, FenceState, Mark, OrgFences, Pending,
        RuleState, Shape,
    },
    tracking::position::Position,
};

const POSITIONS: i64 = 200_000;

/// A small deterministic generator, so every run places the same geofences.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// 10 000 geofences over the bench area (lat 48.08-48.16, lon 11.43-11.67), as the ingest
/// benchmark's SQL places them.
fn fences() -> Vec<Fence> {
    let mut rng = Lcg(42);
    (0..10_000)
        .map(|i| {
            let (lon, lat) = (11.43 + rng.next() * 0.24, 48.08 + rng.next() * 0.08);
            let shape = if i % 2 == 0 {
                Shape::Circle {
                    lat,
                    lon,
                    radius_m: 25.0 + rng.next() * 75.0,
                }
            } else {
                let (w, h) = (
                    (50.0 + rng.next() * 150.0) / 74_500.0,
                    (50.0 + rng.next() * 150.0) / 111_320.0,
                );
                let ring = [
                    (lon, lat),
                    (lon + w, lat),
                    (lon + w, lat + h),
                    (lon, lat + h),
                    (lon, lat),
                ];
                Shape::Polygon(Area::new(Polygon::new(
                    LineString::new(ring.iter().map(|&(x, y)| Coord { x, y }).collect()),
                    vec![],
                )))
            };
            Fence {
                id: i,
                name: format!("zone {i}"),
                shape,
                vehicle_ids: vec![],
                shipment_id: None,
                debounce_s: None,
                dwell_s: None,
            }
        })
        .collect()
}

/// Nanoseconds per position for a vehicle driving east then back along lat 48.12 at 12 m/s.
fn run(fences: &OrgFences, settings: &AlertSettings) -> (f64, usize) {
    let cx = Context {
        settings,
        fences,
        trip: None,
        previous: None,
    };
    let mut state = RuleState::default();
    let mut next = 0;
    let mut alerts = 0;
    let t0 = Utc::now();
    let started = Instant::now();
    for i in 0..POSITIONS {
        // 0.00016° of longitude is about 12 m here: 1 000 s from one side to the other.
        let step = (i % 2000) as f64;
        let x = if step < 1000.0 { step } else { 2000.0 - step };
        let p = Position {
            vehicle_id: 1,
            shipment_id: None,
            lat: 48.12,
            lon: 11.45 + x * 0.00016,
            recorded_at: t0 + Duration::seconds(i),
            received_at: t0,
            accuracy: Some(5.0),
            speed: Some(12.0),
            heading: Some(90.0),
            altitude: None,
            battery: None,
            late: false,
            eta: None,
        };
        let out = evaluate(&mut state, &cx, black_box(&p), &mut || {
            next += 1;
            next
        });
        alerts += out.changes.len();
    }
    let ns = started.elapsed().as_nanos() as f64 / POSITIONS as f64;
    (ns, alerts)
}

/// A vehicle's state as the rules leave it: inside two geofences, crossing into a third.
fn evaluated_state() -> RuleState {
    let now = Utc::now();
    let inside = FenceState {
        inside: true,
        since: Some(now),
        ..FenceState::default()
    };
    let mut state = RuleState::default();
    state.fences.insert(17, inside.clone());
    state.fences.insert(4242, inside);
    let fix = Mark::new(now, 48.12, 11.45, Some(5.0));
    let crossing = FenceState {
        pending: Some(Pending {
            since: now,
            from: fix,
            way_m: 0.0,
        }),
        ..FenceState::default()
    };
    state.fences.insert(999, crossing);
    state.fence_fix = fix;
    state
}

fn main() {
    let none = OrgFences::new(1, vec![]);
    let many = OrgFences::new(1, fences());
    let defaults = AlertSettings::default();
    // Without a debounce every crossing raises an alert: the most work the rules can do here.
    let eager = AlertSettings {
        geofence_debounce_s: 0,
        ..defaults
    };
    for (name, index, settings) in [
        ("no geofences", &none, &defaults),
        ("10 000 geofences", &many, &defaults),
        ("10 000, no debounce", &many, &eager),
    ] {
        let (ns, alerts) = run(index, settings);
        println!("{name:>19}: {ns:7.0} ns per position ({alerts} enter/exit alerts in {POSITIONS} positions)");
    }
    // The writer parses and writes each vehicle's state once per batch.
    let mut state = evaluated_state();
    let started = Instant::now();
    for _ in 0..POSITIONS {
        let json = serde_json::to_string(black_box(&state)).unwrap();
        state = serde_json::from_str(&json).unwrap();
    }
    let ns = started.elapsed().as_nanos() as f64 / POSITIONS as f64;
    println!(
        "{:>18}: {ns:7.0} ns per vehicle and batch",
        "rule state as JSON"
    );
}
