//! `GET /api/v1/vehicles/{id}/history` on a real day posted through the ingest API: the Munich
//! car's recorded drive, 40 minutes parked with GPS wander, the drive back (still going on), and
//! GNSS glitches the filter marks. The history is its trips and stops with their tracks (glitches
//! left out), simplified to the tolerance asked for and clipped to the range, with the alerts the
//! day raised; a vehicle still parked is on a stop with no departure; other organisations,
//! drivers and bad ranges are refused.
use chrono::{DateTime, Duration, DurationRound, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::days::{munich, Delivery, Fix};
use crate::support::{fleet, Fleet, TestApp};

/// The delivery day posted: where it parked, the glitches, and when it began and ended.
pub(crate) struct Day {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub parked: (f64, f64),
    pub glitches: Vec<Fix>,
}

/// A fix 5 km north of `fix`, at its time: a GNSS glitch for one second.
fn glitch(fix: &Fix) -> Fix {
    Fix {
        lat: fix.lat + 5_000.0 / 111_195.0,
        speed: None,
        ..*fix
    }
}

/// Posts a delivery day starting at `start` as `token`: the Munich drive, 40 minutes parked at
/// its end (a fix every 30 s wandering up to 30 m), the drive back; one fix of each drive a 5 km
/// glitch. Then brings trips and stops up to date.
pub(crate) async fn post_day(app: &TestApp, token: &str, start: DateTime<Utc>) -> Day {
    let mut day = Delivery::at(start);
    let glitched = [300, day.back_from + 300];
    for i in glitched {
        day.fixes[i] = glitch(&day.fixes[i]);
    }
    for chunk in day.json().chunks(500) {
        let (status, body) = app.ingest(token, json!(chunk)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    app.segment().await;
    Day {
        start,
        end: day.fixes.last().unwrap().at,
        parked: day.place,
        glitches: glitched.iter().map(|&i| day.fixes[i]).collect(),
    }
}

/// A time as a query parameter.
pub(crate) fn param(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn history_path(vehicle: i64, from: DateTime<Utc>, to: DateTime<Utc>, tolerance: f64) -> String {
    format!(
        "/api/v1/vehicles/{vehicle}/history?from={}&to={}&tolerance_m={tolerance}",
        param(from),
        param(to)
    )
}

/// A day that began three hours ago, on a whole minute.
pub(crate) fn three_hours_ago() -> DateTime<Utc> {
    (Utc::now() - Duration::hours(3))
        .duration_trunc(Duration::minutes(1))
        .unwrap()
}

fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
    let dlat = (b.0 - a.0) * 111_195.0;
    let dlon = (b.1 - a.1) * 111_195.0 * a.0.to_radians().cos();
    (dlat * dlat + dlon * dlon).sqrt()
}

/// A trip's path as (t, lat, lon) vertices.
fn vertices(segment: &Value) -> Vec<(i64, f64, f64)> {
    let path = &segment["path"];
    let n = path["t"].as_array().unwrap().len();
    for key in ["lat", "lon", "speed"] {
        assert_eq!(path[key].as_array().unwrap().len(), n, "parallel arrays");
    }
    (0..n)
        .map(|i| {
            (
                path["t"][i].as_i64().unwrap(),
                path["lat"][i].as_f64().unwrap(),
                path["lon"][i].as_f64().unwrap(),
            )
        })
        .collect()
}

fn kinds(history: &Value) -> Vec<(String, bool)> {
    history["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_owned(),
                s["in_progress"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

#[sqlx::test]
async fn a_day_is_its_trips_and_stops_with_tracks_at_the_tolerance_asked_and_its_alerts(
    db: PgPool,
) {
    let Fleet {
        app,
        dispatcher,
        vehicle,
        token,
    } = fleet(TestApp::spawn(db).await).await;
    let parked = *munich().last().unwrap();
    let (status, fence) = app
        .post(
            &dispatcher,
            "/api/v1/geofences",
            json!({"name": "Customer", "debounce_s": 0,
                   "circle": {"lat": parked.lat, "lon": parked.lon, "radius_m": 150.0}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{fence}");
    let day = post_day(&app, &token, three_hours_ago()).await;
    for g in &day.glitches {
        let reason: Option<String> = sqlx::query_scalar(
            "SELECT filter_reason FROM positions WHERE vehicle_id = $1 AND recorded_at = $2",
        )
        .bind(vehicle)
        .bind(g.at)
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(
            reason.as_deref(),
            Some("jump"),
            "the filter marked the glitch"
        );
    }

    let from = day.start - Duration::minutes(5);
    let to = day.end + Duration::minutes(5);
    let (status, fine) = app
        .get(&dispatcher, &history_path(vehicle, from, to, 0.0))
        .await;
    assert_eq!(status, StatusCode::OK, "{fine}");
    assert_eq!(fine["vehicle"], json!({"id": vehicle, "name": "Van 1"}));
    assert_eq!(
        kinds(&fine),
        [
            ("trip".to_owned(), false),
            ("stop".to_owned(), false),
            ("trip".to_owned(), true)
        ],
        "{:#}",
        fine["segments"]
    );
    let segments = fine["segments"].as_array().unwrap();

    // The stop is where it parked, for its 40 minutes.
    let stop = &segments[1];
    let place = (
        stop["place"]["lat"].as_f64().unwrap(),
        stop["place"]["lon"].as_f64().unwrap(),
    );
    assert!(metres(place, day.parked) < 75.0, "{stop}");
    let duration = stop["duration_s"].as_i64().unwrap();
    assert!((2_300..=2_460).contains(&duration), "{stop}");
    let departure: DateTime<Utc> = stop["departure"].as_str().unwrap().parse().unwrap();
    let arrival: DateTime<Utc> = stop["arrival"].as_str().unwrap().parse().unwrap();
    assert_eq!((departure - arrival).num_seconds(), duration);

    // Times go forward through the day: within each track, and from one segment to the next.
    let mut last = i64::MIN;
    for segment in segments {
        match segment["kind"].as_str().unwrap() {
            "trip" => {
                let v = vertices(segment);
                assert!(v.len() > 50, "{} vertices", v.len());
                // A trip begins at the last fix of the stop before it.
                assert!(v[0].0 >= last, "times ascend");
                assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "times ascend");
                last = v.last().unwrap().0;
            }
            _ => {
                assert!(ms(arrival) >= last);
                last = ms(departure);
            }
        }
    }
    // The trip going on now reaches the last fix posted.
    assert_eq!(last, ms(day.end));
    assert_eq!(
        segments[2]["ended_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        day.end
    );

    // No glitch is on any track: the nearest vertex to each is kilometres away.
    for g in &day.glitches {
        for trip in [&segments[0], &segments[2]] {
            let nearest = vertices(trip)
                .iter()
                .map(|&(_, lat, lon)| metres((lat, lon), (g.lat, g.lon)))
                .fold(f64::INFINITY, f64::min);
            assert!(nearest > 1_000.0, "a vertex {nearest} m from a glitch");
        }
    }

    // A coarser tolerance keeps fewer vertices, and the same ends.
    let (status, coarse) = app
        .get(&dispatcher, &history_path(vehicle, from, to, 50.0))
        .await;
    assert_eq!(status, StatusCode::OK, "{coarse}");
    assert_eq!(coarse["tolerance_m"], 50.0);
    for i in [0, 2] {
        let (a, b) = (
            vertices(&fine["segments"][i]),
            vertices(&coarse["segments"][i]),
        );
        assert!(
            b.len() * 3 < a.len(),
            "trip {i}: {} vertices at 50 m, {} at 0",
            b.len(),
            a.len()
        );
        assert!(b.len() >= 2);
        assert_eq!(a.first(), b.first(), "trip {i} starts where it did");
        assert_eq!(a.last(), b.last(), "trip {i} ends where it did");
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0));
    }

    // The customer's geofence saw it arrive and leave, pinned where it was; the drives' overspeed
    // alerts are there too, each in the range, in time order.
    let alerts = fine["alerts"].as_array().unwrap();
    let fence: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"].as_str().unwrap().starts_with("geofence"))
        .collect();
    let rules: Vec<&str> = fence.iter().map(|a| a["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["geofence_enter", "geofence_exit"], "{alerts:#?}");
    for alert in fence {
        let pinned = (
            alert["place"]["lat"].as_f64().unwrap(),
            alert["place"]["lon"].as_f64().unwrap(),
        );
        assert!(metres(pinned, day.parked) < 250.0, "{alert}");
    }
    let times: Vec<DateTime<Utc>> = alerts
        .iter()
        .map(|a| a["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(times.iter().all(|&at| at >= day.start && at <= day.end));
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // A range from the middle of the drive out: its track begins at the range's start, on the
    // drive, and the alerts before it are left out.
    let mid = day.start + Duration::minutes(10);
    let trip_end: DateTime<Utc> = segments[0]["ended_at"].as_str().unwrap().parse().unwrap();
    let end = trip_end - Duration::seconds(1);
    let (status, part) = app
        .get(&dispatcher, &history_path(vehicle, mid, end, 2.0))
        .await;
    assert_eq!(status, StatusCode::OK, "{part}");
    assert_eq!(kinds(&part), [("trip".to_owned(), false)]);
    let v = vertices(&part["segments"][0]);
    assert_eq!(v.first().unwrap().0, ms(mid));
    assert_eq!(v.last().unwrap().0, ms(end));
    let inside = part["alerts"].as_array().unwrap();
    assert!(inside.len() < alerts.len(), "the exit is after the range");
    for alert in inside {
        let at: DateTime<Utc> = alert["at"].as_str().unwrap().parse().unwrap();
        assert!(at >= mid && at <= end, "{alert}");
    }
}

#[sqlx::test]
async fn a_closed_trip_without_a_stored_track_is_read_from_its_fixes(db: PgPool) {
    let Fleet {
        app,
        dispatcher,
        vehicle,
        token,
    } = fleet(TestApp::spawn(db).await).await;
    let day = post_day(&app, &token, three_hours_ago()).await;
    let path = history_path(vehicle, day.start - Duration::minutes(1), day.end, 5.0);
    let (_, stored) = app.get(&dispatcher, &path).await;
    sqlx::query("UPDATE segments SET path = NULL WHERE vehicle_id = $1")
        .bind(vehicle)
        .execute(&app.db)
        .await
        .unwrap();
    let (status, read) = app.get(&dispatcher, &path).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    let (a, b) = (
        vertices(&stored["segments"][0]),
        vertices(&read["segments"][0]),
    );
    assert_eq!(a.first(), b.first());
    assert_eq!(a.last(), b.last());
    // Simplified from every fix rather than from the 2 m track: about as many vertices.
    let ratio = b.len() as f64 / a.len() as f64;
    assert!((0.8..=1.25).contains(&ratio), "{} vs {}", b.len(), a.len());
}

#[sqlx::test]
async fn a_vehicle_still_parked_is_on_a_stop_with_no_departure_yet(db: PgPool) {
    let Fleet {
        app,
        dispatcher,
        vehicle,
        token,
    } = fleet(TestApp::spawn(db).await).await;
    let day = post_day(&app, &token, three_hours_ago()).await;
    // Where the drive back ended...
    let (status, last) = app
        .get(
            &dispatcher,
            &history_path(vehicle, day.start, day.end + Duration::seconds(1), 0.0),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{last}");
    let trip = &last["segments"][2];
    let n = trip["path"]["t"].as_array().unwrap().len() - 1;
    let home = (
        trip["path"]["lat"][n].as_f64().unwrap(),
        trip["path"]["lon"][n].as_f64().unwrap(),
    );
    // ...it stays for ten minutes, a fix every 30 s.
    let parked: Vec<Value> = (1..=20)
        .map(|i| {
            json!({"lat": home.0, "lon": home.1, "speed": 0.0,
                   "recorded_at": param(day.end + Duration::seconds(30 * i))})
        })
        .collect();
    let (status, body) = app.ingest(&token, json!(parked)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.segment().await;

    let end = day.end + Duration::minutes(15);
    let (status, history) = app
        .get(&dispatcher, &history_path(vehicle, day.start, end, 2.0))
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(
        kinds(&history),
        [
            ("trip".to_owned(), false),
            ("stop".to_owned(), false),
            ("trip".to_owned(), false),
            ("stop".to_owned(), true)
        ]
    );
    let stop = &history["segments"][3];
    assert_eq!(stop["departure"], Value::Null);
    assert!(stop["duration_s"].as_i64().unwrap() >= 300, "{stop}");
    let place = (
        stop["place"]["lat"].as_f64().unwrap(),
        stop["place"]["lon"].as_f64().unwrap(),
    );
    assert!(metres(place, home) < 75.0, "{stop}");
}

#[sqlx::test]
async fn history_is_for_the_dispatchers_of_the_vehicles_organisation(db: PgPool) {
    let Fleet {
        app,
        dispatcher,
        vehicle,
        ..
    } = fleet(TestApp::spawn(db).await).await;
    let now = Utc::now();
    let path = history_path(vehicle, now - Duration::hours(1), now, 2.0);
    let (status, body) = app.get(&dispatcher, &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["segments"], json!([]));

    let (_, admin) = app.user("Acme", "admin@acme.test", Role::Admin).await;
    assert_eq!(app.get(&admin, &path).await.0, StatusCode::OK);
    let (_, driver) = app.user("Acme", "driver@acme.test", Role::Driver).await;
    let (status, body) = app.get(&driver, &path).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, other) = app
        .user("Globex", "dispatch@globex.test", Role::Dispatcher)
        .await;
    let (status, body) = app.get(&other, &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(app.get("", &path).await.0, StatusCode::UNAUTHORIZED);
}

#[sqlx::test]
async fn a_bad_range_or_tolerance_is_refused_naming_it(db: PgPool) {
    let Fleet {
        app,
        dispatcher,
        vehicle,
        ..
    } = fleet(TestApp::spawn(db).await).await;
    let now = Utc::now().duration_trunc(Duration::seconds(1)).unwrap();
    let day = Duration::days(1);
    let base = format!("/api/v1/vehicles/{vehicle}/history");
    for (query, field) in [
        (
            format!("from={}&to={}", param(now), param(now - day)),
            Some("to"),
        ),
        (format!("from={}&to={}", param(now), param(now)), Some("to")),
        (
            format!("from={}&to={}", param(now - day * 32), param(now)),
            Some("to"),
        ),
        (
            format!("from={}&to={}&tolerance_m=-1", param(now - day), param(now)),
            Some("tolerance_m"),
        ),
        (
            format!(
                "from={}&to={}&tolerance_m=10001",
                param(now - day),
                param(now)
            ),
            Some("tolerance_m"),
        ),
        (
            format!(
                "from={}&to={}&tolerance_m=NaN",
                param(now - day),
                param(now)
            ),
            Some("tolerance_m"),
        ),
        (format!("to={}", param(now)), None),
        (format!("from=yesterday&to={}", param(now)), None),
        (
            format!("from={}&to={}&colour=red", param(now - day), param(now)),
            None,
        ),
    ] {
        let (status, body) = app.get(&dispatcher, &format!("{base}?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        if let Some(field) = field {
            assert_eq!(body["error"]["field"], field, "{query}: {body}");
        }
    }
    // Exactly 31 days, and both ends of the tolerance, are fine.
    for query in [
        format!("from={}&to={}", param(now - day * 31), param(now)),
        format!("from={}&to={}&tolerance_m=0", param(now - day), param(now)),
        format!(
            "from={}&to={}&tolerance_m=10000",
            param(now - day),
            param(now)
        ),
    ] {
        let (status, body) = app.get(&dispatcher, &format!("{base}?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
    }
}
