//! The schema of what browsers post as violation reports.
//!
//! This type is never built: it exists only for its schema.

use utoipa::{
    openapi::{
        schema::{ArrayBuilder, ObjectBuilder, Schema, Type},
        RefOr,
    },
    PartialSchema, ToSchema,
};

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
