//! Each position-driven rule as a table: a row is a name, the settings it changes, the fixes
//! (seconds in, metres north and east of the start, reported speed) and what they raise and
//! clear, with the details. Everything goes through `evaluate`, as the position writer calls it.
use serde_json::json;

use super::*;
use crate::alerts::{
    test_support::{self, at, circle, fence, moved, t0, Fix, World},
    Fence,
};

/// Where every trace starts. The planned route runs 10 km due north from here, through a
/// vertex half way, to the destination.
const HOME: (f64, f64) = (48.137, 11.575);
const ROUTE_M: f64 = 10_000.0;

/// A fix: seconds after the start, metres north and east of [`HOME`], the reported speed.
type F = (i64, f64, f64, Option<f32>);

/// A vehicle standing `north`, `east` of HOME with no reported speed, a fix every `step` s.
fn still(from: i64, to: i64, step: usize, north: f64, east: f64) -> Vec<F> {
    (from..=to)
        .step_by(step)
        .map(|s| (s, north, east, None))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    Raise,
    /// Cleared, as of `at` seconds in.
    Clear {
        at: i64,
    },
}

/// What a row expects: at the fix `s` seconds in, `rule` raised or cleared, with these details
/// (the times in them as seconds after the start, their numbers to 0.1).
type Seen = (i64, Rule, Ev, Value);

fn raise(s: i64, rule: Rule, details: Value) -> Seen {
    (s, rule, Ev::Raise, details)
}

fn clear(s: i64, rule: Rule, details: Value) -> Seen {
    (s, rule, Ev::Clear { at: s }, details)
}

/// The vehicle's shipment.
#[derive(Debug, Clone, Copy)]
enum Shipment {
    /// Shipment 1, in transit on the planned route.
    InTransit,
    /// In transit with no planned route.
    NoRoute,
    /// Assigned but not (or no longer) in transit, as the writer passes it: no trip.
    NotInTransit,
    /// None at all.
    None,
}

struct Row {
    name: &'static str,
    settings: fn(&mut AlertSettings),
    shipment: Shipment,
    /// The shipment's due time, seconds in.
    due_s: Option<i64>,
    fences: Vec<Fence>,
    fixes: Vec<F>,
    want: Vec<Seen>,
}

/// A row's defaults: the default settings, shipment 1 in transit, no geofences.
fn row() -> Row {
    Row {
        name: "",
        settings: |_| {},
        shipment: Shipment::InTransit,
        due_s: None,
        fences: vec![],
        fixes: vec![],
        want: vec![],
    }
}

fn trip(route: bool, due_s: Option<i64>) -> Trip {
    let points = [
        HOME,
        moved(HOME, ROUTE_M / 2.0, 0.0),
        moved(HOME, ROUTE_M, 0.0),
    ];
    let coordinates: Vec<[f64; 2]> = points.iter().map(|(lat, lon)| [*lon, *lat]).collect();
    Trip {
        id: 1,
        in_transit: true,
        destination: points[2],
        due_at: due_s.map(at),
        route: route.then(|| Arc::new(Route::new(&coordinates).unwrap())),
    }
}

fn fixes(fixes: &[F]) -> Vec<Fix> {
    fixes
        .iter()
        .map(|&(s, north, east, speed)| {
            let (lat, lon) = moved(HOME, north, east);
            Fix {
                at: at(s),
                lat,
                lon,
                accuracy: Some(5.0),
                speed,
            }
        })
        .collect()
}

/// The row's fixes through the rules: what each position did, with its time.
fn outcomes(r: &Row) -> Vec<(DateTime<Utc>, Outcome)> {
    let mut settings = AlertSettings::default();
    (r.settings)(&mut settings);
    let fences = OrgFences::new(1, r.fences.clone());
    let trip = match r.shipment {
        Shipment::InTransit => Some(trip(true, r.due_s)),
        Shipment::NoRoute => Some(trip(false, r.due_s)),
        Shipment::NotInTransit | Shipment::None => None,
    };
    let world = World {
        settings: &settings,
        fences: &fences,
        shipment_id: (!matches!(r.shipment, Shipment::None)).then_some(1),
        trip: trip.as_ref(),
    };
    test_support::outcomes(&|_| world, &fixes(&r.fixes))
}

/// Times in details as seconds after the start, numbers to 0.1, so a row can spell them out.
fn plain(v: Value) -> Value {
    match v {
        Value::String(s) => match s.parse::<DateTime<Utc>>() {
            Ok(t) => {
                let ms = (t - t0()).num_milliseconds();
                if ms % 1000 == 0 {
                    json!(ms / 1000)
                } else {
                    json!(ms as f64 / 1000.0)
                }
            }
            Err(_) => Value::String(s),
        },
        Value::Number(n) if !n.is_i64() => json!((n.as_f64().unwrap() * 10.0).round() / 10.0),
        Value::Object(o) => o.into_iter().map(|(k, v)| (k, plain(v))).collect(),
        v => v,
    }
}

/// What the row's fixes raised and cleared of `rules`. A clear must name an alert raised
/// before and still open, and take a seq of its own.
fn seen(r: &Row, rules: &[Rule]) -> Vec<Seen> {
    let mut open: BTreeMap<i64, Rule> = BTreeMap::new();
    let mut seqs = BTreeSet::new();
    let mut seen = Vec::new();
    for (t, out) in outcomes(r) {
        let s = (t - t0()).num_seconds();
        for change in out.changes {
            let (rule, ev, details) = match change {
                Change::Raise {
                    id, rule, details, ..
                } => {
                    assert!(seqs.insert(id), "{}: seq {id} taken twice", r.name);
                    open.insert(id, rule);
                    (rule, Ev::Raise, details)
                }
                Change::Clear {
                    id,
                    seq,
                    at,
                    details,
                } => {
                    assert!(seqs.insert(seq), "{}: seq {seq} taken twice", r.name);
                    let rule = open
                        .remove(&id)
                        .unwrap_or_else(|| panic!("{}: {id} cleared, never open", r.name));
                    let at = (at - t0()).num_seconds();
                    (rule, Ev::Clear { at }, details)
                }
            };
            if rules.contains(&rule) {
                seen.push((s, rule, ev, plain(details)));
            }
        }
    }
    seen
}

fn check(rules: &[Rule], rows: Vec<Row>) {
    for r in &rows {
        assert_eq!(seen(r, rules), r.want, "{}", r.name);
    }
}

use Rule::{GeofenceDwell, GeofenceEnter, GeofenceExit, Late, OffRoute, Overspeed, Stopped};

#[test]
fn overspeed() {
    // The default limit is 25 m/s, for 20 s.
    check(
        &[Overspeed],
        vec![
            Row {
                name: "above the limit for overspeed_min_s raises once, with since and peak",
                fixes: vec![
                    (0, 0.0, 0.0, Some(30.0)),
                    (10, 300.0, 0.0, Some(32.0)),
                    (20, 600.0, 0.0, Some(31.0)),
                    (30, 900.0, 0.0, Some(30.0)),
                ],
                want: vec![raise(
                    20,
                    Overspeed,
                    json!({"limit_mps": 25.0, "peak_mps": 32.0, "since": 0}),
                )],
                ..row()
            },
            Row {
                name: "at the limit is not over it",
                fixes: vec![
                    (0, 0.0, 0.0, Some(25.0)),
                    (30, 750.0, 0.0, Some(25.0)),
                    (60, 1500.0, 0.0, Some(25.0)),
                ],
                ..row()
            },
            Row {
                name: "a second short of overspeed_min_s raises nothing",
                fixes: vec![
                    (0, 0.0, 0.0, Some(30.0)),
                    (19, 570.0, 0.0, Some(30.0)),
                    (20, 595.0, 0.0, Some(25.0)),
                    (40, 1095.0, 0.0, Some(25.0)),
                ],
                ..row()
            },
            Row {
                name: "back to the limit clears, with the peak and the length",
                fixes: vec![
                    (0, 0.0, 0.0, Some(30.0)),
                    (20, 600.0, 0.0, Some(35.0)),
                    (40, 1200.0, 0.0, Some(26.0)),
                    (45, 1325.0, 0.0, Some(25.0)),
                    (60, 1700.0, 0.0, Some(20.0)),
                ],
                want: vec![
                    raise(
                        20,
                        Overspeed,
                        json!({"limit_mps": 25.0, "peak_mps": 35.0, "since": 0}),
                    ),
                    clear(45, Overspeed, json!({"peak_mps": 35.0, "seconds": 45})),
                ],
                ..row()
            },
            Row {
                name: "each episode raises its own",
                fixes: vec![
                    (0, 0.0, 0.0, Some(30.0)),
                    (20, 600.0, 0.0, Some(30.0)),
                    (30, 800.0, 0.0, Some(20.0)),
                    (40, 1000.0, 0.0, Some(27.0)),
                    (60, 1540.0, 0.0, Some(27.0)),
                ],
                want: vec![
                    raise(
                        20,
                        Overspeed,
                        json!({"limit_mps": 25.0, "peak_mps": 30.0, "since": 0}),
                    ),
                    clear(30, Overspeed, json!({"peak_mps": 30.0, "seconds": 30})),
                    raise(
                        60,
                        Overspeed,
                        json!({"limit_mps": 25.0, "peak_mps": 27.0, "since": 40}),
                    ),
                ],
                ..row()
            },
            Row {
                name: "an episode too short to raise clears nothing",
                fixes: vec![(0, 0.0, 0.0, Some(30.0)), (10, 300.0, 0.0, Some(20.0))],
                ..row()
            },
            Row {
                name: "speed_limit_mps from settings",
                settings: |s| s.speed_limit_mps = Some(20.0),
                fixes: vec![(0, 0.0, 0.0, Some(22.0)), (20, 440.0, 0.0, Some(22.0))],
                want: vec![raise(
                    20,
                    Overspeed,
                    json!({"limit_mps": 20.0, "peak_mps": 22.0, "since": 0}),
                )],
                ..row()
            },
            Row {
                name: "overspeed_min_s from settings: 0 raises at the first fix over",
                settings: |s| s.overspeed_min_s = 0,
                fixes: vec![(0, 0.0, 0.0, Some(20.0)), (10, 260.0, 0.0, Some(26.0))],
                want: vec![raise(
                    10,
                    Overspeed,
                    json!({"limit_mps": 25.0, "peak_mps": 26.0, "since": 10}),
                )],
                ..row()
            },
            Row {
                name: "speed_limit_mps null turns it off",
                settings: |s| s.speed_limit_mps = None,
                fixes: vec![(0, 0.0, 0.0, Some(60.0)), (60, 3600.0, 0.0, Some(60.0))],
                ..row()
            },
            Row {
                name: "with no speed reported, the one implied by the previous position",
                fixes: vec![
                    (0, 0.0, 0.0, None),
                    (10, 300.0, 0.0, None),
                    (20, 600.0, 0.0, None),
                    (30, 900.0, 0.0, None),
                    (40, 1000.0, 0.0, None),
                ],
                want: vec![
                    raise(
                        30,
                        Overspeed,
                        json!({"limit_mps": 25.0, "peak_mps": 30.0, "since": 10}),
                    ),
                    clear(40, Overspeed, json!({"peak_mps": 30.0, "seconds": 30})),
                ],
                ..row()
            },
            Row {
                name: "the reported speed is taken over the implied one",
                fixes: vec![
                    (0, 0.0, 0.0, Some(10.0)),
                    (10, 1000.0, 0.0, Some(10.0)),
                    (20, 2000.0, 0.0, Some(10.0)),
                    (30, 3000.0, 0.0, Some(10.0)),
                ],
                ..row()
            },
            Row {
                name: "on no shipment too",
                shipment: Shipment::None,
                fixes: vec![(0, 0.0, 0.0, Some(30.0)), (20, 600.0, 0.0, Some(30.0))],
                want: vec![raise(
                    20,
                    Overspeed,
                    json!({"limit_mps": 25.0, "peak_mps": 30.0, "since": 0}),
                )],
                ..row()
            },
        ],
    );
}

#[test]
fn stopped() {
    // The default is 10 minutes within 50 m.
    check(
        &[Stopped],
        vec![
            Row {
                name: "standing stopped_min minutes raises once, with since and minutes",
                fixes: still(0, 900, 60, 0.0, 0.0),
                want: vec![raise(600, Stopped, json!({"since": 0, "minutes": 10}))],
                ..row()
            },
            Row {
                name: "a second short of stopped_min raises nothing",
                fixes: vec![(0, 0.0, 0.0, None), (599, 0.0, 0.0, None)],
                ..row()
            },
            Row {
                name: "drift within stopped_radius_m is standing still",
                fixes: [0, 120, 240, 360, 480, 600]
                    .into_iter()
                    .zip([0.0, 45.0, -45.0, 45.0, 0.0, 45.0])
                    .map(|(s, east)| (s, 0.0, east, None))
                    .collect(),
                want: vec![raise(600, Stopped, json!({"since": 0, "minutes": 10}))],
                ..row()
            },
            Row {
                name: "moving beyond the radius clears, with moving_again_at",
                fixes: [still(0, 600, 60, 0.0, 0.0), vec![(660, 55.0, 0.0, None)]].concat(),
                want: vec![
                    raise(600, Stopped, json!({"since": 0, "minutes": 10})),
                    clear(660, Stopped, json!({"moving_again_at": 660})),
                ],
                ..row()
            },
            Row {
                name: "a move beyond the radius counts again from where it went",
                fixes: [still(0, 300, 60, 0.0, 0.0), still(360, 960, 60, 100.0, 0.0)].concat(),
                want: vec![raise(960, Stopped, json!({"since": 360, "minutes": 10}))],
                ..row()
            },
            Row {
                name: "moving on, fix after fix, never stops",
                fixes: (0..=20)
                    .map(|i| (i * 60, i as f64 * 60.0, 0.0, None))
                    .collect(),
                ..row()
            },
            Row {
                name: "stopped_min from settings",
                settings: |s| s.stopped_min = Some(2),
                fixes: still(0, 180, 60, 0.0, 0.0),
                want: vec![raise(120, Stopped, json!({"since": 0, "minutes": 2}))],
                ..row()
            },
            Row {
                name: "at the default radius, 150 m is a move",
                fixes: vec![
                    (0, 0.0, 0.0, None),
                    (300, 150.0, 0.0, None),
                    (600, 0.0, 0.0, None),
                ],
                ..row()
            },
            Row {
                name: "stopped_radius_m from settings: 150 m within 200 m is standing",
                settings: |s| s.stopped_radius_m = 200.0,
                fixes: vec![
                    (0, 0.0, 0.0, None),
                    (300, 150.0, 0.0, None),
                    (600, 0.0, 0.0, None),
                ],
                want: vec![raise(600, Stopped, json!({"since": 0, "minutes": 10}))],
                ..row()
            },
            Row {
                name: "stopped_min null turns it off",
                settings: |s| s.stopped_min = None,
                fixes: still(0, 1800, 60, 0.0, 0.0),
                ..row()
            },
            Row {
                name: "a shipment not in transit does not stop",
                shipment: Shipment::NotInTransit,
                fixes: still(0, 1800, 60, 0.0, 0.0),
                ..row()
            },
            Row {
                name: "a vehicle with no shipment does not stop",
                shipment: Shipment::None,
                fixes: still(0, 1800, 60, 0.0, 0.0),
                ..row()
            },
        ],
    );
}

#[test]
fn off_route() {
    // The default is farther than 200 m for 60 s; the route runs due north.
    check(
        &[OffRoute],
        vec![
            Row {
                name: "off_route_m away for off_route_s raises once, with since and distance",
                fixes: vec![
                    (0, 0.0, 0.0, None),
                    (30, 300.0, 250.0, None),
                    (60, 600.0, 260.0, None),
                    (90, 900.0, 300.0, None),
                    (120, 1200.0, 300.0, None),
                ],
                want: vec![raise(
                    90,
                    OffRoute,
                    json!({"distance_m": 300.0, "limit_m": 200.0, "since": 30}),
                )],
                ..row()
            },
            Row {
                name: "just within off_route_m is on route",
                fixes: (0..=10)
                    .map(|i| (i * 30, i as f64 * 300.0, 195.0, None))
                    .collect(),
                ..row()
            },
            Row {
                name: "a second short of off_route_s raises nothing",
                fixes: vec![
                    (0, 0.0, 0.0, None),
                    (30, 300.0, 300.0, None),
                    (89, 600.0, 300.0, None),
                    (90, 700.0, 0.0, None),
                    (150, 1300.0, 0.0, None),
                ],
                ..row()
            },
            Row {
                name: "back within it clears, with back_on_route_at and the farthest",
                fixes: vec![
                    (0, 0.0, 0.0, None),
                    (30, 300.0, 250.0, None),
                    (90, 900.0, 400.0, None),
                    (120, 1200.0, 205.0, None),
                    (150, 1500.0, 195.0, None),
                ],
                want: vec![
                    raise(
                        90,
                        OffRoute,
                        json!({"distance_m": 400.0, "limit_m": 200.0, "since": 30}),
                    ),
                    clear(
                        150,
                        OffRoute,
                        json!({"back_on_route_at": 150, "farthest_m": 400.0}),
                    ),
                ],
                ..row()
            },
            Row {
                name: "off_route_s from settings: 0 raises at the first fix off",
                settings: |s| s.off_route_s = 0,
                fixes: vec![(0, 0.0, 0.0, None), (30, 300.0, 250.0, None)],
                want: vec![raise(
                    30,
                    OffRoute,
                    json!({"distance_m": 250.0, "limit_m": 200.0, "since": 30}),
                )],
                ..row()
            },
            Row {
                name: "off_route_m from settings",
                settings: |s| s.off_route_m = Some(400.0),
                fixes: vec![
                    (0, 0.0, 0.0, None),
                    (30, 300.0, 300.0, None),
                    (90, 900.0, 300.0, None),
                    (120, 1200.0, 420.0, None),
                    (180, 1800.0, 420.0, None),
                ],
                want: vec![raise(
                    180,
                    OffRoute,
                    json!({"distance_m": 420.0, "limit_m": 400.0, "since": 120}),
                )],
                ..row()
            },
            Row {
                name: "off_route_m null turns it off",
                settings: |s| s.off_route_m = None,
                fixes: (0..=10)
                    .map(|i| (i * 30, i as f64 * 300.0, 1000.0, None))
                    .collect(),
                ..row()
            },
            Row {
                name: "a shipment without a planned route is never off it",
                shipment: Shipment::NoRoute,
                fixes: (0..=10)
                    .map(|i| (i * 30, i as f64 * 300.0, 1000.0, None))
                    .collect(),
                ..row()
            },
            Row {
                name: "a shipment not in transit is never off route",
                shipment: Shipment::NotInTransit,
                fixes: (0..=10)
                    .map(|i| (i * 30, i as f64 * 300.0, 1000.0, None))
                    .collect(),
                ..row()
            },
        ],
    );
}

#[test]
fn arrived() {
    // The destination is 10 km north; the default radius is 100 m.
    check(
        &[Rule::Arrived],
        vec![
            Row {
                name: "within arrival_radius_m arrives, with the distance",
                fixes: vec![(0, 9000.0, 0.0, None), (60, 9905.0, 0.0, None)],
                want: vec![raise(60, Rule::Arrived, json!({"distance_m": 95.0}))],
                ..row()
            },
            Row {
                name: "just outside arrival_radius_m has not arrived",
                fixes: vec![(0, 9000.0, 0.0, None), (60, 9895.0, 0.0, None)],
                ..row()
            },
            Row {
                name: "arrival_radius_m from settings",
                settings: |s| s.arrival_radius_m = Some(500.0),
                fixes: vec![(0, 9000.0, 0.0, None), (60, 9600.0, 0.0, None)],
                want: vec![raise(60, Rule::Arrived, json!({"distance_m": 400.0}))],
                ..row()
            },
            Row {
                name: "arrival_radius_m null turns it off",
                settings: |s| s.arrival_radius_m = None,
                fixes: vec![(0, 9000.0, 0.0, None), (60, ROUTE_M, 0.0, None)],
                ..row()
            },
            Row {
                name: "by the straight line, without a planned route",
                shipment: Shipment::NoRoute,
                fixes: vec![(0, 9000.0, 0.0, None), (60, 9950.0, 0.0, None)],
                want: vec![raise(60, Rule::Arrived, json!({"distance_m": 50.0}))],
                ..row()
            },
            Row {
                name: "a shipment not in transit does not arrive",
                shipment: Shipment::NotInTransit,
                fixes: vec![(0, 9000.0, 0.0, None), (60, ROUTE_M, 0.0, None)],
                ..row()
            },
        ],
    );
}

#[test]
fn geofences_through_evaluate() {
    // A 200 m circle 1 km north. Fixes more than a minute apart are each judged alone, so each
    // crossing is dated by the fix that first saw it.
    let yard = |debounce_s, dwell_s| {
        vec![Fence {
            debounce_s,
            dwell_s,
            ..fence(1, circle(moved(HOME, 1000.0, 0.0), 200.0))
        }]
    };
    let through = vec![
        (0, 0.0, 0.0, None),
        (120, 1000.0, 0.0, None),
        (150, 1000.0, 0.0, None),
        (180, 1000.0, 0.0, None),
        (210, 1000.0, 0.0, None),
        (300, 2000.0, 0.0, None),
        (330, 2000.0, 0.0, None),
    ];
    let fence_1 = json!("fence 1");
    check(
        &[GeofenceEnter, GeofenceExit, GeofenceDwell],
        vec![
            Row {
                name: "enter and exit after geofence_debounce_s; dwell raised, cleared on leaving",
                fences: yard(None, Some(60)),
                fixes: through.clone(),
                want: vec![
                    raise(
                        150,
                        GeofenceEnter,
                        json!({"geofence": fence_1, "crossed_at": 120}),
                    ),
                    raise(
                        180,
                        GeofenceDwell,
                        json!({"geofence": fence_1, "since": 120, "minutes": 1}),
                    ),
                    raise(
                        330,
                        GeofenceExit,
                        json!({"geofence": fence_1, "crossed_at": 300}),
                    ),
                    (
                        330,
                        GeofenceDwell,
                        Ev::Clear { at: 300 },
                        json!({"left_at": 300}),
                    ),
                ],
                ..row()
            },
            Row {
                name: "geofence_debounce_s from settings",
                settings: |s| s.geofence_debounce_s = 0,
                fences: yard(None, None),
                fixes: through.clone(),
                want: vec![
                    raise(
                        120,
                        GeofenceEnter,
                        json!({"geofence": fence_1, "crossed_at": 120}),
                    ),
                    raise(
                        300,
                        GeofenceExit,
                        json!({"geofence": fence_1, "crossed_at": 300}),
                    ),
                ],
                ..row()
            },
            Row {
                name: "a geofence's debounce_s over the setting",
                fences: yard(Some(60), None),
                fixes: through,
                want: vec![raise(
                    180,
                    GeofenceEnter,
                    json!({"geofence": fence_1, "crossed_at": 120}),
                )],
                ..row()
            },
        ],
    );
}

/// Driving the 10 km route due north at 10 m/s, a fix every 10 s, from 5 m along it, until 95 m
/// from the destination: 990 s in, half a second after it came within 100 m.
fn driving_north() -> Vec<F> {
    (0..=99)
        .map(|i| (i * 10, i as f64 * 100.0 + 5.0, 0.0, None))
        .collect()
}

#[test]
fn the_eta_is_given_once_on_the_way_and_becomes_the_arrival() {
    let r = Row {
        fixes: driving_north(),
        ..row()
    };
    let given: Vec<(i64, i64, bool)> = outcomes(&r)
        .into_iter()
        .filter_map(|(t, out)| {
            let eta = out.eta?;
            Some((
                (t - t0()).num_seconds(),
                (eta - t0()).num_seconds(),
                out.arrived,
            ))
        })
        .collect();
    let (first, eta, arrived) = given[0];
    assert!(
        (180..=240).contains(&first),
        "first given after about three minutes on the way: {given:?}"
    );
    assert!((eta - 990).abs() <= 30, "{given:?}");
    assert!(!arrived);
    assert_eq!(
        given[1..],
        [(990, 990, true)],
        "the same ETA is not given again; at arrival it is the arrival"
    );
}

#[test]
fn late_is_raised_once_when_the_eta_passes_due_at() {
    // The vehicle will arrive 990 s in.
    let late = |due_s| {
        let r = Row {
            due_s: Some(due_s),
            fixes: driving_north(),
            ..row()
        };
        seen(&r, &[Late])
    };
    let raised = late(600);
    assert_eq!(raised.len(), 1, "{raised:?}");
    let (s, rule, ev, details) = &raised[0];
    assert!((180..=240).contains(s), "with the first ETA: {raised:?}");
    assert_eq!((*rule, *ev), (Late, Ev::Raise));
    assert_eq!(details["due_at"], 600);
    assert!((details["eta"].as_f64().unwrap() - 990.0).abs() <= 30.0);
    assert_eq!(late(1100), [], "due after the ETA");
}

#[test]
fn a_position_clears_the_open_silent_alert() {
    let mut state = RuleState {
        silent: Some(7),
        ..RuleState::default()
    };
    let settings = AlertSettings::default();
    let fences = OrgFences::new(1, vec![]);
    let cx = Context {
        settings: &settings,
        fences: &fences,
        trip: None,
        previous: None,
    };
    let [fix] = fixes(&[(60, 0.0, 0.0, None)])[..] else {
        unreachable!()
    };
    let p = Position {
        vehicle_id: 1,
        shipment_id: None,
        lat: fix.lat,
        lon: fix.lon,
        recorded_at: fix.at,
        received_at: fix.at,
        accuracy: None,
        speed: None,
        heading: None,
        altitude: None,
        battery: None,
        late: false,
        eta: None,
    };
    let mut seq = 10;
    let mut next = || {
        seq += 1;
        seq
    };
    let out = evaluate(&mut state, &cx, &p, &mut next);
    assert_eq!(
        out.changes,
        [Change::Clear {
            id: 7,
            seq: 11,
            at: at(60),
            details: json!({"reporting_again_at": at(60)}),
        }]
    );
    assert_eq!(state.silent, None);
    let again = evaluate(&mut state, &cx, &p, &mut next);
    assert_eq!(again.changes, [], "cleared once");
}

#[test]
fn another_shipment_starts_its_trip_rules_afresh() {
    // Stopped 12 minutes and off route on shipment 1, then carrying shipment 2.
    let mut state = RuleState::default();
    assert_eq!(state.start_trip(1), Vec::<i64>::new());
    state.stop = Some(Stop {
        since: at(0),
        lat: HOME.0,
        lon: HOME.1,
        alert: Some(3),
    });
    state.off_route = Some(Episode {
        since: at(0),
        peak: 300.0,
        alert: Some(4),
    });
    state.overspeed = Some(Episode {
        since: at(0),
        peak: 30.0,
        alert: Some(5),
    });
    state.late = true;
    state.eta = Some(at(900));
    let same = state.clone();
    assert_eq!(
        state.start_trip(1),
        Vec::<i64>::new(),
        "the same shipment goes on"
    );
    assert_eq!(state, same, "the same shipment goes on");
    assert_eq!(
        state.start_trip(2),
        [3, 4],
        "the stop's and the off-route alerts, to be cleared"
    );
    assert_eq!(
        state,
        RuleState {
            shipment: Some(2),
            overspeed: same.overspeed.clone(),
            ..RuleState::default()
        },
        "stop, off route, late and ETA start afresh; speeding is the vehicle's"
    );
}

#[test]
fn another_shipment_starts_its_progress_afresh() {
    let t = DateTime::parse_from_rfc3339("2026-01-26T16:00:00Z")
        .unwrap()
        .to_utc();
    let mut state = RuleState::default();
    assert_eq!(state.start_trip(1), Vec::<i64>::new());
    // Four minutes at 10 m/s towards a destination 5 km east.
    for s in 0..=4 {
        let here = (48.0, 11.0 + f64::from(s) * 0.008);
        state.progress.observe(
            None,
            (48.0, 11.067),
            100.0,
            t + Duration::minutes(s.into()),
            here,
        );
    }
    assert!(state.progress.basis.is_some());
    let carried = state.progress.clone();
    assert_eq!(state.start_trip(1), Vec::<i64>::new());
    assert_eq!(state.progress, carried, "the same shipment goes on");
    assert_eq!(state.start_trip(2), Vec::<i64>::new());
    assert_eq!(
        state.progress,
        Progress::default(),
        "its vehicle's speed stays behind"
    );
}

/// Every change the fixes make with the default settings, on shipment 1 in transit until
/// `switch_s` seconds in and on shipment 2 from then, both on the same route.
fn handed_over(switch_s: i64, trace: &[F]) -> Vec<(DateTime<Utc>, Change)> {
    let settings = AlertSettings::default();
    let fences = OrgFences::new(1, vec![]);
    let first = trip(true, None);
    let second = Trip {
        id: 2,
        ..trip(true, None)
    };
    let world = |t: DateTime<Utc>| {
        let trip = if t < at(switch_s) { &first } else { &second };
        World {
            settings: &settings,
            fences: &fences,
            shipment_id: Some(trip.id),
            trip: Some(trip),
        }
    };
    test_support::run(&world, &fixes(trace))
}

#[test]
fn the_next_shipment_counts_its_stop_afresh() {
    // Standing still throughout; shipment 2 takes over from shipment 1 eight minutes in.
    let raised: Vec<_> = handed_over(480, &still(0, 1200, 60, 0.0, 0.0))
        .into_iter()
        .map(|(t, c)| match c {
            Change::Raise { rule, details, .. } => ((t - t0()).num_seconds(), rule, plain(details)),
            c => panic!("{c:?}"),
        })
        .collect();
    assert_eq!(
        raised,
        [(1080, Stopped, json!({"since": 480, "minutes": 10}))]
    );
}

#[test]
fn a_stopped_alert_open_when_the_next_shipment_starts_ends_with_its_trip() {
    // Stopped 15 minutes on shipment 1; shipment 2 starts there 15 minutes in and drives off.
    let trace = [still(0, 900, 60, 0.0, 0.0), vec![(960, 600.0, 0.0, None)]].concat();
    let changes: Vec<(i64, Option<Value>)> = handed_over(900, &trace)
        .into_iter()
        .map(|(t, c)| {
            let s = (t - t0()).num_seconds();
            match c {
                Change::Raise { rule, .. } => {
                    assert_eq!(rule, Stopped);
                    (s, None)
                }
                Change::Clear { details, .. } => (s, Some(plain(details))),
            }
        })
        .collect();
    assert_eq!(
        changes,
        [(600, None), (900, Some(json!({"trip_ended_at": 900})))],
        "raised on shipment 1, cleared when shipment 2 takes over: it was shipment 1's"
    );
}

#[test]
fn arriving_clears_the_trips_open_stop_and_off_route_alerts() {
    check(
        &[Rule::Arrived, Stopped, OffRoute],
        vec![Row {
            name: "stopped 70 m short of the destination, then arriving within the stop's radius",
            settings: |s| s.arrival_radius_m = Some(40.0),
            fixes: [
                still(0, 660, 60, 9930.0, 0.0),
                vec![(720, 9970.0, 0.0, None)],
            ]
            .concat(),
            want: vec![
                raise(600, Stopped, json!({"since": 0, "minutes": 10})),
                raise(720, Rule::Arrived, json!({"distance_m": 30.0})),
                clear(720, Stopped, json!({"trip_ended_at": 720})),
            ],
            ..row()
        }],
    );
}

#[test]
fn real_trips_on_their_own_route_arrive_once_and_never_leave_it() {
    // Each recorded trip of a quarter of an hour or more, planned along its own fixes (one in
    // five), to where it ended, with the default settings and the speeds it recorded.
    let settings = AlertSettings::default();
    let radius = settings.arrival_radius_m.unwrap();
    let fences = OrgFences::new(1, vec![]);
    let mut checked = 0;
    for vehicle in waymark_sim::tracks::fleet().unwrap() {
        for recorded in &vehicle.trips {
            let (start, end) = (recorded.first(), recorded.last());
            if end.at - start.at < Duration::minutes(15) {
                continue;
            }
            let fixes: Vec<Fix> = recorded
                .fixes
                .iter()
                .map(|f| Fix {
                    at: f.at,
                    lat: f.point.lat,
                    lon: f.point.lon,
                    accuracy: None,
                    speed: f.speed.map(|v| v as f32),
                })
                .collect();
            let mut coordinates: Vec<[f64; 2]> =
                fixes.iter().step_by(5).map(|f| [f.lon, f.lat]).collect();
            coordinates.push([end.point.lon, end.point.lat]);
            let trip = Trip {
                id: 1,
                in_transit: true,
                destination: (end.point.lat, end.point.lon),
                due_at: None,
                route: Some(Arc::new(Route::new(&coordinates).unwrap())),
            };
            let world = World {
                settings: &settings,
                fences: &fences,
                shipment_id: Some(1),
                trip: Some(&trip),
            };
            let name = format!("{} from {}", vehicle.name, start.at);
            let arrives = fixes
                .iter()
                .find(|f| metres((f.lat, f.lon), trip.destination) <= radius)
                .unwrap()
                .at;
            let mut arrived = vec![];
            let mut first_eta = None;
            for (t, out) in test_support::outcomes(&|_| world, &fixes) {
                for c in out.changes {
                    if let Change::Raise { rule, .. } = c {
                        assert_ne!(rule, OffRoute, "{name} at {t}");
                        if rule == Rule::Arrived {
                            arrived.push(t);
                        }
                    }
                }
                if out.eta.is_some() && !out.arrived {
                    first_eta = first_eta.or(Some(t));
                }
            }
            assert_eq!(arrived, [arrives], "{name}");
            if arrives - start.at >= Duration::minutes(10) {
                assert!(
                    first_eta.is_some_and(|t| t < arrives),
                    "{name}: an ETA on the way"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} trips checked");
}
