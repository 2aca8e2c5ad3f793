//! What the clock decides for each shipment in transit, as a table: a row is a name, the
//! settings in force, the stored rule state, how long ago the last position was and when the
//! shipment was due, and what it raises. The times it judges by are its own, so every limit is
//! tried at the exact second.
use chrono::{Duration, TimeZone};
use serde_json::json;

use super::*;

/// When the clock ticks.
fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000, 0).unwrap()
}

/// Seconds relative to [`now`], as the details carry them.
fn ago(s: i64) -> Value {
    json!(now() - Duration::seconds(s))
}

struct Row {
    name: &'static str,
    /// The settings in force (the organisation's and the vehicle's, merged), if any are stored.
    settings: Option<Value>,
    /// The vehicle's stored rule state.
    state: Value,
    /// Seconds since the last position, or since the shipment started without one.
    last_s: i64,
    /// Whether the vehicle has a last position.
    placed: bool,
    /// Seconds since the shipment was due (negative: due in that long).
    due_s: Option<i64>,
    eta: Option<DateTime<Utc>>,
    /// What it raises, in order: the rule and its details.
    want: Vec<(Rule, Value)>,
}

fn row() -> Row {
    Row {
        name: "",
        settings: None,
        state: json!({}),
        last_s: 0,
        placed: true,
        due_s: None,
        eta: None,
        want: vec![],
    }
}

const LAT: f64 = 48.137;
const LON: f64 = 11.575;

fn candidate(r: &Row) -> Candidate {
    Candidate {
        vehicle_id: 3,
        organisation_id: 2,
        shipment_id: 7,
        last_at: now() - Duration::seconds(r.last_s),
        lat: r.placed.then_some(LAT),
        lon: r.placed.then_some(LON),
        alert_state: r.state.clone(),
        settings: r.settings.clone(),
        due_at: r.due_s.map(|s| now() - Duration::seconds(s)),
        eta: r.eta,
    }
}

/// The row judged, with seqs handed out after 100: its raises must take 101, 102, …, be for
/// the candidate's vehicle and shipment, and be written to its state (which is stored only when
/// it changed).
fn check(rows: Vec<Row>) {
    for r in &rows {
        let mut next = 100;
        let Due { changes, states } = judge(vec![candidate(r)], now(), &mut next);
        let mut raised = Vec::new();
        for (i, (subject, change)) in changes.into_iter().enumerate() {
            assert_eq!(
                (
                    subject.organisation_id,
                    subject.vehicle_id,
                    subject.shipment_id
                ),
                (2, 3, Some(7)),
                "{}",
                r.name
            );
            assert!(subject.position.is_none(), "{}", r.name);
            let Change::Raise {
                id,
                rule,
                geofence_id: None,
                details,
            } = change
            else {
                panic!("{}: the clock only raises: {change:?}", r.name);
            };
            assert_eq!(id, 101 + i as i64, "{}", r.name);
            raised.push((rule, details));
        }
        assert_eq!(raised, r.want, "{}", r.name);
        assert_eq!(next, 100 + raised.len() as i64, "{}", r.name);
        let before: RuleState = serde_json::from_value(r.state.clone()).unwrap();
        let mut after = before.clone();
        if let [(vehicle, json)] = &states[..] {
            assert_eq!(*vehicle, 3, "{}", r.name);
            after = serde_json::from_str(json).unwrap();
            assert_ne!(after, before, "{}: stored only when changed", r.name);
        } else {
            assert_eq!(states, [], "{}", r.name);
        }
        let silent = raised.iter().position(|(rule, _)| *rule == Rule::Silent);
        if let Some(i) = silent {
            assert_eq!(after.silent, Some(101 + i as i64), "{}", r.name);
        }
        if raised.iter().any(|(rule, _)| *rule == Rule::Late) {
            assert!(after.late, "{}", r.name);
            assert_eq!(after.shipment, Some(7), "{}", r.name);
        }
    }
}

fn silent_for(minutes: i64) -> (Rule, Value) {
    (
        Rule::Silent,
        json!({
            "last_position_at": ago(minutes * 60),
            "minutes": minutes,
            "last_position": {"lat": LAT, "lon": LON},
        }),
    )
}

#[test]
fn silent() {
    // The default is 10 minutes.
    check(vec![
        Row {
            name: "silent at exactly silent_min, with the last position",
            last_s: 600,
            want: vec![silent_for(10)],
            ..row()
        },
        Row {
            name: "a second short of silent_min is not silent",
            last_s: 599,
            ..row()
        },
        Row {
            name: "the minutes are whole ones",
            last_s: 25 * 60 + 59,
            want: vec![(
                Rule::Silent,
                json!({
                    "last_position_at": ago(25 * 60 + 59),
                    "minutes": 25,
                    "last_position": {"lat": LAT, "lon": LON},
                }),
            )],
            ..row()
        },
        Row {
            name: "once: an open silent alert is not raised again",
            state: json!({"silent": 42}),
            last_s: 3600,
            ..row()
        },
        Row {
            name: "a vehicle that never reported is silent since the shipment started",
            placed: false,
            last_s: 600,
            want: vec![(
                Rule::Silent,
                json!({"last_position_at": ago(600), "minutes": 10}),
            )],
            ..row()
        },
        Row {
            name: "silent_min from settings",
            settings: Some(json!({"silent_min": 2})),
            last_s: 120,
            want: vec![silent_for(2)],
            ..row()
        },
        Row {
            name: "silent_min from settings: a second short",
            settings: Some(json!({"silent_min": 2})),
            last_s: 119,
            ..row()
        },
        Row {
            name: "silent_min null turns it off",
            settings: Some(json!({"silent_min": null})),
            last_s: 86_400,
            ..row()
        },
        Row {
            name: "unreadable settings are the defaults",
            settings: Some(json!({"silent_min": "soon"})),
            last_s: 600,
            want: vec![silent_for(10)],
            ..row()
        },
    ]);
}

#[test]
fn late() {
    let eta = now() + Duration::minutes(20);
    check(vec![
        Row {
            name: "late a second after due_at, with the ETA",
            due_s: Some(1),
            eta: Some(eta),
            want: vec![(Rule::Late, json!({"due_at": ago(1), "eta": eta}))],
            ..row()
        },
        Row {
            name: "not late at exactly due_at",
            due_s: Some(0),
            ..row()
        },
        Row {
            name: "not late before due_at, whatever the ETA says",
            due_s: Some(-60),
            eta: Some(eta),
            ..row()
        },
        Row {
            name: "late without an ETA",
            due_s: Some(3600),
            want: vec![(Rule::Late, json!({"due_at": ago(3600), "eta": null}))],
            ..row()
        },
        Row {
            name: "never late without a due_at",
            due_s: None,
            last_s: 30,
            ..row()
        },
        Row {
            name: "once per shipment: the ETA already raised it",
            state: json!({"shipment": 7, "late": true}),
            due_s: Some(60),
            ..row()
        },
        Row {
            name: "the vehicle's previous shipment being late does not count",
            state: json!({"shipment": 6, "late": true}),
            due_s: Some(60),
            want: vec![(Rule::Late, json!({"due_at": ago(60), "eta": null}))],
            ..row()
        },
        Row {
            name: "settings turn nothing of it off",
            settings: Some(json!({"silent_min": null, "arrival_radius_m": null})),
            due_s: Some(60),
            want: vec![(Rule::Late, json!({"due_at": ago(60), "eta": null}))],
            ..row()
        },
        Row {
            name: "silent and late together, silent first",
            last_s: 900,
            due_s: Some(60),
            want: vec![
                silent_for(15),
                (Rule::Late, json!({"due_at": ago(60), "eta": null})),
            ],
            ..row()
        },
    ]);
}

#[test]
fn each_candidate_is_judged_on_its_own() {
    let quiet = Row {
        last_s: 600,
        ..row()
    };
    let mut other = candidate(&quiet);
    other.vehicle_id = 4;
    other.shipment_id = 8;
    let mut next = 0;
    let Due { changes, states } = judge(
        vec![candidate(&quiet), candidate(&row()), other],
        now(),
        &mut next,
    );
    let raised: Vec<(i64, i64)> = changes
        .iter()
        .map(|(s, c)| match c {
            Change::Raise { id, .. } => (s.vehicle_id, *id),
            c => panic!("{c:?}"),
        })
        .collect();
    assert_eq!(raised, [(3, 1), (4, 2)]);
    let written: Vec<i64> = states.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        written,
        [3, 3, 4],
        "the quiet one's silent, the other's new trip too"
    );
}
