//! The `alerts` section of an organisation's settings: each rule's limits. `None` turns a rule
//! off; geofences may set their own debounce.
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// When the alert rules fire. `null` turns a rule off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(default)]
pub struct AlertSettings {
    /// Speed in m/s above which a vehicle is speeding (default 25 m/s, 90 km/h).
    #[schema(minimum = 1, maximum = 200)]
    pub speed_limit_mps: Option<f64>,
    /// Seconds above the limit before an overspeed episode raises its alert.
    #[schema(maximum = 3600)]
    pub overspeed_min_s: u32,
    /// Minutes a vehicle in transit may stand still before `stopped` is raised.
    #[schema(minimum = 1, maximum = 1440)]
    pub stopped_min: Option<u32>,
    /// Metres a vehicle may drift (GPS noise) and still count as standing still.
    #[schema(minimum = 1, maximum = 10000)]
    pub stopped_radius_m: f64,
    /// Minutes without a position from a vehicle in transit before `silent` is raised.
    #[schema(minimum = 1, maximum = 1440)]
    pub silent_min: Option<u32>,
    /// Metres from the planned route beyond which a vehicle is off route.
    #[schema(minimum = 10, maximum = 100000)]
    pub off_route_m: Option<f64>,
    /// Seconds a vehicle must be off route before `off_route` is raised.
    #[schema(maximum = 3600)]
    pub off_route_s: u32,
    /// Metres from the destination within which the shipment has arrived.
    #[schema(minimum = 5, maximum = 100000)]
    pub arrival_radius_m: Option<f64>,
    /// Seconds a vehicle must stay on the new side of a geofence boundary before `enter` or
    /// `exit` fires, so a vehicle wobbling on the boundary does not flap.
    #[schema(maximum = 3600)]
    pub geofence_debounce_s: u32,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            speed_limit_mps: Some(25.0),
            overspeed_min_s: 20,
            stopped_min: Some(10),
            stopped_radius_m: 50.0,
            silent_min: Some(10),
            off_route_m: Some(200.0),
            off_route_s: 60,
            arrival_radius_m: Some(100.0),
            geofence_debounce_s: 30,
        }
    }
}

impl AlertSettings {
    /// What `key` accepts, as the error for any other value says it; none for an unknown key.
    pub fn accepted(key: &str) -> Option<&'static str> {
        Some(match key {
            "speed_limit_mps" => "must be 1 to 200 m/s, or null",
            "overspeed_min_s" => "must be a whole number of seconds, 0 to 3600",
            "stopped_min" => "must be a whole number of minutes, 1 to 1440, or null",
            "stopped_radius_m" => "must be 1 to 10000 metres",
            "silent_min" => "must be a whole number of minutes, 1 to 1440, or null",
            "off_route_m" => "must be 10 to 100000 metres, or null",
            "off_route_s" => "must be a whole number of seconds, 0 to 3600",
            "arrival_radius_m" => "must be 5 to 100000 metres, or null",
            "geofence_debounce_s" => "must be a whole number of seconds, 0 to 3600",
            _ => return None,
        })
    }

    /// Range checks, naming the field as `alerts.<name>`.
    pub fn validate(&self) -> Result<(), AppError> {
        let bad = |name: &str| {
            let accepted = Self::accepted(name).expect("every checked key says what it accepts");
            Err(AppError::validation(
                format!("alerts.{name}"),
                format!("alerts.{name} {accepted}"),
            ))
        };
        let within = |v: Option<f64>, lo: f64, hi: f64| v.is_some_and(|v| !(lo..=hi).contains(&v));
        if within(self.speed_limit_mps, 1.0, 200.0) {
            return bad("speed_limit_mps");
        }
        if self.overspeed_min_s > 3600 {
            return bad("overspeed_min_s");
        }
        if self.stopped_min.is_some_and(|m| m == 0 || m > 1440) {
            return bad("stopped_min");
        }
        if !(1.0..=10_000.0).contains(&self.stopped_radius_m) {
            return bad("stopped_radius_m");
        }
        if self.silent_min.is_some_and(|m| m == 0 || m > 1440) {
            return bad("silent_min");
        }
        if within(self.off_route_m, 10.0, 100_000.0) {
            return bad("off_route_m");
        }
        if self.off_route_s > 3600 {
            return bad("off_route_s");
        }
        if within(self.arrival_radius_m, 5.0, 100_000.0) {
            return bad("arrival_radius_m");
        }
        if self.geofence_debounce_s > 3600 {
            return bad("geofence_debounce_s");
        }
        Ok(())
    }
}
