//! Schemas of the fleet's replies that the handlers build as JSON values (GeoJSON, new vehicles,
//! share links, the positions log).
//!
//! These types are never built: they exist only for their schemas.
#![expect(dead_code, reason = "schema-only types are never built")]

use chrono::{DateTime, Utc};
use serde_json::Value;
use utoipa::{
    openapi::{
        schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type},
        Ref, RefOr, Schema,
    },
    ToSchema,
};

use crate::tracking::position::Position;

/// A shipment's `eta_basis`: the `EtaBasis` schema of the alerts' ETA (referred to by name, since
/// the ETA is made above the fleet), or null.
pub(crate) fn eta_basis() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item({
            let mut basis = Ref::from_schema_name("EtaBasis");
            basis.description = "How the latest ETA was made, while the shipment is planned or in \
                                 transit on its vehicle."
                .to_owned();
            basis
        })
        .into()
}

/// A new vehicle, with its ingest token shown only now.
#[derive(ToSchema)]
pub struct CreatedVehicle {
    vehicle: crate::fleet::vehicles::Vehicle,
    ingest_token: String,
}

#[derive(ToSchema)]
pub struct IngestToken {
    /// Shown once.
    ingest_token: String,
}

/// A GeoJSON position: `[lon, lat]`.
pub(crate) fn position() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::Number))
        .min_items(Some(2))
        .description(Some("[lon, lat]"))
}

/// A planned route's positions (`shipments::check_route`).
fn route_coordinates() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(position())
        .min_items(Some(2))
        .max_items(Some(10_000))
}

/// A track's positions: as many as it has, even fewer than two.
fn track_coordinates() -> ArrayBuilder {
    ArrayBuilder::new().items(position())
}

/// A GeoJSON LineString.
#[derive(ToSchema)]
pub struct LineString {
    #[schema(inline)]
    r#type: LineStringType,
    #[schema(schema_with = route_coordinates)]
    coordinates: Value,
}

#[derive(ToSchema)]
enum LineStringType {
    LineString,
}

/// The vehicles' last positions as GeoJSON Point features.
#[derive(ToSchema)]
pub struct FleetFeatureCollection {
    #[schema(inline)]
    r#type: FeatureCollectionType,
    #[schema(inline)]
    features: Vec<FleetFeature>,
}

#[derive(ToSchema)]
enum FeatureCollectionType {
    FeatureCollection,
}

#[derive(ToSchema)]
enum FeatureType {
    Feature,
}

#[derive(ToSchema)]
struct FleetFeature {
    #[schema(inline)]
    r#type: FeatureType,
    #[schema(inline)]
    geometry: Point,
    #[schema(inline)]
    properties: FleetFeatureProperties,
}

#[derive(ToSchema)]
struct Point {
    #[schema(inline)]
    r#type: PointType,
    /// `[lon, lat]`
    coordinates: [f64; 2],
}

#[derive(ToSchema)]
enum PointType {
    Point,
}

#[derive(ToSchema)]
struct FleetFeatureProperties {
    vehicle_id: i64,
    name: String,
    position: Position,
}

/// A shipment's track as one LineString Feature, ordered by `recorded_at`.
#[derive(ToSchema)]
pub struct TrackFeatureCollection {
    #[schema(inline)]
    r#type: FeatureCollectionType,
    #[schema(inline)]
    features: Vec<TrackFeature>,
}

#[derive(ToSchema)]
struct TrackFeature {
    #[schema(inline)]
    r#type: FeatureType,
    /// The track's vertices in time order. A track of fewer than two points has that many coordinates (GeoJSON asks for at least two), so that clients need no special case.
    #[schema(inline)]
    geometry: Track,
    #[schema(inline)]
    properties: TrackProperties,
}

#[derive(ToSchema)]
struct Track {
    #[schema(inline)]
    r#type: LineStringType,
    #[schema(schema_with = track_coordinates)]
    coordinates: Vec<[f64; 2]>,
}

#[derive(ToSchema)]
struct TrackProperties {
    shipment_id: i64,
    /// Each vertex's `recorded_at`.
    times: Vec<DateTime<Utc>>,
    /// Each vertex's seq.
    seqs: Vec<i64>,
}

/// A share link: anyone holding it reads one shipment.
#[derive(ToSchema)]
pub struct Share {
    token: String,
    /// The page for the link, `/t/{token}`.
    url: String,
    expires_at: DateTime<Utc>,
    /// Whether the link's holder may write in the shipment's chat.
    chat: bool,
}

/// A page of a vehicle's positions log.
#[derive(ToSchema)]
pub struct PositionsLog {
    positions: Vec<crate::fleet::vehicles::LogRow>,
    /// The `after` of the next page; null on the last.
    #[schema(required = true)]
    next: Option<DateTime<Utc>>,
}

/// The format of a shipment's track.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum TrackFormat {
    Geojson,
    Gpx,
}
