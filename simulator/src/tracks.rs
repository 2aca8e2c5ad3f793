//! The real GPS traces embedded in the binary, parsed into vehicles, trips and fixes with the
//! speed and heading that the sources do not record.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::geo::{self, LatLon};

/// One embedded trace file and how its features become simulated vehicles.
struct Source {
    file: &'static str,
    text: &'static str,
    naming: Naming,
}

enum Naming {
    /// One vehicle per `properties.vehicle_id`; each feature is one trip of that bus.
    BusPerVehicleId { city: &'static str },
    /// Every feature is a trip of this one vehicle.
    Single(&'static str),
}

const SOURCES: [Source; 3] = [
    Source {
        file: "bods_liverpool_route14_buses.geojson",
        text: include_str!("../tracks/bods_liverpool_route14_buses.geojson"),
        naming: Naming::BusPerVehicleId { city: "Liverpool" },
    },
    Source {
        file: "barefoot_munich_car_1hz.geojson",
        text: include_str!("../tracks/barefoot_munich_car_1hz.geojson"),
        naming: Naming::Single("Car Munich"),
    },
    Source {
        file: "gpxpy_visnjan_car.geojson",
        text: include_str!("../tracks/gpxpy_visnjan_car.geojson"),
        naming: Naming::Single("Car Višnjan"),
    },
];

/// Where the traces come from and whom they credit; printed by `waymark-sim credits`.
pub const CREDITS: &str = include_str!("../tracks/README.md");

/// Notices that must travel with the embedded data: the BSD licence of the Liverpool extract
/// (binary redistributions must reproduce it) and the NOTICE files of the Apache-licensed
/// sources.
pub const NOTICES: [(&str, &str); 3] = [
    (
        "movingpandas-examples (the Liverpool extract), BSD 3-Clause License",
        include_str!("../tracks/licenses/movingpandas-examples-LICENSE.txt"),
    ),
    (
        "barefoot, NOTICE",
        include_str!("../tracks/licenses/barefoot-NOTICE.txt"),
    ),
    (
        "gpxpy, NOTICE",
        include_str!("../tracks/licenses/gpxpy-NOTICE.txt"),
    ),
];

/// Below this step a vehicle is standing still, and a bearing between two fixes is GNSS noise.
const STANDSTILL_M: f64 = 1.0;

/// Speed at which a vehicle is assumed to drive back, unobserved, from the end of one trip to
/// the start of the next. It keeps the jump between trips plausible to the server's filter.
const DEADHEAD_SPEED_MPS: f64 = 15.0;
/// The shortest pause between trips (a bus's turnaround, a car parking).
const MIN_LAYOVER: Duration = Duration::from_secs(30);
/// The recorded gaps between bus trips reach half an hour; a demo should not idle that long.
const MAX_LAYOVER: Duration = Duration::from_secs(5 * 60);

/// A vehicle to simulate: a name and the trips it drives one after another.
#[derive(Debug, Clone)]
pub struct SimVehicle {
    pub name: String,
    pub trips: Vec<Trip>,
}

/// One recorded journey: at least two fixes with strictly increasing times.
#[derive(Debug, Clone)]
pub struct Trip {
    pub origin_name: Option<String>,
    pub destination_name: Option<String>,
    pub fixes: Vec<Fix>,
}

/// One recorded position, with motion derived from the fix before it.
#[derive(Debug, Clone, Copy)]
pub struct Fix {
    pub point: LatLon,
    pub at: DateTime<Utc>,
    pub altitude: Option<f64>,
    /// m/s over the step from the previous fix; `None` on a trip's first fix.
    pub speed: Option<f64>,
    /// Degrees from north; carried over while standing still, `None` until the vehicle moves.
    pub heading: Option<f64>,
}

impl Trip {
    pub fn first(&self) -> &Fix {
        &self.fixes[0]
    }

    pub fn last(&self) -> &Fix {
        &self.fixes[self.fixes.len() - 1]
    }

    /// Recorded time from a trip's start to `fix`.
    pub fn offset(&self, fix: &Fix) -> Duration {
        (fix.at - self.first().at).to_std().unwrap_or_default()
    }

    pub fn duration(&self) -> Duration {
        self.offset(self.last())
    }

    /// The trip's path with at most `max_points` vertices, for a shipment's planned route.
    pub fn route(&self, max_points: usize) -> Vec<LatLon> {
        let line: Vec<LatLon> = self.fixes.iter().map(|f| f.point).collect();
        geo::thin(&line, max_points)
    }
}

/// Recorded time to wait between the end of `from` and the start of `to`: the recorded gap when
/// the two trips follow each other in the data (`recorded_gap`), within sensible bounds, and
/// never less than the time needed to get from one to the other.
pub fn layover(from: &Trip, to: &Trip, recorded_gap: Option<Duration>) -> Duration {
    let distance = geo::haversine_m(from.last().point, to.first().point);
    let deadhead = Duration::from_secs_f64(distance / DEADHEAD_SPEED_MPS);
    recorded_gap
        .unwrap_or_default()
        .min(MAX_LAYOVER)
        .max(deadhead)
        .max(MIN_LAYOVER)
}

/// Every simulated vehicle, parsed from the embedded traces.
pub fn fleet() -> anyhow::Result<Vec<SimVehicle>> {
    let mut vehicles = Vec::new();
    for source in &SOURCES {
        let parsed =
            parse_source(source).with_context(|| format!("embedded trace {}", source.file))?;
        vehicles.extend(parsed);
    }
    Ok(vehicles)
}

#[derive(Deserialize)]
struct FeatureCollection {
    features: Vec<Feature>,
}

#[derive(Deserialize)]
struct Feature {
    geometry: Geometry,
    properties: Properties,
}

#[derive(Deserialize)]
struct Geometry {
    #[serde(rename = "type")]
    kind: String,
    coordinates: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct Properties {
    times: Vec<String>,
    #[serde(default)]
    vehicle_id: Option<String>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    ele_m: Option<Vec<Option<f64>>>,
}

fn parse_source(source: &Source) -> anyhow::Result<Vec<SimVehicle>> {
    let collection: FeatureCollection = serde_json::from_str(source.text)?;
    ensure!(!collection.features.is_empty(), "no features");
    match source.naming {
        Naming::Single(name) => {
            let mut trips = collection
                .features
                .iter()
                .enumerate()
                .map(|(i, f)| parse_trip(f).with_context(|| format!("feature {i}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            trips.sort_by_key(|t| t.first().at);
            Ok(vec![SimVehicle {
                name: name.to_owned(),
                trips,
            }])
        }
        Naming::BusPerVehicleId { city } => {
            // BTreeMap: buses come out in fleet-number order, so runs are reproducible.
            let mut buses: BTreeMap<(String, String), Vec<Trip>> = BTreeMap::new();
            for (i, feature) in collection.features.iter().enumerate() {
                let context = || format!("feature {i}");
                let trip = parse_trip(feature).with_context(context)?;
                let id = feature
                    .properties
                    .vehicle_id
                    .clone()
                    .with_context(|| format!("feature {i} has no vehicle_id"))?;
                let route = feature.properties.route.clone().unwrap_or_default();
                buses.entry((id, route)).or_default().push(trip);
            }
            Ok(buses
                .into_iter()
                .map(|((id, route), mut trips)| {
                    trips.sort_by_key(|t| t.first().at);
                    let line = format!("{city} {route}");
                    SimVehicle {
                        name: format!("Bus {id} ({})", line.trim()),
                        trips,
                    }
                })
                .collect())
        }
    }
}

fn parse_trip(feature: &Feature) -> anyhow::Result<Trip> {
    let props = &feature.properties;
    let coords = &feature.geometry.coordinates;
    ensure!(
        feature.geometry.kind == "LineString",
        "geometry is a {}, not a LineString",
        feature.geometry.kind
    );
    ensure!(
        coords.len() == props.times.len(),
        "{} coordinates but {} times",
        coords.len(),
        props.times.len()
    );
    ensure!(coords.len() >= 2, "a trip needs at least two fixes");

    let mut fixes: Vec<Fix> = Vec::with_capacity(coords.len());
    for (i, (coord, time)) in coords.iter().zip(&props.times).enumerate() {
        let &[lon, lat, ..] = coord.as_slice() else {
            bail!("vertex {i} has fewer than two coordinates");
        };
        ensure!(
            lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0,
            "vertex {i} is not a valid coordinate: [{lon}, {lat}]"
        );
        let at = DateTime::parse_from_rfc3339(time)
            .with_context(|| format!("vertex {i} has a bad time {time:?}"))?
            .with_timezone(&Utc);
        let point = LatLon::new(lat, lon);
        let altitude = props
            .ele_m
            .as_ref()
            .and_then(|e| e.get(i).copied().flatten())
            .filter(|a| a.is_finite());
        let (speed, heading) = match fixes.last() {
            None => (None, None),
            Some(prev) => {
                let dt = (at - prev.at).num_milliseconds() as f64 / 1000.0;
                ensure!(
                    dt > 0.0,
                    "vertex {i} at {time} is not after the one before it"
                );
                let (speed, heading) = step_motion(prev.point, point, dt, prev.heading);
                (Some(speed), heading)
            }
        };
        fixes.push(Fix {
            point,
            at,
            altitude,
            speed,
            heading,
        });
    }
    Ok(Trip {
        origin_name: props.origin.as_deref().map(place_name),
        destination_name: props.destination.as_deref().map(place_name),
        fixes,
    })
}

/// Speed (m/s) and heading over a step of `dt_s` seconds from `from` to `to`. Below
/// [`STANDSTILL_M`] the bearing is GNSS noise, so the heading before it is kept.
pub fn step_motion(
    from: LatLon,
    to: LatLon,
    dt_s: f64,
    heading: Option<f64>,
) -> (f64, Option<f64>) {
    let distance = geo::haversine_m(from, to);
    let heading = if distance >= STANDSTILL_M {
        Some(geo::initial_bearing_deg(from, to))
    } else {
        heading
    };
    (distance / dt_s, heading)
}

/// BODS writes stop names with underscores ("Queen_Square_Bus_Station").
fn place_name(raw: &str) -> String {
    raw.split('_')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet_or_panic() -> Vec<SimVehicle> {
        match fleet() {
            Ok(f) => f,
            Err(e) => panic!("embedded traces do not parse: {e:#}"),
        }
    }

    #[test]
    fn every_embedded_trace_parses_into_the_expected_fleet() {
        let fleet = fleet_or_panic();
        let names: Vec<&str> = fleet.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(fleet.len(), 10, "{names:?}");
        assert!(names.contains(&"Bus 4716 (Liverpool 14)"), "{names:?}");
        assert!(names.contains(&"Car Munich"));
        assert!(names.contains(&"Car Višnjan"));

        let buses: Vec<_> = fleet
            .iter()
            .filter(|v| v.name.starts_with("Bus "))
            .collect();
        assert_eq!(buses.len(), 8);
        assert_eq!(buses.iter().map(|b| b.trips.len()).sum::<usize>(), 16);
        let fixes: usize = buses
            .iter()
            .flat_map(|b| &b.trips)
            .map(|t| t.fixes.len())
            .sum();
        assert_eq!(fixes, 1533);

        let munich = fleet.iter().find(|v| v.name == "Car Munich");
        assert_eq!(munich.map(|m| m.trips[0].fixes.len()), Some(1194));
        let visnjan = fleet.iter().find(|v| v.name == "Car Višnjan");
        assert_eq!(visnjan.map(|m| m.trips[0].fixes.len()), Some(104));
    }

    #[test]
    fn times_strictly_increase_within_trips_and_trips_of_a_bus_do_not_overlap() {
        for vehicle in fleet_or_panic() {
            for trip in &vehicle.trips {
                assert!(trip.fixes.windows(2).all(|w| w[0].at < w[1].at));
            }
            for pair in vehicle.trips.windows(2) {
                assert!(
                    pair[0].last().at < pair[1].first().at,
                    "{} has overlapping trips",
                    vehicle.name
                );
            }
        }
    }

    #[test]
    fn derived_speeds_and_headings_are_finite_and_in_range() {
        for vehicle in fleet_or_panic() {
            for trip in &vehicle.trips {
                assert!(trip.first().speed.is_none());
                for fix in &trip.fixes[1..] {
                    let speed = fix.speed.unwrap_or(f64::NAN);
                    assert!(
                        speed.is_finite() && speed >= 0.0,
                        "{}: {speed}",
                        vehicle.name
                    );
                    if let Some(h) = fix.heading {
                        assert!((0.0..360.0).contains(&h), "{}: {h}", vehicle.name);
                    }
                }
            }
        }
    }

    #[test]
    fn derived_speeds_match_the_recorded_motion() {
        let fleet = fleet_or_panic();
        let munich = &fleet.iter().find(|v| v.name == "Car Munich").unwrap().trips[0];
        let speeds: Vec<f64> = munich.fixes.iter().filter_map(|f| f.speed).collect();
        // The motorway part runs at 100–113 km/h...
        assert!(speeds.iter().any(|&s| s > 27.0));
        // ...and the real GNSS re-acquisition jump (about 470 m in one second) is kept.
        let jump = speeds.iter().copied().fold(0.0, f64::max);
        assert!((400.0..550.0).contains(&jump), "{jump}");
        // Elsewhere no road vehicle goes faster than about 150 km/h.
        assert_eq!(speeds.iter().filter(|&&s| s > 42.0).count(), 1);
    }

    #[test]
    fn altitude_comes_from_the_gpx_elevation_only() {
        let fleet = fleet_or_panic();
        let visnjan = fleet.iter().find(|v| v.name == "Car Višnjan").unwrap();
        assert!(visnjan.trips[0].fixes.iter().all(|f| f.altitude.is_some()));
        let munich = fleet.iter().find(|v| v.name == "Car Munich").unwrap();
        assert!(munich.trips[0].fixes.iter().all(|f| f.altitude.is_none()));
    }

    #[test]
    fn bus_trips_carry_stop_names_and_routes_fit_a_shipment() {
        let fleet = fleet_or_panic();
        let bus = fleet
            .iter()
            .find(|v| v.name == "Bus 4716 (Liverpool 14)")
            .unwrap();
        assert_eq!(
            bus.trips[0].origin_name.as_deref(),
            Some("Queen Square Bus Station")
        );
        for vehicle in &fleet {
            for trip in &vehicle.trips {
                let route = trip.route(200);
                assert!(route.len() >= 2 && route.len() <= 200);
                assert_eq!(route[0], trip.first().point);
                assert_eq!(route[route.len() - 1], trip.last().point);
            }
        }
    }

    #[test]
    fn layovers_are_bounded_and_leave_time_to_get_there() {
        let fleet = fleet_or_panic();
        let munich = &fleet.iter().find(|v| v.name == "Car Munich").unwrap().trips[0];
        // Looping Munich: from the motorway back to the city start, about 10 km.
        let back = layover(munich, munich, None);
        let distance = geo::haversine_m(munich.last().point, munich.first().point);
        assert!(distance / back.as_secs_f64() <= DEADHEAD_SPEED_MPS + 1e-9);
        assert!(back >= MIN_LAYOVER);

        let bus = fleet
            .iter()
            .find(|v| v.name == "Bus 4836 (Liverpool 14)")
            .unwrap();
        let gap = (bus.trips[1].first().at - bus.trips[0].last().at)
            .to_std()
            .ok();
        let pause = layover(&bus.trips[0], &bus.trips[1], gap);
        let distance = geo::haversine_m(bus.trips[0].last().point, bus.trips[1].first().point);
        let deadhead = Duration::from_secs_f64(distance / DEADHEAD_SPEED_MPS);
        // The recorded gap is 35 minutes: cut to the cap, but never below the drive back.
        assert!(gap.is_some_and(|g| g > MAX_LAYOVER));
        assert_eq!(pause, MAX_LAYOVER.max(deadhead));

        // A short recorded gap is stretched to the time needed to get there.
        let short = layover(&bus.trips[0], &bus.trips[1], Some(Duration::from_secs(1)));
        assert_eq!(short, deadhead.max(MIN_LAYOVER));
    }

    #[test]
    fn malformed_traces_are_rejected() {
        let bad = [
            r#"{"features":[{"geometry":{"type":"Point","coordinates":[[1,2],[1,3]]},"properties":{"times":["2020-01-01T00:00:00Z","2020-01-01T00:00:01Z"]}}]}"#,
            r#"{"features":[{"geometry":{"type":"LineString","coordinates":[[1,2],[1,3]]},"properties":{"times":["2020-01-01T00:00:00Z"]}}]}"#,
            r#"{"features":[{"geometry":{"type":"LineString","coordinates":[[1,2],[1,3]]},"properties":{"times":["2020-01-01T00:00:01Z","2020-01-01T00:00:01Z"]}}]}"#,
            r#"{"features":[{"geometry":{"type":"LineString","coordinates":[[1,200],[1,3]]},"properties":{"times":["2020-01-01T00:00:00Z","2020-01-01T00:00:01Z"]}}]}"#,
            r#"{"features":[{"geometry":{"type":"LineString","coordinates":[[1,2],[1,3]]},"properties":{"times":["yesterday","2020-01-01T00:00:01Z"]}}]}"#,
            r#"{"features":[]}"#,
        ];
        for text in bad {
            let source = Source {
                file: "test.geojson",
                text,
                naming: Naming::Single("Test"),
            };
            assert!(parse_source(&source).is_err(), "accepted {text}");
        }
    }
}
