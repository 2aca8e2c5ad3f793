//! Looking back: trips and stops detected from each vehicle's fixes and kept up to date as they
//! arrive ([`detect`], [`segmenter`]), the simplified tracks stored with them ([`path`]), the
//! history the map shows and replays ([`api`]), the reports read from them ([`reports`]), and
//! the organisation's settings for both ([`TripSettings`], [`ReportSettings`]).
pub mod api;
pub mod detect;
pub mod export;
pub mod import;
pub mod path;
pub mod reports;
pub mod segmenter;

use axum::Router;
use serde::{Deserialize, Serialize};

use crate::{error::AppError, AppState};

/// The history routes: a vehicle's history on the map, exported and imported, and the reports.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(api::router())
        .merge(export::router())
        .merge(import::router())
        .merge(reports::router())
}

/// The segments of the vehicles `$2` of organisation `$1` overlapping `[$3, $4)`: those starting
/// in the range, and the last one starting before it if it ends after `$3`. Segments of one
/// vehicle never overlap one another, so no other can.
pub(crate) const OVERLAPPING: &str = "
    SELECT * FROM segments
    WHERE organisation_id = $1 AND vehicle_id = ANY($2) AND started_at >= $3 AND started_at < $4
    UNION ALL
    SELECT before.* FROM UNNEST($2::bigint[]) AS v(id)
    CROSS JOIN LATERAL (
        SELECT * FROM segments
        WHERE organisation_id = $1 AND vehicle_id = v.id AND started_at < $3
        ORDER BY started_at DESC LIMIT 1
    ) before
    WHERE before.ended_at > $3";

/// How trips and stops are told apart. Changing them has every vehicle's history gone through
/// again, in the background.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(
    default,
    description = "How trips and stops are detected. A stop is the vehicle staying within `stop_radius_m` of one place for at least `min_stop_s`; a trip is what lies between two stops, if it covers `min_trip_m`. Time without data longer than `max_gap_s` ends a trip, unless the vehicle is found where it was. A change has the history detected again in the background."
)]
pub struct TripSettings {
    /// Seconds a vehicle must stay in one place to have stopped.
    #[schema(minimum = 30, maximum = 86400)]
    pub min_stop_s: u32,
    /// Metres around the place it stopped within which it is still stopped: wider than GPS
    /// wander (a phone indoors wanders 20 to 50 m).
    #[schema(minimum = 5, maximum = 5000)]
    pub stop_radius_m: f64,
    /// Metres a trip must cover to count; shorter moves (across a car park) are neither.
    #[schema(minimum = 1, maximum = 100000)]
    pub min_trip_m: f64,
    /// Seconds without data after which a vehicle found elsewhere has ended its trip.
    #[schema(minimum = 60, maximum = 86400)]
    pub max_gap_s: u32,
    /// Not a setting of its own: the position filter's `max_speed_mps`, filled in by the
    /// segmenter. A speed beyond it, reported or between two fixes, is a glitch the filter let
    /// through (in a backlog, an import) and never a trip's top speed.
    #[serde(skip)]
    pub plausible_speed_mps: Option<f64>,
}

impl Default for TripSettings {
    fn default() -> Self {
        TripSettings {
            min_stop_s: 300,
            stop_radius_m: 75.0,
            min_trip_m: 300.0,
            max_gap_s: 900,
            plausible_speed_mps: None,
        }
    }
}

impl TripSettings {
    /// What `key` accepts, as the error for any other value says it; none for an unknown key.
    pub fn accepted(key: &str) -> Option<&'static str> {
        Some(match key {
            "min_stop_s" => "must be a whole number of seconds, 30 to 86400",
            "stop_radius_m" => "must be 5 to 5000 metres",
            "min_trip_m" => "must be 1 to 100000 metres",
            "max_gap_s" => "must be a whole number of seconds, 60 to 86400",
            _ => return None,
        })
    }

    /// Range checks, naming the field as `trips.<name>`.
    pub fn validate(&self) -> Result<(), AppError> {
        let checks = [
            ("min_stop_s", (30..=86_400).contains(&self.min_stop_s)),
            (
                "stop_radius_m",
                (5.0..=5_000.0).contains(&self.stop_radius_m),
            ),
            ("min_trip_m", (1.0..=100_000.0).contains(&self.min_trip_m)),
            ("max_gap_s", (60..=86_400).contains(&self.max_gap_s)),
        ];
        match checks.into_iter().find(|(_, ok)| !ok) {
            None => Ok(()),
            Some((name, _)) => Err(section_error("trips", name, Self::accepted(name))),
        }
    }
}

/// Units for distances in reports and exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DistanceUnit {
    Km,
    Mi,
}

impl DistanceUnit {
    /// Metres in one unit.
    pub fn metres(self) -> f64 {
        match self {
            DistanceUnit::Km => 1_000.0,
            DistanceUnit::Mi => 1_609.344,
        }
    }

    /// The unit's symbol, and of its speed.
    pub fn symbols(self) -> (&'static str, &'static str) {
        match self {
            DistanceUnit::Km => ("km", "km/h"),
            DistanceUnit::Mi => ("mi", "mph"),
        }
    }
}

/// How reports speak: the organisation's time zone (days begin at its midnight) and units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(
    default,
    description = "How reports and exports speak: times in the organisation's time zone (a day begins at its midnight), distances in its unit."
)]
pub struct ReportSettings {
    /// An IANA time zone name, such as `Europe/Berlin` or `America/Chicago`.
    #[schema(example = "Europe/Berlin", max_length = 64)]
    pub time_zone: String,
    pub distance_unit: DistanceUnit,
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            time_zone: "UTC".into(),
            distance_unit: DistanceUnit::Km,
        }
    }
}

impl ReportSettings {
    pub fn accepted(key: &str) -> Option<&'static str> {
        Some(match key {
            "time_zone" => "must be an IANA time zone name, such as Europe/Berlin",
            "distance_unit" => "must be km or mi",
            _ => return None,
        })
    }

    pub fn validate(&self) -> Result<(), AppError> {
        if self.time_zone.len() > 64 || self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(section_error(
                "reports",
                "time_zone",
                Self::accepted("time_zone"),
            ));
        }
        Ok(())
    }

    /// The time zone, checked when the settings were saved.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }
}

fn section_error(section: &str, name: &str, accepted: Option<&str>) -> AppError {
    let accepted = accepted.expect("every checked key says what it accepts");
    AppError::validation(
        format!("{section}.{name}"),
        format!("{section}.{name} {accepted}"),
    )
}
