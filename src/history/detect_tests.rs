//! The detector on real traces (`simulator/tracks`), with faults injected: a day of two drives
//! and a parking stop with GPS wander, gaps in data while moving and while parked, a stop across
//! midnight, late fixes and backlogs (which must give what going through everything at once
//! gives), and the state kept as JSON between runs.
use chrono::{DateTime, Duration, Utc};

use super::*;

fn settings() -> TripSettings {
    TripSettings::default()
}

/// The Munich car's recorded drive (1 Hz, 20 minutes), as recorded: with the 470 m jump out of
/// the tunnel, and a speed for each fix of the step to it.
fn recorded() -> Vec<Fix> {
    let vehicle = waymark_sim::tracks::fleet()
        .unwrap()
        .into_iter()
        .find(|v| v.name == "Car Munich")
        .unwrap();
    vehicle.trips[0]
        .fixes
        .iter()
        .map(|f| Fix {
            at: f.at,
            lat: f.point.lat,
            lon: f.point.lon,
            speed: f.speed.map(|s| s as f32),
        })
        .collect()
}

/// The drive with the fixes the plausibility filter marks (the jump) left out, as the segmenter
/// reads them.
fn munich() -> Vec<Fix> {
    let fixes = recorded();
    let mut kept = vec![fixes[0]];
    for f in &fixes[1..] {
        let last = kept.last().unwrap();
        let seconds = (f.at - last.at).num_milliseconds() as f64 / 1000.0;
        if last.metres_to(f) / seconds <= 100.0 {
            kept.push(*f);
        }
    }
    assert!(kept.len() < fixes.len(), "the tunnel jump is in the trace");
    kept
}

fn length(fixes: &[Fix]) -> f64 {
    fixes.windows(2).map(|w| w[0].metres_to(&w[1])).sum()
}

/// `fixes` moved in time so that the first is at `start`.
fn starting(fixes: &[Fix], start: DateTime<Utc>) -> Vec<Fix> {
    let shift = start - fixes[0].at;
    fixes
        .iter()
        .map(|f| Fix {
            at: f.at + shift,
            ..*f
        })
        .collect()
}

/// Parked at `place` from `from` for `minutes`, a fix every 30 s wandering up to 30 m around it
/// (a phone in a parked van), deterministic.
fn parked(place: &Fix, from: DateTime<Utc>, minutes: i64) -> Vec<Fix> {
    (1..=minutes * 2)
        .map(|i| {
            let wobble = ((i * 7919) % 61 - 30) as f64; // -30..=30 m
            Fix {
                at: from + Duration::seconds(30 * i),
                lat: place.lat + wobble / 111_195.0,
                lon: place.lon + ((i * 104_729) % 41 - 20) as f64 / 75_000.0,
                speed: Some(0.0),
            }
        })
        .collect()
}

/// The Munich drive there, 40 minutes parked at the far end, the drive back: a delivery.
fn delivery_day(start: DateTime<Utc>) -> Vec<Fix> {
    let out = starting(&munich(), start);
    let end = *out.last().unwrap();
    let park = parked(&end, end.at, 40);
    let back = driven_back(park.last().unwrap().at + Duration::seconds(30));
    [out, park, back].concat()
}

/// The Munich drive the other way, from `start`.
fn driven_back(start: DateTime<Utc>) -> Vec<Fix> {
    let mut back: Vec<Fix> = munich().into_iter().rev().collect();
    let base = back[0].at;
    for f in &mut back {
        f.at = start + (base - f.at);
    }
    back
}

fn kinds(segments: &[Segment]) -> Vec<Kind> {
    segments.iter().map(|s| s.kind).collect()
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[test]
fn a_delivery_is_a_trip_a_stop_and_a_trip_with_the_drives_distances() {
    let day = delivery_day(t("2026-03-02T08:00:00Z"));
    let (ended, current) = segments(&day, &settings());
    assert_eq!(kinds(&ended), [Kind::Trip, Kind::Stop], "{ended:#?}");
    let current = current.expect("driving back when the data ends");
    assert_eq!(current.kind, Kind::Trip);
    let drive = length(&munich());
    for trip in [ended[0], current] {
        // The trip ends where the vehicle came to a stop, a few fixes short of the drive's end at
        // most: within 2 % of the drive's length.
        let ratio = trip.totals.distance_m / drive;
        assert!((0.98..=1.0001).contains(&ratio), "{ratio}: {trip:?}");
        assert!(trip.totals.max_speed_mps > 10.0 && trip.totals.max_speed_mps < 40.0);
    }
    let stop = ended[1];
    assert_eq!(
        stop.start, ended[0].end,
        "the stop begins where the trip ended"
    );
    let parked_for = stop.duration().num_minutes();
    assert!((40..=42).contains(&parked_for), "{parked_for} minutes");
    assert_eq!(stop.totals.distance_m, 0.0);
}

#[test]
fn the_state_kept_as_json_between_runs_gives_the_same_segments() {
    let day = delivery_day(t("2026-03-02T08:00:00Z"));
    let (whole, whole_current) = segments(&day, &settings());
    for run in [1, 7, 60, 500] {
        let mut detector = Detector::after(day[0]);
        let mut ended = Vec::new();
        for chunk in day[1..].chunks(run) {
            let saved = serde_json::to_string(&detector).unwrap();
            detector = serde_json::from_str(&saved).unwrap();
            for f in chunk {
                detector.push(*f, &settings(), &mut ended);
            }
        }
        assert_eq!(ended, whole, "runs of {run}");
        assert_eq!(detector.current(&settings()), whole_current);
    }
}

/// What the segmenter does when fixes arrive late: the segments ending before the earliest new
/// fix stay; detection starts again at the end of the last of them, over everything stored.
fn with_late(
    stored: &[Fix],
    late: &[Fix],
    settings: &TripSettings,
) -> (Vec<Segment>, Option<Segment>) {
    let (mut ended, _) = segments(stored, settings);
    let from = late.iter().map(|f| f.at).min().unwrap();
    ended.retain(|s| s.decided < from);
    let mut all: Vec<Fix> = stored.iter().chain(late).copied().collect();
    all.sort_by_key(|f| f.at);
    let boundary = ended.last().map(|s| s.end.at);
    let rest: Vec<Fix> = all
        .into_iter()
        .filter(|f| boundary.is_none_or(|b| f.at >= b))
        .collect();
    let (again, current) = segments(&rest, settings);
    ended.extend(again);
    (ended, current)
}

#[test]
fn a_backlog_arriving_late_gives_what_the_whole_history_gives() {
    let day = delivery_day(t("2026-03-02T08:00:00Z"));
    let whole = segments(&day, &settings());
    // Every stretch of 300 fixes held back (a phone offline) and sent later, one by one and
    // all at once.
    for start in (0..day.len() - 300).step_by(150) {
        let late = &day[start..start + 300];
        let stored: Vec<Fix> = [&day[..start], &day[start + 300..]].concat();
        assert_eq!(with_late(&stored, late, &settings()), whole, "from {start}");
    }
    // Single late fixes anywhere.
    for i in (1..day.len()).step_by(97) {
        let stored: Vec<Fix> = [&day[..i], &day[i + 1..]].concat();
        assert_eq!(
            with_late(&stored, &day[i..=i], &settings()),
            whole,
            "fix {i}"
        );
    }
}

#[test]
fn a_gap_while_moving_ends_the_trip_and_one_while_parked_does_not_end_the_stop() {
    let drive = starting(&munich(), t("2026-03-02T08:00:00Z"));
    // Twenty minutes of the drive lost (a tunnel, a dead phone): the rest is 20 minutes later.
    let (before, after) = drive.split_at(500);
    let mut gapped = before.to_vec();
    gapped.extend(after[300..].iter().map(|f| Fix {
        at: f.at + Duration::minutes(20),
        ..*f
    }));
    let (ended, current) = segments(&gapped, &settings());
    assert_eq!(kinds(&ended), [Kind::Trip]);
    assert_eq!(ended[0].end, before[before.len() - 1]);
    assert_eq!(current.map(|s| s.start), Some(gapped[500]));

    // Parked, the phone silent for an hour, then found in the same place, then driving off: one
    // stop across the silence.
    let end = *drive.last().unwrap();
    let mut park = parked(&end, end.at, 10);
    let back = parked(&end, end.at + Duration::minutes(70), 5);
    park.extend(back);
    let leave = driven_back(park.last().unwrap().at + Duration::seconds(30));
    let day = [drive.clone(), park, leave].concat();
    let (ended, _) = segments(&day, &settings());
    assert_eq!(kinds(&ended), [Kind::Trip, Kind::Stop]);
    assert!(
        ended[1].duration() >= Duration::minutes(74),
        "{:?}",
        ended[1]
    );
}

#[test]
fn a_stop_across_midnight_is_one_stop() {
    let day = delivery_day(t("2026-03-02T23:10:00Z"));
    let (ended, _) = segments(&day, &settings());
    assert_eq!(kinds(&ended), [Kind::Trip, Kind::Stop]);
    let stop = ended[1];
    assert!(stop.start.at < t("2026-03-03T00:00:00Z") && stop.end.at > t("2026-03-03T00:00:00Z"));
}

#[test]
fn wander_while_parked_never_makes_a_trip_and_short_moves_are_neither() {
    let place = munich()[0];
    let start = t("2026-03-02T08:00:00Z");
    let mut fixes = vec![Fix { at: start, ..place }];
    fixes.extend(parked(&place, start, 180));
    let (ended, current) = segments(&fixes, &settings());
    assert!(ended.is_empty(), "{ended:?}");
    let stop = current.unwrap();
    assert_eq!(
        (stop.kind, stop.duration()),
        (Kind::Stop, Duration::minutes(180))
    );

    // Moving 150 m across a yard between two waits: two stops, no trip.
    let moved = Fix {
        lat: place.lat + 150.0 / 111_195.0,
        ..place
    };
    let mut yard = fixes.clone();
    yard.extend(parked(&moved, stop.end.at + Duration::seconds(30), 30));
    let (ended, current) = segments(&yard, &settings());
    assert_eq!(kinds(&ended), [Kind::Stop]);
    assert_eq!(current.map(|s| s.kind), Some(Kind::Stop));
}

#[test]
fn every_recorded_trip_of_every_trace_is_one_trip_as_long_as_its_drive() {
    for vehicle in waymark_sim::tracks::fleet().unwrap() {
        for (i, trip) in vehicle.trips.iter().enumerate() {
            let fixes: Vec<Fix> = trip
                .fixes
                .iter()
                .map(|f| Fix {
                    at: f.at,
                    lat: f.point.lat,
                    lon: f.point.lon,
                    speed: f.speed.map(|s| s as f32),
                })
                .collect();
            let (ended, current) = segments(&fixes, &settings());
            let trips: Vec<&Segment> = ended
                .iter()
                .chain(current.as_ref())
                .filter(|s| s.kind == Kind::Trip)
                .collect();
            let name = format!("{} trip {i}", vehicle.name);
            assert!(!trips.is_empty(), "{name}");
            let driven: f64 = trips.iter().map(|s| s.totals.distance_m).sum();
            let length = length(&fixes);
            assert!(driven <= length + 1e-6, "{name}");
            // Whatever is not a trip is a stop (a bus at a timing point) or a glitch left out.
            let stopped: Duration = ended
                .iter()
                .chain(current.as_ref())
                .filter(|s| s.kind == Kind::Stop)
                .map(Segment::duration)
                .sum();
            assert!(
                driven >= 0.9 * length || stopped >= Duration::minutes(5),
                "{name}: {driven} of {length}"
            );
        }
    }
}

#[test]
fn a_glitch_the_filter_let_through_is_never_a_trips_top_speed() {
    // A backlog or an import is judged fix by fix against its neighbours; say the jump out of
    // the tunnel got through unmarked, reported speed and all.
    let drive = recorded();
    let (_, believed_all) = segments(&drive, &settings());
    let top = believed_all.unwrap().totals.max_speed_mps;
    assert!(top > 400.0, "the jump is in the trace: {top}");
    let filtered = TripSettings {
        plausible_speed_mps: Some(100.0),
        ..settings()
    };
    let trip = segments(&drive, &filtered).1.unwrap();
    assert!(trip.totals.max_speed_mps < 40.0, "{trip:?}");
    assert_eq!(
        trip.totals.fixes,
        drive.len() as u32,
        "every fix still counts"
    );
}
