//! The API's OpenAPI 3.1 document, generated from the code: each handler's `#[utoipa::path]`
//! says its route, parameters, body and answers, and the request and reply types derive their
//! schemas. It is served at `GET /api/v1/openapi.json` and committed as `docs/openapi.json`,
//! which a test keeps equal to what the code generates, so clients, the API fuzzer and reviewers
//! read the same document as the server serves.
//!
//! This module composes the document and says what no one type can: how callers authenticate,
//! and which operations need more than their attribute. The shared error answers live with the
//! error shape (`error::openapi`); the schemas of bodies that are not one Rust type live in each
//! capability's `openapi` module, beside the handlers that read and write them.
use std::sync::LazyLock;

use utoipa::{
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    openapi::Required,
    Modify, OpenApi, Path,
};

use crate::{
    alerts,
    auth::{self, people},
    chat,
    error::openapi,
    fleet::{self, shipments, vehicles},
    history, ingest, security, settings, socket,
    web::driver,
};

/// The command that rewrites `docs/openapi.json` from the code.
pub const REFRESH: &str = "cargo test --lib openapi::tests::write_the_document -- --ignored";

/// The API: its operations (each handler's `#[utoipa::path]`), the shared error answers, how
/// callers authenticate, and the tags that group the operations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Waymark API",
        version = "1",
        description = "GPS fleet tracking: devices post positions, dispatchers and share links read vehicles, shipments and tracks. Every error is `{\"error\": {\"code\", \"message\", \"field\"?, \"index\"?}}`. The prose reference, with the WebSocket protocol, is docs/API.md.",
    ),
    servers((url = "/api/v1")),
    paths(
        auth::routes::login,
        auth::routes::logout,
        auth::routes::me,
        ingest::post_positions,
        ingest::trackers::osmand,
        ingest::trackers::owntracks,
        vehicles::list_handler,
        vehicles::create,
        vehicles::get_handler,
        vehicles::update,
        vehicles::rotate_token,
        vehicles::revoke_token,
        fleet::nearby,
        fleet::fleet,
        people::list,
        people::create,
        shipments::list,
        shipments::create,
        shipments::get_one,
        shipments::update,
        shipments::track::track,
        shipments::share::share,
        shipments::share::revoke_share,
        shipments::share::list,
        shipments::share::revoke_by_id,
        socket::upgrade,
        openapi,
        settings::show,
        settings::change,
        driver::assignment,
        driver::post_positions,
        driver::create_link,
        driver::redeem_link,
        vehicles::positions_log,
        security::csp_report,
        chat::history,
        chat::send,
        chat::read,
        chat::edit,
        chat::delete,
        chat::react,
        chat::unread,
        alerts::api::list,
        alerts::api::get_one,
        alerts::api::acknowledge_handler,
        alerts::geofences::list,
        alerts::geofences::create,
        alerts::geofences::get_one,
        alerts::geofences::update,
        alerts::geofences::remove,
        settings::show_vehicle_settings,
        settings::set_vehicle_settings,
        people::update,
        people::sign_out_everywhere,
        alerts::accuracy::accuracy,
        history::export::export,
        history::import::import,
        history::api::history,
        history::reports::trips,
        history::reports::stops,
        history::reports::daily,
        history::reports::geofence_visits,
        history::reports::shipments,
    ),
    components(
        schemas(openapi::Error, alerts::eta::Basis),
        responses(
            openapi::BadRequest,
            openapi::Unauthorized,
            openapi::Forbidden,
            openapi::NotFound,
            openapi::Conflict,
            openapi::TooLarge,
            openapi::Gone,
            openapi::UnsupportedMediaType,
            openapi::Internal,
            openapi::Unavailable,
            openapi::RateLimited,
        ),
    ),
    modifiers(&SecuritySchemes, &SharedHandlers, &OptionalBodies),
    security(("bearer" = []), ("cookie" = [])),
    tags(
        (name = "auth"),
        (name = "ingest"),
        (name = "vehicles"),
        (name = "fleet"),
        (name = "shipments"),
        (name = "tracking"),
        (name = "meta"),
        (name = "driver"),
        (name = "settings"),
        (name = "chat"),
        (name = "alerts"),
        (name = "users"),
        (name = "eta"),
        (name = "reports"),
    ),
)]
pub struct ApiDoc;

/// How a caller proves who they are: people with a session (bearer or cookie), devices with
/// their ingest token, share links and WebSocket clients with a query parameter.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let http = |scheme, description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(scheme)
                    .description(Some(description))
                    .build(),
            )
        };
        let api_key = |key: fn(ApiKeyValue) -> ApiKey, name: &str, description: &str| {
            SecurityScheme::ApiKey(key(ApiKeyValue::with_description(name, description)))
        };
        let schemes = [
            (
                "bearer",
                http(
                    HttpAuthScheme::Bearer,
                    "A person's JWT (from `/auth/login`) or, on the device routes, the vehicle's ingest token.",
                ),
            ),
            (
                "cookie",
                api_key(
                    ApiKey::Cookie,
                    auth::SESSION_COOKIE,
                    "The session cookie set by `/auth/login` (the same JWT).",
                ),
            ),
            (
                "share",
                api_key(
                    ApiKey::Query,
                    "share",
                    "A share link's token; reads one shipment.",
                ),
            ),
            (
                "basic",
                http(
                    HttpAuthScheme::Basic,
                    "OwnTracks: the ingest token as the password, any user name.",
                ),
            ),
            (
                "wsToken",
                api_key(
                    ApiKey::Query,
                    "token",
                    "A JWT as `?token=` (WebSocket only).",
                ),
            ),
        ];
        for (name, scheme) in schemes {
            components.add_security_scheme(name, scheme);
        }
    }
}

/// Operations whose handler serves another one too, so `paths(...)`, which lists handlers,
/// cannot name them: `POST /osmand` (the handler of `GET /osmand`).
struct SharedHandlers;

impl Modify for SharedHandlers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        add::<ingest::trackers::OsmandPost>(doc, "ingest");
    }
}

/// Adds `P`'s operation under `tag` (what `paths(...)` would take from `P`'s attribute).
fn add<P: Path>(doc: &mut utoipa::openapi::OpenApi, tag: &str) {
    let mut operation = P::operation();
    operation.tags = Some(vec![tag.to_owned()]);
    doc.paths
        .add_path_operation(P::path(), P::methods(), operation);
}

/// POST operations whose body may be left out. utoipa makes a body optional only by making it
/// `Option<T>`, which would also document `null` as a body, and these handlers refuse `null`:
/// what they take is no body at all.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for path in ["/osmand", "/owntracks", "/shipments/{id}/share"] {
            let body = doc
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
                .and_then(|operation| operation.request_body.as_mut())
                .unwrap_or_else(|| panic!("POST {path} has a request body"));
            body.required = Some(Required::False);
        }
    }
}

/// The document as served and committed: pretty JSON with a trailing newline.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        let mut json = ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises");
        json.push('\n');
        json
    });
    &JSON
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    summary = "This document",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document.", body = Object)),
    security(),
)]
pub async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

    #[test]
    fn the_committed_document_is_the_generated_one() {
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        assert!(
            committed == json(),
            "docs/openapi.json differs from the document the code generates; refresh it with\n\n    {REFRESH}\n"
        );
    }

    /// A `$ref` to a schema that is not among the components is a hole in the document: clients
    /// and the fuzzer skip what it describes.
    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match value {
                serde_json::Value::Object(map) => {
                    out.extend(map.get("$ref").and_then(|r| r.as_str()));
                    map.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        let dangling: Vec<&str> = found
            .into_iter()
            .filter(|r| doc.pointer(r.trim_start_matches('#')).is_none())
            .collect();
        assert!(dangling.is_empty(), "unresolved references: {dangling:?}");
    }

    /// Writes `docs/openapi.json`; run by hand (see [`REFRESH`]) after changing the API.
    #[test]
    #[ignore = "writes docs/openapi.json"]
    fn write_the_document() {
        std::fs::write(COMMITTED, json()).unwrap();
    }
}
