//! Schemas of what goes over the wire without being one Rust type: replies the handlers build as
//! JSON values, bodies read field by field from JSON or a form (the native position format, the
//! tracker apps' formats), and GeoJSON. Each says what the code that reads or writes it does;
//! types that are read or written with serde derive their schemas where they are defined.
//!
//! These types are never built: they exist only for their schemas.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{
    openapi::{
        extensions::Extensions,
        schema::{
            AdditionalProperties, AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema,
            SchemaType, Type,
        },
        Ref, RefOr,
    },
    IntoParams, PartialSchema, ToSchema,
};

use crate::{auth::Role, tracking::position::Position};

/// Every error reply. See docs/API.md for the codes.
#[derive(Serialize, ToSchema)]
#[schema(
    example = json!({"error": {"code": "validation", "message": "lat must be between -90 and 90", "field": "lat", "index": 3}}),
)]
// For the schema: an error reply has no other keys (`additionalProperties: false`).
#[serde(deny_unknown_fields)]
pub struct Error {
    #[schema(inline)]
    error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
struct ErrorBody {
    code: ErrorCode,
    message: String,
    /// The offending field, when one applies (for tracker apps, as the app names it).
    #[schema(nullable = false)]
    field: Option<String>,
    /// The item's position in a batch, when one applies.
    #[schema(nullable = false)]
    index: Option<u32>,
}

/// The `code` of an error (`AppError::code`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ErrorCode {
    Malformed,
    Validation,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    UnsupportedMediaType,
    RateLimited,
    Timeout,
    Internal,
    Unavailable,
}

/// A person. `organisation_id` is present for the signed-in user (`/auth/me`, login); `organisation` in the login reply; `disabled` and `created_at` in `/users` lists and replies.
#[derive(ToSchema)]
pub struct User {
    id: i64,
    #[schema(format = Email)]
    email: String,
    role: Role,
    organisation_id: Option<i64>,
    organisation: Option<String>,
    /// In `/users` lists and replies.
    disabled: Option<bool>,
    /// In `/users` lists and replies.
    created_at: Option<DateTime<Utc>>,
}

/// A new session: the reply to signing in, or to opening a device link.
#[derive(ToSchema)]
pub struct SignedIn {
    /// JWT
    token: String,
    user: User,
}

/// The answer to positions posted in the native format, once every one is committed.
#[derive(ToSchema)]
#[schema(example = json!({"accepted": 2, "duplicates": 1, "filtered": 0, "seqs": [1041, 1042, 977]}))]
pub struct IngestReply {
    accepted: u32,
    duplicates: u32,
    /// Points stored for audit but not published (implausible).
    filtered: u32,
    /// `seqs[i]` is the event sequence number of input item `i`; a duplicate gets the seq of the stored copy.
    seqs: Vec<i64>,
}

/// One position from a device (`NewPosition::from_native`). `lng` is accepted instead of `lon`
/// (one of the two, not both). Numbers must be finite. Unknown fields are kept as attributes.
///
/// Written out: the derive has no way to say "one of `lon` and `lng`".
pub struct PositionInput;

impl ToSchema for PositionInput {}

impl PartialSchema for PositionInput {
    fn schema() -> RefOr<Schema> {
        let number = |min: f64, max: f64| {
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(min))
                .maximum(Some(max))
        };
        let nullable_number =
            || ObjectBuilder::new().schema_type(SchemaType::Array(vec![Type::Number, Type::Null]));
        let needs = |key: &str| ObjectBuilder::new().required(key);
        let properties = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "One position from a device. `lng` is accepted instead of `lon` (one of the two, not both). Numbers must be finite. Unknown fields are kept as attributes.",
            ))
            .required("lat")
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .property("lat", number(-90.0, 90.0))
            .property("lon", number(-180.0, 180.0))
            .property(
                "lng",
                number(-180.0, 180.0).description(Some("Alias of `lon`: give one of the two.")),
            )
            .property(
                "recorded_at",
                ObjectBuilder::new()
                    .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::DateTime,
                    )))
                    .description(Some(
                        "RFC 3339, between 2000-01-01 and 24 h ahead of the server clock. Default: the server's clock.",
                    )),
            )
            .property(
                "accuracy",
                nullable_number().minimum(Some(0)).maximum(Some(f32::MAX)),
            )
            .property(
                "speed",
                nullable_number()
                    .minimum(Some(0))
                    .maximum(Some(f32::MAX))
                    .description(Some("m/s")),
            )
            .property("heading", nullable_number().minimum(Some(0)).maximum(Some(360)))
            .property("altitude", nullable_number())
            .property("battery", nullable_number().minimum(Some(0)).maximum(Some(100)))
            .build();
        let lon_or_lng = OneOfBuilder::new().item(needs("lon")).item(needs("lng"));
        AllOfBuilder::new().item(properties).item(lon_or_lng).into()
    }
}

/// A native-format body: one position, or a batch of 1 to 1000 (`ingest::parse_native`).
pub struct Positions;

impl ToSchema for Positions {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((PositionInput::name().into(), PositionInput::schema()));
    }
}

impl PartialSchema for Positions {
    fn schema() -> RefOr<Schema> {
        let batch = ArrayBuilder::new()
            .items(Ref::from_schema_name(PositionInput::name()))
            .min_items(Some(1))
            .max_items(Some(crate::ingest::MAX_BATCH));
        OneOfBuilder::new()
            .item(Ref::from_schema_name(PositionInput::name()))
            .item(batch)
            .into()
    }
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
fn position() -> ArrayBuilder {
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

/// A polygon's rings, each closed and of at least four positions.
fn polygon_coordinates() -> ArrayBuilder {
    ArrayBuilder::new().items(ArrayBuilder::new().items(position()).min_items(Some(4)))
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

/// The alerts asked for, and how many the caller has not acknowledged.
#[derive(ToSchema)]
pub struct AlertList {
    alerts: Vec<crate::alerts::Alert>,
    /// Unacknowledged alerts the caller can see, whatever the filter.
    unacknowledged: i64,
}

/// A vehicle's own alert settings and those in force for it.
#[derive(ToSchema)]
pub struct VehicleAlertSettings {
    /// The keys of AlertSettings this vehicle sets otherwise.
    #[schema(value_type = Object)]
    overrides: Value,
    effective: crate::alerts::AlertSettings,
}

/// How far off the ETAs of arrived shipments were.
#[derive(ToSchema)]
pub struct EtaAccuracy {
    /// One entry per horizon, longest first.
    horizons: Vec<crate::alerts::accuracy::Horizon>,
}

/// The caller's unread count in one conversation, after marking it read.
#[derive(ToSchema)]
pub struct Unread {
    unread: i64,
}

/// The caller's conversations with unread messages.
#[derive(ToSchema)]
pub struct UnreadConversations {
    conversations: Vec<UnreadConversation>,
}

#[derive(ToSchema)]
struct UnreadConversation {
    shipment_id: i64,
    unread: i64,
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

/// The OsmAnd protocol's parameters (`ingest::trackers::parse_osmand`), in the query string or,
/// when the URL has no query, in a form body. Other keys are kept as attributes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OsmandParams {
    /// The vehicle's ingest token (or `deviceid`).
    #[param(min_length = 1)]
    id: Option<String>,
    /// The vehicle's ingest token (alias of `id`).
    #[param(min_length = 1)]
    deviceid: Option<String>,
    /// Latitude.
    #[param(minimum = -90, maximum = 90)]
    lat: Option<f64>,
    /// Longitude.
    #[param(minimum = -180, maximum = 180)]
    lon: Option<f64>,
    /// `lat,lon`, instead of `lat` and `lon`.
    location: Option<String>,
    /// Epoch seconds (below 2147483647), epoch milliseconds, ISO 8601, or `yyyy-MM-dd HH:mm:ss` read as UTC. Default: the server's clock.
    timestamp: Option<String>,
    /// In the vehicle's `speed_unit`; stored as m/s.
    #[param(minimum = 0)]
    speed: Option<f64>,
    /// Heading (or `heading`).
    #[param(minimum = 0, maximum = 360)]
    bearing: Option<f64>,
    /// Alias of `bearing`.
    #[param(minimum = 0, maximum = 360)]
    heading: Option<f64>,
    /// Altitude.
    altitude: Option<f64>,
    /// Accuracy in metres.
    #[param(minimum = 0)]
    accuracy: Option<f64>,
    /// Battery (%).
    #[param(minimum = 0, maximum = 100)]
    batt: Option<f64>,
}

/// The OsmAnd parameters as a form body (when the URL has no query).
#[derive(ToSchema)]
pub struct OsmandForm(BTreeMap<String, String>);

/// Traccar Client's JSON (`ingest::trackers::parse_traccar`).
#[derive(ToSchema)]
pub struct TraccarPosition {
    /// The vehicle's ingest token.
    device_id: String,
    #[schema(inline)]
    location: TraccarLocation,
}

#[derive(ToSchema)]
struct TraccarLocation {
    #[schema(required = false)]
    timestamp: DateTime<Utc>,
    #[schema(inline)]
    coords: TraccarCoords,
    #[schema(inline, required = false)]
    battery: TraccarBattery,
    #[schema(required = false)]
    is_moving: bool,
    #[schema(required = false)]
    odometer: f64,
    #[schema(required = false)]
    event: String,
    #[schema(inline, required = false)]
    activity: TraccarActivity,
    #[schema(value_type = Object, required = false)]
    extras: Value,
}

#[derive(ToSchema)]
struct TraccarCoords {
    #[schema(minimum = -90, maximum = 90)]
    latitude: f64,
    #[schema(minimum = -180, maximum = 180)]
    longitude: f64,
    #[schema(required = false)]
    accuracy: f64,
    /// m/s; negative means unknown
    #[schema(required = false)]
    speed: f64,
    /// negative means unknown
    #[schema(required = false)]
    heading: f64,
    #[schema(required = false)]
    altitude: f64,
}

#[derive(ToSchema)]
struct TraccarBattery {
    /// 0–1, stored as %; negative means unknown
    #[schema(maximum = 1, required = false)]
    level: f64,
    #[schema(required = false)]
    is_charging: bool,
}

#[derive(ToSchema)]
struct TraccarActivity {
    #[schema(required = false)]
    r#type: String,
}

/// An OwnTracks message (`ingest::trackers::parse_owntracks`): a `location` is stored, anything
/// else answered and ignored.
///
/// Written out: the derive cannot say "an object whose `_type` is not `location`" (`not`, which
/// utoipa's model lacks, goes in as an extension entry, which serialises as the keyword).
pub struct OwnTracksMessage;

impl ToSchema for OwnTracksMessage {}

impl PartialSchema for OwnTracksMessage {
    fn schema() -> RefOr<Schema> {
        let location_type = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["location"]))
        };
        let number = |min: f64, max: f64| {
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(min))
                .maximum(Some(max))
        };
        let nullable = |description: &str| {
            ObjectBuilder::new()
                .schema_type(SchemaType::Array(vec![Type::Number, Type::Null]))
                .description(Some(description))
        };
        let location = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("A location message: stored."))
            .required("_type")
            .required("lat")
            .required("lon")
            .property("_type", location_type())
            .property("lat", number(-90.0, 90.0))
            .property("lon", number(-180.0, 180.0))
            .property("tst", nullable("Epoch seconds; default now."))
            .property(
                "acc",
                nullable("Accuracy, m.")
                    .minimum(Some(0))
                    .maximum(Some(f32::MAX)),
            )
            .property("alt", nullable("Altitude, m."))
            .property("vel", nullable("Speed, km/h.").minimum(Some(0)))
            .property(
                "cog",
                nullable("Heading, degrees.")
                    .minimum(Some(0))
                    .maximum(Some(360)),
            )
            .property(
                "batt",
                nullable("Battery, %.").minimum(Some(0)).maximum(Some(100)),
            );
        let a_location = ObjectBuilder::new()
            .required("_type")
            .property("_type", location_type())
            .build();
        let not_a_location: Extensions = [(
            "not",
            serde_json::to_value(a_location).expect("schemas serialise"),
        )]
        .into_iter()
        .collect();
        let other = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Any other message (transition, waypoint, card, …): answered with `[]`, nothing stored, its fields not read.",
            ))
            .extensions(Some(not_a_location));
        OneOfBuilder::new().item(location).item(other).into()
    }
}

/// What OwnTracks expects back: an empty array, so that it does not send the message again.
pub struct NothingToSend;

impl ToSchema for NothingToSend {}

impl PartialSchema for NothingToSend {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new().max_items(Some(0)).into()
    }
}

/// The id of the object a route names (`ApiPath<i64>`).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct Id {
    #[param(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    id: i64,
}

/// The format of a shipment's track.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum TrackFormat {
    Geojson,
    Gpx,
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

/// What the Reporting API posts: an array of report objects.
pub struct CspReports;

impl ToSchema for CspReports {}

impl PartialSchema for CspReports {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(ObjectBuilder::new().schema_type(Type::Object))
            .min_items(Some(1))
            .into()
    }
}

/// Who wrote a chat message, as a role in the conversation.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ChatRole {
    Admin,
    Dispatcher,
    Driver,
    Customer,
}
