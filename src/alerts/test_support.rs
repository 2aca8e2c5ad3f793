//! What the rule tests share: placing points in metres, and driving fixes through `evaluate` as
//! the position writer does (the state kept as JSON between positions, the previous position
//! passed along, and the trip over once the shipment has arrived).
use chrono::{DateTime, Duration, Utc};

use super::{
    evaluate, AlertSettings, Change, Context, Fence, OrgFences, Outcome, RuleState, Shape, Trip,
};
use crate::tracking::position::{LastFix, Position};

/// Metres per degree of latitude, for placing points.
pub const M_PER_DEG: f64 = 111_195.0;

/// `(lat, lon)` moved `north` and `east` metres.
pub fn moved((lat, lon): (f64, f64), north: f64, east: f64) -> (f64, f64) {
    (
        lat + north / M_PER_DEG,
        lon + east / (M_PER_DEG * lat.to_radians().cos()),
    )
}

/// The time the tests' traces start.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// `s` seconds after [`t0`].
pub fn at(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

/// A geofence for every vehicle, with the organisation's debounce and no dwell.
pub fn fence(id: i64, shape: Shape) -> Fence {
    Fence {
        id,
        name: format!("fence {id}"),
        shape,
        vehicle_ids: vec![],
        shipment_id: None,
        debounce_s: None,
        dwell_s: None,
    }
}

pub fn circle((lat, lon): (f64, f64), radius_m: f64) -> Shape {
    Shape::Circle { lat, lon, radius_m }
}

/// A fix as a device sends it.
#[derive(Debug, Clone, Copy)]
pub struct Fix {
    pub at: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub accuracy: Option<f32>,
    pub speed: Option<f32>,
}

/// What the rules judge a fix against: the vehicle's settings, its organisation's geofences,
/// the shipment the position joins, and the vehicle's active trip.
#[derive(Clone, Copy)]
pub struct World<'a> {
    pub settings: &'a AlertSettings,
    pub fences: &'a OrgFences,
    pub shipment_id: Option<i64>,
    pub trip: Option<&'a Trip>,
}

/// Runs the fixes of vehicle 1 through the rules, each judged against what `world` gives for
/// its time; what each position did, with its time. Once a position arrives the trip is over,
/// as the writer ends it.
pub fn outcomes<'a>(
    world: &dyn Fn(DateTime<Utc>) -> World<'a>,
    fixes: &[Fix],
) -> Vec<(DateTime<Utc>, Outcome)> {
    let mut state = RuleState::default();
    let mut seq = 0;
    let mut previous: Option<LastFix> = None;
    let mut arrived = false;
    let mut done = Vec::new();
    for fix in fixes {
        let w = world(fix.at);
        let cx = Context {
            settings: w.settings,
            fences: w.fences,
            trip: w.trip.filter(|_| !arrived),
            previous: previous.as_ref(),
        };
        let p = Position {
            vehicle_id: 1,
            shipment_id: w.shipment_id,
            lat: fix.lat,
            lon: fix.lon,
            recorded_at: fix.at,
            received_at: fix.at,
            accuracy: fix.accuracy,
            speed: fix.speed,
            heading: None,
            altitude: None,
            battery: None,
            late: false,
            eta: None,
        };
        // The writer keeps the state as JSON between batches.
        state = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        let out = evaluate(&mut state, &cx, &p, &mut || {
            seq += 1;
            seq
        });
        arrived |= out.arrived;
        previous = Some(LastFix {
            recorded_at: fix.at,
            lat: fix.lat,
            lon: fix.lon,
        });
        done.push((fix.at, out));
    }
    done
}

/// Every change the fixes made, with the time of the position that made it.
pub fn run<'a>(
    world: &dyn Fn(DateTime<Utc>) -> World<'a>,
    fixes: &[Fix],
) -> Vec<(DateTime<Utc>, Change)> {
    outcomes(world, fixes)
        .into_iter()
        .flat_map(|(at, out)| out.changes.into_iter().map(move |c| (at, c)))
        .collect()
}
