//! Schemas of the alert API's replies that the handlers build as JSON values, of geofence
//! shapes (GeoJSON), and of a new geofence.
//!
//! These types are never built: they exist only for their schemas.
#![expect(dead_code, reason = "schema-only types are never built")]

use serde_json::Value;
use utoipa::{
    openapi::{
        schema::{AllOfBuilder, ArrayBuilder, ObjectBuilder, Schema},
        Ref, RefOr,
    },
    PartialSchema, ToSchema,
};

use crate::fleet::openapi::position;

/// A polygon's rings, each closed and of at least four positions.
fn polygon_coordinates() -> ArrayBuilder {
    ArrayBuilder::new().items(ArrayBuilder::new().items(position()).min_items(Some(4)))
}

/// A GeoJSON Polygon: closed rings of `[lon, lat]` positions.
#[derive(ToSchema)]
pub struct Polygon {
    #[schema(inline)]
    r#type: PolygonType,
    #[schema(schema_with = polygon_coordinates)]
    coordinates: Value,
}

#[derive(ToSchema)]
enum PolygonType {
    Polygon,
}

/// The alerts asked for, and how many the caller has not acknowledged.
#[derive(ToSchema)]
pub struct AlertList {
    alerts: Vec<crate::alerts::Alert>,
    /// Unacknowledged alerts the caller can see, whatever the filter.
    unacknowledged: i64,
}

/// How far off the ETAs of arrived shipments were.
#[derive(ToSchema)]
pub struct EtaAccuracy {
    /// One entry per horizon, longest first.
    horizons: Vec<crate::alerts::accuracy::Horizon>,
}

/// A new geofence: a change (`GeofenceChange`, the same body) that names it.
pub struct NewGeofence;

impl ToSchema for NewGeofence {}

impl PartialSchema for NewGeofence {
    fn schema() -> RefOr<Schema> {
        let change = Ref::from_schema_name(crate::alerts::geofences::Input::name());
        AllOfBuilder::new()
            .description(Some(
                "Exactly one of `area` (a GeoJSON Polygon, closed rings of at least 4 positions, at most 10000 in all, that is a valid area: no ring crossing itself or another, holes inside the shell, some area enclosed; otherwise `400` naming `area` and saying why, e.g. `area is not a valid polygon: self-intersection at [11.5, 48.5]`) or `circle`.",
            ))
            .item(change)
            .item(ObjectBuilder::new().required("name"))
            .into()
    }
}
