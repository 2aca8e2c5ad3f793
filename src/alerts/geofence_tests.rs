//! The geofence rules against what GPS does: a parked vehicle whose fixes drift (a seeded noise
//! model) raises nothing, and real recorded drives through a geofence raise one enter and one
//! exit, with sparse fixes, repeated fixes and a glitch too. Everything goes through
//! `evaluate`, as the position writer calls it.
use chrono::{DateTime, Duration, Utc};
use waymark_sim::run::noise::Drift;

use super::{
    fence_state::MARGIN_FLOOR_M,
    fences::polygon_from_geojson,
    route::metres,
    test_support::{self, circle, fence, moved, t0, Fix, World},
    AlertSettings, Area, Change, Fence, OrgFences, Rule, Shape,
};

const DEBOUNCE: Duration = Duration::seconds(30);

/// A geofence alert raised: its rule, the time of the fix that raised it, and when the details
/// say it happened (`crossed_at`, or `since` for dwell).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Raised {
    rule: Rule,
    at: DateTime<Utc>,
    happened: DateTime<Utc>,
}

/// A fix without a reported speed.
fn fix(at: DateTime<Utc>, (lat, lon): (f64, f64), accuracy: Option<f32>) -> Fix {
    Fix {
        at,
        lat,
        lon,
        accuracy,
        speed: None,
    }
}

/// A square with sides of `side` metres around `centre`.
fn square(centre: (f64, f64), side: f64) -> Shape {
    let h = side / 2.0;
    let corners = [(-h, -h), (-h, h), (h, h), (h, -h), (-h, -h)];
    let ring: Vec<[f64; 2]> = corners
        .iter()
        .map(|&(n, e)| {
            let (lat, lon) = moved(centre, n, e);
            [lon, lat]
        })
        .collect();
    let polygon = serde_json::json!({"type": "Polygon", "coordinates": [ring]});
    Shape::Polygon(Area::new(polygon_from_geojson(&polygon).unwrap()))
}

/// Runs the fixes through the rules, one vehicle with default settings; the geofence alerts.
fn drive(fences: &OrgFences, fixes: &[Fix]) -> Vec<Raised> {
    run(&|_| (fences, None), fixes)
        .into_iter()
        .filter_map(|(at, change)| match change {
            Change::Raise { rule, details, .. } if is_geofence(rule) => {
                let happened = details["crossed_at"]
                    .as_str()
                    .or(details["since"].as_str())
                    .expect("geofence alerts say when")
                    .parse()
                    .unwrap();
                Some(Raised { rule, at, happened })
            }
            _ => None,
        })
        .collect()
}

fn is_geofence(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::GeofenceEnter | Rule::GeofenceExit | Rule::GeofenceDwell
    )
}

/// Runs the fixes through the rules, one vehicle with default settings and no trip, judged at
/// each fix against the geofences and on the shipment `world` gives for its time; every
/// change, with the time of the fix that made it.
fn run<'a>(
    world: &dyn Fn(DateTime<Utc>) -> (&'a OrgFences, Option<i64>),
    fixes: &[Fix],
) -> Vec<(DateTime<Utc>, Change)> {
    let settings = AlertSettings::default();
    assert_eq!(settings.geofence_debounce_s as i64, DEBOUNCE.num_seconds());
    test_support::run(
        &|at| {
            let (fences, shipment_id) = world(at);
            World {
                settings: &settings,
                fences,
                shipment_id,
                trip: None,
            }
        },
        fixes,
    )
}

fn rules(raised: &[Raised]) -> Vec<Rule> {
    raised.iter().map(|r| r.rule).collect()
}

/// How a vehicle is parked near the edge of a geofence, and what its fixes look like.
#[derive(Debug, Clone, Copy)]
struct Parked {
    /// Metres from the edge; inside or out.
    distance: f64,
    inside: bool,
    /// Seconds between fixes.
    every: i64,
    /// The correlation time of the noise, seconds.
    tau: f64,
    accuracy: Option<f32>,
    seed: u64,
}

/// The fixes of a vehicle that comes to `spot` and stays 30 minutes, from `centre` (where it
/// waits a minute first) when the spot is inside, or from 300 m farther out when it is
/// outside; `outward` is the unit vector (north, east) from the geofence across its edge at
/// the spot. Each fix carries the drift of σ 7 m.
fn parked_fixes(p: Parked, centre: (f64, f64), spot: (f64, f64), outward: (f64, f64)) -> Vec<Fix> {
    let start = if p.inside {
        centre
    } else {
        moved(spot, 300.0 * outward.0, 300.0 * outward.1)
    };
    let mut drift = Drift::new(p.seed, 7.0, p.tau);
    let mut truth: Vec<(f64, f64)> = Vec::new();
    if p.inside {
        truth.extend(std::iter::repeat_n(start, 60 / p.every as usize));
    }
    let way = metres(start, spot);
    // At 10 m/s.
    let steps = (way / 10.0 / p.every as f64).ceil() as usize;
    truth.extend((1..=steps).map(|i| {
        let k = i as f64 / steps as f64;
        (
            start.0 + k * (spot.0 - start.0),
            start.1 + k * (spot.1 - start.1),
        )
    }));
    truth.extend(std::iter::repeat_n(spot, (30 * 60 / p.every) as usize));
    truth
        .into_iter()
        .enumerate()
        .map(|(i, place)| {
            let (north, east) = drift.step(p.every as f64);
            let (lat, lon) = moved(place, north, east);
            fix(
                t0() + Duration::seconds(i as i64 * p.every),
                (lat, lon),
                p.accuracy,
            )
        })
        .collect()
}

#[test]
fn a_vehicle_parked_near_an_edge_with_drifting_fixes_raises_nothing() {
    let depot = (48.137, 11.575);
    let site = moved(depot, 0.0, 1000.0);
    // A 300 m square depot and a customer site of 150 m radius, each with a 10 minute dwell.
    let mut yard = fence(1, square(depot, 300.0));
    yard.dwell_s = Some(600);
    let mut customer = fence(2, circle(site, 150.0));
    customer.dwell_s = Some(600);
    let fences = OrgFences::new(1, vec![yard, customer]);
    let mut runs = 0;
    for (centre, edge) in [(depot, 150.0), (site, 150.0)] {
        // Parked by the middle of the south side, or the circle's southernmost point.
        for distance in [5.0, 10.0, 15.0, 20.0] {
            for inside in [true, false] {
                for every in [1, 10] {
                    for (seed, tau) in (0..4).zip([120.0, 300.0, 120.0, 300.0]) {
                        let p = Parked {
                            distance,
                            inside,
                            every,
                            tau,
                            // A phone's figure for σ 7 m (its 68 % radius), or none.
                            accuracy: if seed < 2 { Some(10.0) } else { None },
                            seed,
                        };
                        let from_centre = if inside {
                            edge - p.distance
                        } else {
                            edge + p.distance
                        };
                        let spot = moved(centre, -from_centre, 0.0);
                        let raised = drive(&fences, &parked_fixes(p, centre, spot, (-1.0, 0.0)));
                        let want: &[Rule] = if inside {
                            &[Rule::GeofenceEnter, Rule::GeofenceDwell]
                        } else {
                            &[]
                        };
                        assert_eq!(rules(&raised), want, "{p:?} at {centre:?}: {raised:?}");
                        runs += 1;
                    }
                }
            }
        }
    }
    assert_eq!(runs, 128);
}

/// One recorded trip: its name and fixes (the sources record no accuracy).
fn recorded_trips() -> Vec<(String, Vec<Fix>)> {
    let mut trips = Vec::new();
    for vehicle in waymark_sim::tracks::fleet().unwrap() {
        for (i, trip) in vehicle.trips.iter().enumerate() {
            let fixes = trip
                .fixes
                .iter()
                .map(|f| fix(f.at, (f.point.lat, f.point.lon), None))
                .collect();
            trips.push((format!("{} trip {i}", vehicle.name), fixes));
        }
    }
    trips
}

/// The trip as if driven in a straight line between fixes, a point a second: where it was.
fn densified(fixes: &[Fix]) -> Vec<Fix> {
    let mut dense = vec![fixes[0]];
    for w in fixes.windows(2) {
        let (a, b) = (w[0], w[1]);
        let n = (b.at - a.at).num_seconds().max(1);
        dense.extend((1..=n).map(|i| {
            let k = i as f64 / n as f64;
            fix(
                a.at + Duration::seconds(i),
                (a.lat + k * (b.lat - a.lat), a.lon + k * (b.lon - a.lon)),
                None,
            )
        }));
    }
    dense
}

/// When the trip, as driven between its fixes, was first deeper inside the geofence than the
/// least margin, and first farther outside than it after that, if it passed the geofence once
/// and went that deep: it came from farther than 150 m, went in, and left to farther than 150 m
/// without coming back.
fn passes_once(fence: &Fence, fixes: &[Fix]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let dense = densified(fixes);
    let depth: Vec<f64> = dense.iter().map(|f| fence.depth(f.lat, f.lon)).collect();
    let first_in = depth.iter().position(|d| *d > 0.0)?;
    let last_in = depth.iter().rposition(|d| *d > 0.0)?;
    let near = |d: &f64| *d > -150.0;
    let came = depth[..first_in].iter().rposition(|d| !near(d))?;
    let left = last_in + depth[last_in..].iter().position(|d| !near(d))?;
    let once = depth[came + 1..left].iter().all(near) && !depth[..came].iter().any(near);
    let never_back = !depth[left..].iter().any(near);
    let deep_in = depth.iter().position(|d| *d > MARGIN_FLOOR_M)?;
    let deep_out = last_in + depth[last_in..].iter().position(|d| *d < -MARGIN_FLOOR_M)?;
    (once && never_back).then(|| (dense[deep_in].at, dense[deep_out].at))
}

/// The largest gap between fixes from `from` to `to`.
fn largest_gap(fixes: &[Fix], from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    fixes
        .windows(2)
        .filter(|w| w[1].at >= from && w[0].at <= to)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default()
}

/// Keeps a fix when at least `every` has passed since the last one kept.
fn thinned(fixes: &[Fix], every: Duration) -> Vec<Fix> {
    let mut kept: Vec<Fix> = Vec::new();
    for f in fixes {
        if kept.last().is_none_or(|k| f.at - k.at >= every) {
            kept.push(*f);
        }
    }
    kept
}

/// A recorded trip through a geofence, in the ways its fixes can arrive: as recorded, every
/// other one dropped, thinned to one each 10, 20 and 30 s, each fix sent twice, and with one
/// fix 3 km off just before the geofence. Each must raise exactly one enter and one exit, no
/// later than the debounce (plus the time to the next fix) after the vehicle was in (or out)
/// by more than the margin, and dated within the time between fixes of when it was.
fn check_passes(name: &str, fence: &Fence, fixes: &[Fix]) -> Option<usize> {
    let (entered, left) = passes_once(fence, fixes)?;
    let fences = OrgFences::new(1, vec![fence.clone()]);
    let every_other: Vec<Fix> = fixes.iter().step_by(2).copied().collect();
    let twice: Vec<Fix> = fixes.iter().flat_map(|f| [*f, *f]).collect();
    // Half way in time between the last two fixes before the vehicle entered.
    let mut glitched = fixes.to_vec();
    let before = glitched.iter().rposition(|f| f.at < entered)?.max(1);
    let (a, b) = (glitched[before - 1], glitched[before]);
    let (lat, lon) = moved((a.lat, a.lon), 3000.0, 0.0);
    glitched.insert(before, fix(a.at + (b.at - a.at) / 2, (lat, lon), Some(5.0)));
    let variants = [
        ("as recorded", fixes.to_vec()),
        ("every other fix", every_other),
        ("every 10 s", thinned(fixes, Duration::seconds(10))),
        ("every 20 s", thinned(fixes, Duration::seconds(20))),
        ("every 30 s", thinned(fixes, Duration::seconds(30))),
        ("each fix twice", twice),
        ("a 3 km glitch", glitched),
    ];
    let mut checked = 0;
    for (how, fixes) in variants {
        // Between distinct fixes: the repeats and the glitch are not a vehicle reporting.
        let distinct = thinned(&fixes, Duration::seconds(1));
        let gap = largest_gap(
            &distinct,
            entered - Duration::minutes(1),
            left + Duration::minutes(1),
        );
        // Fixes more than a minute apart do not say where the vehicle went between them.
        if gap > Duration::seconds(60) {
            continue;
        }
        let raised = drive(&fences, &fixes);
        let what = format!("{name}, {how}: entered {entered}, left {left}, {raised:?}");
        assert_eq!(
            rules(&raised),
            [Rule::GeofenceEnter, Rule::GeofenceExit],
            "{what}"
        );
        let slack = gap + Duration::seconds(5);
        for (r, truth) in raised.iter().zip([entered, left]) {
            assert!(r.at <= truth + DEBOUNCE + slack, "{what}");
            assert!((r.happened - truth).abs() <= slack, "{what}");
        }
        checked += 1;
    }
    Some(checked)
}

#[test]
fn real_drives_through_a_geofence_raise_one_enter_and_one_exit() {
    let mut checked = 0;
    let mut fences_placed = 0;
    for (name, fixes) in recorded_trips() {
        // Circles of 100 m radius centred on the route a quarter, half and three quarters of
        // the way along, where the route passes them once.
        for q in 1..=3 {
            let at = fixes[fixes.len() * q / 4];
            let f = fence(1, circle((at.lat, at.lon), 100.0));
            if let Some(n) = check_passes(&format!("{name} at {q}/4"), &f, &fixes) {
                checked += n;
                fences_placed += 1;
            }
        }
    }
    assert!(fences_placed >= 40, "{fences_placed} geofences placed");
    assert!(checked >= 250, "{checked} drives checked");
}

#[test]
fn a_small_geofence_crossed_between_two_fixes_raises_enter_and_exit() {
    let (_, munich) = recorded_trips()
        .into_iter()
        .find(|(name, _)| name.starts_with("Car Munich"))
        .unwrap();
    let sparse = thinned(&munich, Duration::seconds(10));
    let mut placed = 0;
    for w in sparse.windows(2).step_by(7) {
        let (a, b) = (w[0], w[1]);
        if metres((a.lat, a.lon), (b.lat, b.lon)) < 130.0 {
            continue;
        }
        // A circle of 35 m on the middle of the line between the two fixes, where the
        // recorded 1 Hz fixes show the car really drove: the two fixes lie 30 m or more
        // outside it, and no fix of the thinned trace is inside.
        let middle = ((a.lat + b.lat) / 2.0, (a.lon + b.lon) / 2.0);
        let f = fence(1, circle(middle, 35.0));
        let driven = munich
            .iter()
            .filter(|m| m.at > a.at && m.at < b.at)
            .any(|m| f.depth(m.lat, m.lon) > 25.0);
        if !driven || passes_once(&f, &munich).is_none() {
            continue;
        }
        let fences = OrgFences::new(1, vec![f.clone()]);
        assert!(sparse.iter().all(|s| f.depth(s.lat, s.lon) < -20.0));
        let raised = drive(&fences, &sparse);
        let what = format!("between {} and {}: {raised:?}", a.at, b.at);
        assert_eq!(
            rules(&raised),
            [Rule::GeofenceEnter, Rule::GeofenceExit],
            "{what}"
        );
        for r in &raised {
            assert_eq!(r.at, b.at, "{what}");
            assert!(r.happened > a.at && r.happened < b.at, "{what}");
        }
        // Every fix, a second apart, tells the same.
        let dense = drive(&fences, &munich);
        assert_eq!(
            rules(&dense),
            [Rule::GeofenceEnter, Rule::GeofenceExit],
            "{what}; 1 Hz: {dense:?}"
        );
        placed += 1;
    }
    assert!(placed >= 5, "{placed} geofences placed");
}

/// A vehicle parked at the middle of a depot for `minutes`, a fix every 10 s.
fn parked_inside(centre: (f64, f64), minutes: i64) -> Vec<Fix> {
    (0..minutes * 6)
        .map(|i| fix(t0() + Duration::seconds(10 * i), centre, Some(5.0)))
        .collect()
}

#[test]
fn deleting_a_geofence_clears_its_dwell_and_raises_no_exit() {
    let depot = (53.4, -2.98);
    let mut yard = fence(1, square(depot, 300.0));
    yard.dwell_s = Some(300);
    let fences = OrgFences::new(1, vec![yard]);
    let none = OrgFences::new(2, vec![]);
    let fixes = parked_inside(depot, 20);
    let deleted = fixes[0].at + Duration::minutes(10);
    let changes = run(
        &|at| (if at < deleted { &fences } else { &none }, None),
        &fixes,
    );
    let raised: Vec<(Rule, i64)> = changes
        .iter()
        .filter_map(|(_, c)| match c {
            Change::Raise { rule, id, .. } => Some((*rule, *id)),
            _ => None,
        })
        .collect();
    assert_eq!(
        raised.iter().map(|r| r.0).collect::<Vec<_>>(),
        [Rule::GeofenceEnter, Rule::GeofenceDwell],
        "{changes:?}"
    );
    let cleared: Vec<_> = changes
        .iter()
        .filter_map(|(at, c)| match c {
            Change::Clear { id, details, .. } => Some((*at, *id, details.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(cleared.len(), 1, "{changes:?}");
    let (at, id, details) = &cleared[0];
    assert_eq!(*at, deleted, "cleared at the first fix after the deletion");
    assert_eq!(*id, raised[1].1, "the dwell alert is the one cleared");
    assert_eq!(details["geofence_deleted"], true);
}

#[test]
fn a_geofence_whose_scope_lapses_is_left_after_the_debounce() {
    let depot = (53.4, -2.98);
    let mut yard = fence(1, square(depot, 300.0));
    yard.shipment_id = Some(7);
    yard.dwell_s = Some(300);
    let fences = OrgFences::new(1, vec![yard]);
    let fixes = parked_inside(depot, 20);
    let delivered = fixes[0].at + Duration::minutes(10);
    // Shipment 7 ends ten minutes in; the vehicle stays where it is, on no shipment.
    let changes = run(&|at| (&fences, (at < delivered).then_some(7)), &fixes);
    let seen: Vec<(DateTime<Utc>, Option<Rule>)> = changes
        .iter()
        .map(|(at, c)| match c {
            Change::Raise { rule, .. } => (*at, Some(*rule)),
            _ => (*at, None),
        })
        .collect();
    let exit = delivered + DEBOUNCE;
    assert_eq!(
        seen,
        [
            (fixes[0].at + DEBOUNCE, Some(Rule::GeofenceEnter)),
            (fixes[0].at + Duration::minutes(5), Some(Rule::GeofenceDwell)),
            (exit, Some(Rule::GeofenceExit)),
            (exit, None),
        ],
        "enter, dwell; then, on no shipment, as if far away: exit after the debounce, and the dwell cleared"
    );
}
