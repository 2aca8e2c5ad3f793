//! A vehicle's history exported (GPX, GeoJSON, KML, CSV) and read back to the same fixes, and
//! imported from GPX or GeoJSON as history that is never published.
use chrono::{DateTime, Duration, Offset, SecondsFormat, Utc};
use quick_xml::{events::Event, Reader};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::{auth::Role, history::export::gpx::TrackPoint};

use crate::support::{find_program, TestApp};

/// One fix as posted and as read back from a file.
#[derive(Debug, Clone, Default, PartialEq)]
struct Fix {
    at: Option<DateTime<Utc>>,
    lat: f64,
    lon: f64,
    speed: Option<f64>,
    heading: Option<f64>,
    altitude: Option<f64>,
    accuracy: Option<f64>,
    battery: Option<f64>,
}

/// The real Munich trace (1 Hz car) as fixes, the first at `start`, with accuracy and battery
/// added; the second half after a 20 minute gap (longer than the default `trips.max_gap_s`).
fn munich(start: DateTime<Utc>) -> Vec<Fix> {
    let start = DateTime::from_timestamp(start.timestamp(), 0).unwrap();
    let vehicles = waymark_sim::tracks::fleet().unwrap();
    let car = vehicles.iter().find(|v| v.name == "Car Munich").unwrap();
    let fixes = &car.trips[0].fixes;
    let first = fixes[0].at;
    let half = fixes.len() / 2;
    fixes
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let gap = if i >= half {
                Duration::minutes(20)
            } else {
                Duration::zero()
            };
            Fix {
                // Milliseconds, as devices send them.
                at: Some(start + (f.at - first) + gap + Duration::milliseconds(125)),
                lat: f.point.lat,
                lon: f.point.lon,
                speed: f.speed.map(|v| (v * 100.0).round() / 100.0),
                heading: f.heading.map(|v| (v * 10.0).round() / 10.0),
                altitude: f.altitude.or(Some(519.5)),
                accuracy: Some(4.0 + (i % 5) as f64),
                battery: Some(90.0 - (i / 100) as f64),
            }
        })
        .collect()
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn native(f: &Fix) -> Value {
    json!({
        "lat": f.lat, "lon": f.lon, "recorded_at": time(f.at.unwrap()), "speed": f.speed,
        "heading": f.heading, "altitude": f.altitude, "accuracy": f.accuracy, "battery": f.battery,
    })
}

/// Whether `got` is `want` within what the formats keep: times to the millisecond, places to
/// 1e-7°, values as 4-byte floats.
fn assert_same(got: &[Fix], want: &[Fix], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: as many fixes");
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-4 * b.abs().max(1.0),
        (a, b) => a == b,
    };
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let dt = (g.at.unwrap() - w.at.unwrap())
            .num_microseconds()
            .unwrap()
            .abs();
        assert!(dt < 1000, "{what} #{i}: time {:?} vs {:?}", g.at, w.at);
        assert!(
            (g.lat - w.lat).abs() <= 1e-7,
            "{what} #{i}: lat {g:?} vs {w:?}"
        );
        assert!(
            (g.lon - w.lon).abs() <= 1e-7,
            "{what} #{i}: lon {g:?} vs {w:?}"
        );
        for (name, a, b) in [
            ("speed", g.speed, w.speed),
            ("heading", g.heading, w.heading),
            ("altitude", g.altitude, w.altitude),
            ("accuracy", g.accuracy, w.accuracy),
            ("battery", g.battery, w.battery),
        ] {
            // GPX's course is below 360: north is written 0.
            let b = if name == "heading" && what == "gpx" {
                b.map(|h| if h >= 360.0 { 0.0 } else { h })
            } else {
                b
            };
            assert!(close(a, b), "{what} #{i}: {name} {a:?} vs {b:?}");
        }
    }
}

fn number(s: &str) -> Option<f64> {
    (!s.is_empty()).then(|| s.parse().unwrap())
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// The track points of a GPX document, and how many segments hold them.
fn read_gpx(text: &str) -> (Vec<Fix>, usize) {
    let mut reader = Reader::from_str(text);
    let (mut fixes, mut segments) = (Vec::new(), 0);
    let mut field = Vec::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_vec();
                if name == b"trkseg" {
                    segments += 1;
                }
                if name == b"trkpt" {
                    let mut fix = Fix::default();
                    for a in e.attributes() {
                        let a = a.unwrap();
                        let v: f64 = a.unescape_value().unwrap().parse().unwrap();
                        match a.key.as_ref() {
                            b"lat" => fix.lat = v,
                            b"lon" => fix.lon = v,
                            _ => {}
                        }
                    }
                    fixes.push(fix);
                }
                field = name;
            }
            Event::Text(t) => {
                let text = t.unescape().unwrap();
                let Some(fix) = fixes.last_mut() else {
                    continue;
                };
                match &field[..] {
                    b"time" => fix.at = Some(parse_time(&text)),
                    b"ele" => fix.altitude = number(&text),
                    b"speed" => fix.speed = number(&text),
                    b"course" => fix.heading = number(&text),
                    b"accuracy" => fix.accuracy = number(&text),
                    b"battery" => fix.battery = number(&text),
                    _ => {}
                }
            }
            Event::End(_) => field.clear(),
            Event::Eof => break,
            _ => {}
        }
    }
    (fixes, segments)
}

fn read_geojson(text: &str) -> Vec<Fix> {
    let doc: Value = serde_json::from_str(text).unwrap();
    assert_eq!(doc["type"], "FeatureCollection");
    doc["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["geometry"]["type"], "Point");
            let c = &f["geometry"]["coordinates"];
            let p = &f["properties"];
            Fix {
                at: Some(parse_time(p["time"].as_str().unwrap())),
                lon: c[0].as_f64().unwrap(),
                lat: c[1].as_f64().unwrap(),
                speed: p["speed"].as_f64(),
                heading: p["heading"].as_f64(),
                altitude: p["altitude"].as_f64(),
                accuracy: p["accuracy"].as_f64(),
                battery: p["battery"].as_f64(),
            }
        })
        .collect()
}

/// A KML `gx:MultiTrack`'s tracks' times, places and value arrays, put together again.
fn read_kml(text: &str) -> Vec<Fix> {
    let mut reader = Reader::from_str(text);
    let (mut whens, mut coords) = (Vec::new(), Vec::new());
    let mut arrays: Vec<(String, Vec<Option<f64>>)> = Vec::new();
    let mut field = Vec::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) => {
                field = e.name().as_ref().to_vec();
                if field == b"gx:SimpleArrayData" {
                    let name = e.try_get_attribute("name").unwrap().unwrap();
                    arrays.push((name.unescape_value().unwrap().into_owned(), Vec::new()));
                }
            }
            Event::Empty(e) if e.name().as_ref() == b"gx:value" => {
                arrays.last_mut().unwrap().1.push(None);
            }
            Event::Text(t) => {
                let text = t.unescape().unwrap();
                match &field[..] {
                    b"when" => whens.push(parse_time(&text)),
                    b"gx:coord" => coords.push(
                        text.split(' ')
                            .map(|v| v.parse::<f64>().unwrap())
                            .collect::<Vec<_>>(),
                    ),
                    b"gx:value" => arrays.last_mut().unwrap().1.push(number(&text)),
                    _ => {}
                }
            }
            Event::End(_) => field.clear(),
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(whens.len(), coords.len(), "a time for every place");
    // A long export is several tracks, each with its own lists.
    let array = |name: &str| {
        let values: Vec<Option<f64>> = arrays
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        assert_eq!(values.len(), whens.len(), "a {name} for every place");
        values
    };
    let (speed, heading, accuracy, battery) = (
        array("speed"),
        array("heading"),
        array("accuracy"),
        array("battery"),
    );
    (0..whens.len())
        .map(|i| Fix {
            at: Some(whens[i]),
            lon: coords[i][0],
            lat: coords[i][1],
            altitude: Some(coords[i][2]),
            speed: speed[i],
            heading: heading[i],
            accuracy: accuracy[i],
            battery: battery[i],
        })
        .collect()
}

/// The CSV's fixes, and its local times.
fn read_csv(text: &str) -> (Vec<Fix>, Vec<String>) {
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "recorded_at,lat,lon,speed_mps,heading,altitude_m,accuracy_m,battery,local_time"
    );
    lines
        .map(|line| {
            let c: Vec<&str> = line.split(',').collect();
            assert_eq!(c.len(), 9, "{line}");
            let fix = Fix {
                at: Some(parse_time(c[0])),
                lat: c[1].parse().unwrap(),
                lon: c[2].parse().unwrap(),
                speed: number(c[3]),
                heading: number(c[4]),
                altitude: number(c[5]),
                accuracy: number(c[6]),
                battery: number(c[7]),
            };
            (fix, c[8].to_owned())
        })
        .unzip()
}

/// Validates a GPX document against the GPX 1.1 schema.
fn assert_valid_gpx(text: &str) {
    let xmllint = find_program("WAYMARK_XMLLINT", &["xmllint"]);
    let dir = std::env::temp_dir().join(format!(
        "waymark-gpx-{}",
        waymark::auth::token::generate(16)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("export.gpx");
    std::fs::write(&file, text).unwrap();
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemas/gpx.xsd");
    let out = std::process::Command::new(xmllint)
        .args(["--noout", "--nonet", "--schema", schema])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "the GPX export is valid GPX 1.1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn export(
    app: &TestApp,
    jwt: &str,
    vehicle: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    format: &str,
) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/api/v1/vehicles/{vehicle}/export")))
        .query(&[
            ("from", time(from)),
            ("to", time(to)),
            ("format", format.to_owned()),
        ])
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap()
}

async fn import(
    app: &TestApp,
    jwt: &str,
    vehicle: i64,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let res = app
        .http
        .post(app.url(&format!("/api/v1/vehicles/{vehicle}/import")))
        .header("content-type", content_type)
        .bearer_auth(jwt)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The vehicle's stored fixes the filter passed, oldest first.
async fn stored(app: &TestApp, vehicle: i64) -> Vec<Fix> {
    let rows: Vec<TrackPoint> = sqlx::query_as(
        "SELECT recorded_at, ST_Y(point::geometry) AS lat, ST_X(point::geometry) AS lon, speed,
                heading, altitude, accuracy, battery
         FROM positions WHERE vehicle_id = $1 AND filter_reason IS NULL ORDER BY recorded_at",
    )
    .bind(vehicle)
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|p| Fix {
            at: Some(p.recorded_at),
            lat: p.lat,
            lon: p.lon,
            speed: p.speed.map(f64::from),
            heading: p.heading.map(f64::from),
            altitude: p.altitude.map(f64::from),
            accuracy: p.accuracy.map(f64::from),
            battery: p.battery.map(f64::from),
        })
        .collect()
}

/// A GPX 1.1 document of `fixes`, as another application would write it.
fn gpx_of(fixes: &[Fix]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"test\" \
         xmlns=\"http://www.topografix.com/GPX/1/1\" \
         xmlns:gpxtpx=\"http://www.garmin.com/xmlschemas/TrackPointExtension/v2\">\
         <trk><name>Munich</name><trkseg>\n",
    );
    for f in fixes {
        out.push_str(&format!("<trkpt lat=\"{}\" lon=\"{}\">", f.lat, f.lon));
        if let Some(at) = f.at {
            out.push_str(&format!("<time>{}</time>", time(at)));
        }
        if let Some(v) = f.speed {
            out.push_str(&format!(
                "<extensions><gpxtpx:TrackPointExtension><gpxtpx:speed>{v}</gpxtpx:speed>\
                 </gpxtpx:TrackPointExtension></extensions>"
            ));
        }
        out.push_str("</trkpt>\n");
    }
    out.push_str("</trkseg></trk></gpx>\n");
    out
}

#[sqlx::test]
async fn every_format_reads_back_as_the_fixes_posted_without_the_marked_one(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, admin) = app.user("Acme", "admin@acme.test", Role::Admin).await;
    let (_, dispatcher) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (status, _) = app
        .patch(
            &admin,
            "/api/v1/settings",
            json!({"reports": {"time_zone": "Europe/Berlin"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (vehicle, token) = app.vehicle(&dispatcher, "Car Munich").await;

    // Posted live, in batches as a phone catching up, ending some minutes ago.
    let start = Utc::now() - Duration::hours(1);
    let fixes = munich(start);
    for batch in fixes.chunks(500) {
        let body: Vec<Value> = batch.iter().map(native).collect();
        let (status, reply) = app.ingest(&token, Value::from(body)).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    // A blank fix (0°, 0°) in the middle: stored marked, never exported.
    let glitch_at = fixes[100].at.unwrap() + Duration::milliseconds(500);
    let (status, reply) = app
        .ingest(
            &token,
            json!({"lat": 0.0, "lon": 0.0, "recorded_at": time(glitch_at), "accuracy": 5.0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["filtered"], 1, "{reply}");

    // What the filter passed: every posted fix but the blank one and the trace's tunnel jump,
    // read back exactly.
    let want = stored(&app, vehicle).await;
    let kept: Vec<Fix> = fixes
        .iter()
        .filter(|f| want.iter().any(|w| w.at == f.at))
        .cloned()
        .collect();
    let marked: Vec<String> = sqlx::query_scalar(
        "SELECT filter_reason FROM positions WHERE vehicle_id = $1 AND filter_reason IS NOT NULL
         ORDER BY recorded_at",
    )
    .bind(vehicle)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(want.len() + marked.len(), fixes.len() + 1, "{marked:?}");
    assert!(marked.contains(&"null_island".to_owned()), "{marked:?}");
    assert!(
        marked.len() <= 8,
        "only the glitches are marked: {marked:?}"
    );
    assert_same(&want, &kept, "stored");
    assert!(want.iter().all(|w| w.at != Some(glitch_at)));

    let (from, to) = (start - Duration::seconds(1), Utc::now());

    let res = export(&app, &dispatcher, vehicle, from, to, "gpx").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/gpx+xml");
    let disposition = res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        disposition,
        format!(
            "attachment; filename=\"Car_Munich-{}-{}.gpx\"",
            from.format("%Y%m%dT%H%M%SZ"),
            to.format("%Y%m%dT%H%M%SZ")
        )
    );
    let text = res.text().await.unwrap();
    assert_valid_gpx(&text);
    let (got, segments) = read_gpx(&text);
    assert_same(&got, &want, "gpx");
    assert_eq!(segments, 2, "a new segment after the 20 minute gap");

    let res = export(&app, &dispatcher, vehicle, from, to, "geojson").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/geo+json");
    assert_same(&read_geojson(&res.text().await.unwrap()), &want, "geojson");

    let res = export(&app, &dispatcher, vehicle, from, to, "kml").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.google-earth.kml+xml"
    );
    assert_same(&read_kml(&res.text().await.unwrap()), &want, "kml");

    let res = export(&app, &dispatcher, vehicle, from, to, "csv").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/csv");
    let (got, local) = read_csv(&res.text().await.unwrap());
    assert_same(&got, &want, "csv");
    for (fix, local) in got.iter().zip(&local) {
        let berlin = fix.at.unwrap().with_timezone(&chrono_tz::Europe::Berlin);
        assert_eq!(
            DateTime::parse_from_rfc3339(local)
                .unwrap()
                .offset()
                .to_string(),
            berlin.offset().fix().to_string(),
            "local_time is in the organisation's time zone"
        );
        assert_eq!(parse_time(local), fix.at.unwrap());
    }

    // The range is half open, and an empty one is a valid, empty file.
    let second = want[1].at.unwrap();
    let res = export(&app, &dispatcher, vehicle, from, second, "gpx").await;
    let (got, _) = read_gpx(&res.text().await.unwrap());
    assert_eq!(got.len(), 1);
    let res = export(
        &app,
        &dispatcher,
        vehicle,
        to,
        to + Duration::days(1),
        "gpx",
    )
    .await;
    let text = res.text().await.unwrap();
    assert_valid_gpx(&text);
    assert_eq!(read_gpx(&text).0.len(), 0);
}

#[sqlx::test]
async fn exports_are_for_the_vehicles_dispatchers_and_sensible_ranges(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, dispatcher) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (_, driver) = app.user("Acme", "driver@acme.test", Role::Driver).await;
    let (_, other) = app
        .user("Other", "dispatch@other.test", Role::Dispatcher)
        .await;
    let (vehicle, _) = app.vehicle(&dispatcher, "Van 1").await;
    let to = Utc::now();
    let from = to - Duration::days(1);

    let res = export(&app, &other, vehicle, from, to, "gpx").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = export(&app, &driver, vehicle, from, to, "gpx").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let (status, _) = import(&app, &other, vehicle, "application/gpx+xml", gpx_of(&[])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = import(&app, &driver, vehicle, "application/gpx+xml", gpx_of(&[])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    for (from, to, format, field) in [
        (to, from, "gpx", "to"),
        (from, from, "gpx", "to"),
        (to - Duration::days(367), to, "csv", "to"),
        (from, to, "shp", "format"),
        (parse_time("0000-06-01T00:00:00Z"), to, "gpx", "from"),
    ] {
        let res = export(&app, &dispatcher, vehicle, from, to, format).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let res = export(
        &app,
        &dispatcher,
        vehicle,
        to - Duration::days(366),
        to,
        "csv",
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[sqlx::test]
async fn an_imported_track_is_history_stored_once_and_never_published(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, dispatcher) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (vehicle, _) = app.vehicle(&dispatcher, "Car Munich").await;
    let mut watcher = app.ws(&format!("token={dispatcher}")).await;
    watcher.subscribe(&format!("vehicle:{vehicle}"), None).await;
    watcher.subscribe("fleet", None).await;

    // Driven two days ago, recorded by another application.
    let start = Utc::now() - Duration::days(2);
    let fixes = munich(start);
    let gpx = gpx_of(&fixes);
    let (status, reply) = import(
        &app,
        &dispatcher,
        vehicle,
        "application/gpx+xml",
        gpx.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let n = fixes.len() as i64;
    assert_eq!(reply["imported"], n, "{reply}");
    assert_eq!(reply["duplicates"], 0);
    assert_eq!(
        parse_time(reply["from"].as_str().unwrap()),
        fixes[0].at.unwrap()
    );
    assert_eq!(
        parse_time(reply["to"].as_str().unwrap()),
        fixes.last().unwrap().at.unwrap()
    );
    // The trace's tunnel jump is marked, as live ingest marks it.
    let marked: Vec<String> = sqlx::query_scalar(
        "SELECT filter_reason FROM positions WHERE vehicle_id = $1 AND filter_reason IS NOT NULL",
    )
    .bind(vehicle)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(reply["filtered"], marked.len(), "{reply}");
    assert!(marked.iter().all(|r| r == "jump"), "{marked:?}");

    let (events, late, in_shipment): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE seq <> 0), count(*) FILTER (WHERE late),
                count(shipment_id)
         FROM positions WHERE vehicle_id = $1",
    )
    .bind(vehicle)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (events, late, in_shipment),
        (0, n, 0),
        "history, not events"
    );
    let current: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT last_recorded_at FROM vehicles WHERE id = $1")
            .bind(vehicle)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(current, None, "an import never moves the vehicle");
    watcher.expect_quiet().await;

    // Stored as sent.
    let kept: Vec<Fix> = stored(&app, vehicle).await;
    assert_eq!(kept.len() + marked.len(), fixes.len());
    let posted: Vec<Fix> = fixes
        .iter()
        .filter(|f| kept.iter().any(|k| k.at == f.at))
        .map(|f| Fix {
            heading: None,
            altitude: None,
            accuracy: None,
            battery: None,
            ..f.clone()
        })
        .collect();
    assert_same(&kept, &posted, "imported");

    // Trips and stops are detected from it.
    app.segment().await;
    let trips: i64 =
        sqlx::query_scalar("SELECT count(*) FROM segments WHERE vehicle_id = $1 AND kind = 'trip'")
            .bind(vehicle)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(trips >= 1, "the imported drive is a trip");

    // Once only.
    let (status, reply) = import(&app, &dispatcher, vehicle, "application/xml", gpx).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["imported"], 0, "{reply}");
    assert_eq!(reply["duplicates"], n, "{reply}");
    watcher.expect_quiet().await;

    // An export imports into another vehicle as the same history, retired or not.
    let (copy, _) = app.vehicle(&dispatcher, "Copy").await;
    let (status, _) = app
        .patch(
            &dispatcher,
            &format!("/api/v1/vehicles/{copy}"),
            json!({"status": "retired"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut copy_watcher = app.ws(&format!("token={dispatcher}")).await;
    copy_watcher
        .subscribe(&format!("vehicle:{copy}"), None)
        .await;
    let (from, to) = (start - Duration::hours(1), Utc::now());
    let res = export(&app, &dispatcher, vehicle, from, to, "geojson").await;
    let geojson = res.text().await.unwrap();
    let (status, reply) = import(
        &app,
        &dispatcher,
        copy,
        "application/geo+json",
        geojson.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["imported"], kept.len(), "{reply}");
    assert_eq!(reply["filtered"], 0, "{reply}");
    let res = export(&app, &dispatcher, copy, from, to, "geojson").await;
    assert_eq!(res.text().await.unwrap(), geojson);
    copy_watcher.expect_quiet().await;
}

#[sqlx::test]
async fn a_file_with_bad_points_names_each_and_stores_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, dispatcher) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (vehicle, _) = app.vehicle(&dispatcher, "Van 1").await;
    let start = Utc::now() - Duration::days(1);
    let mut fixes: Vec<Fix> = munich(start).into_iter().take(8).collect();
    fixes[2].lat = 95.0;
    fixes[5].at = None;
    let (status, body) = import(
        &app,
        &dispatcher,
        vehicle,
        "application/gpx+xml",
        gpx_of(&fixes),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "validation");
    assert_eq!(body["error"]["index"], 2);
    let points = body["error"]["points"].as_array().unwrap();
    let indices: Vec<i64> = points
        .iter()
        .map(|p| p["index"].as_i64().unwrap())
        .collect();
    assert_eq!(indices, [2, 5], "{body}");
    assert!(points[0]["message"].as_str().unwrap().contains("lat"));
    assert!(points[1]["message"].as_str().unwrap().contains("time"));
    assert_eq!(app.count_positions().await, 0, "nothing stored");

    // The same in GeoJSON.
    let features: Vec<Value> = fixes
        .iter()
        .map(|f| {
            json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [f.lon, f.lat]},
                   "properties": {"time": f.at.map(time)}})
        })
        .collect();
    let file = json!({"type": "FeatureCollection", "features": features}).to_string();
    let (status, body) = import(&app, &dispatcher, vehicle, "application/geo+json", file).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let indices: Vec<i64> = body["error"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["index"].as_i64().unwrap())
        .collect();
    assert_eq!(indices, [2, 5], "{body}");
    assert_eq!(app.count_positions().await, 0, "nothing stored");

    let (status, body) = import(
        &app,
        &dispatcher,
        vehicle,
        "application/gpx+xml",
        "<gpx><trk>",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "malformed");
    let (status, _) = import(&app, &dispatcher, vehicle, "text/plain", "hello").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Over 32 MiB.
    let mut big = String::from("<?xml version=\"1.0\"?><gpx version=\"1.1\"><!--");
    big.push_str(&"x".repeat(33 * 1024 * 1024));
    big.push_str("--></gpx>");
    let (status, body) = import(&app, &dispatcher, vehicle, "application/gpx+xml", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
    assert_eq!(app.count_positions().await, 0, "nothing stored");
}
