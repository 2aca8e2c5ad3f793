//! Schemas of the settings bodies the handlers read and write as JSON values.
//!
//! These types are never built: they exist only for their schemas.
#![expect(dead_code, reason = "schema-only types are never built")]

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A vehicle's own alert settings and those in force for it.
#[derive(ToSchema)]
pub struct VehicleAlertSettings {
    /// The keys of AlertSettings this vehicle sets otherwise.
    #[schema(value_type = Object)]
    overrides: Value,
    effective: crate::alerts::AlertSettings,
}

/// A settings change: for each section, the keys to change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"filter": {"max_accuracy_m": 50, "max_age_h": null}}))]
pub struct SettingsPatch {
    /// Keys of FilterSettings to change.
    #[serde(default)]
    #[schema(value_type = Object)]
    filter: Value,
    /// Keys of AlertSettings to change.
    #[serde(default)]
    #[schema(value_type = Object)]
    alerts: Value,
}
