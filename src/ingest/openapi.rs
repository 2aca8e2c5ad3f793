//! Schemas of the device formats, which the parsers read field by field from JSON or a form
//! rather than through one Rust type: the native position, the tracker apps' formats, and what
//! each endpoint answers.
//!
//! These types are never built: they exist only for their schemas.
#![expect(dead_code, reason = "schema-only types are never built")]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
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
